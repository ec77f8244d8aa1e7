"""Planned trials joined with their MLflow runs: what to train, each trial's state, the finished rows."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sweeper.console import UserError
from sweeper.plan import ID_SCHEMA, Plan, Trial
from sweeper.tracking import OLDEST_SCHEMA, TAG_SCHEMA, TAG_SWEEP, Tracking, TrialRecord
from sweeper.spec.schema import plain
from sweeper.trial import options_text, processed_flops, training_flops


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """Which planned trials this run trains, and why the others are left out."""

    to_run: tuple[Trial, ...]
    finished: tuple[Trial, ...]
    failed: tuple[tuple[Trial, str], ...]  # left out: FAILED before, no --retry-failed

    def summary(self, total: int) -> str:
        parts = [f"{len(self.finished)} finished"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed before (skipped; --retry-failed runs them again)")
        parts.append(f"{len(self.to_run)} to run")
        return f"{total} trials: " + ", ".join(parts)


def joined(trials: Sequence[Trial], records: Mapping[str, TrialRecord]) -> Iterator[tuple[Trial, TrialRecord | None]]:
    """Each trial, in order, with what the store holds for it (None: it has no run). `records`:
    one read of the store (Tracking.trial_records), which a command shares between its views."""
    for trial in trials:
        yield trial, records.get(trial.id)


def select_to_run(plan: Plan, records: Mapping[str, TrialRecord], *, rerun: Sequence[str], retry_failed: bool,
                  trials: Sequence[Trial]) -> Selection:
    unknown = [i for i in rerun if i not in {t.id for t in plan.trials}]
    if unknown:
        raise UserError(f"--rerun {unknown[0]}: no trial with this id in the plan of {plan.spec_name}")
    to_run, finished, failed = [], [], []
    for trial, record in joined(trials, records):
        status = record.status if record else None
        if trial.id in rerun:
            to_run.append(trial)
        elif status == "FINISHED":
            finished.append(trial)
        elif status == "FAILED" and not retry_failed:
            failed.append((trial, record.failure or "no reason recorded"))  # type: ignore[union-attr]
        else:
            to_run.append(trial)
    return Selection(to_run=tuple(to_run), finished=tuple(finished), failed=tuple(failed))


def status_rows(plan: Plan, records: Mapping[str, TrialRecord]) -> list[dict[str, Any]]:
    """One row per planned trial: its state in the store (PENDING without a run), progress, loss."""
    return [{"id": trial.id, "name": trial.name, "status": record.status if record else "PENDING",
             "tokens_done": max(record.last_steps.values(), default=0) if record else 0, "tokens": trial.tokens,
             "val_loss": record.metrics.get("val/loss") if record else None,
             "failure": record.failure if record else None, "run_id": record.run_id if record else None}
            for trial, record in joined(plan.trials, records)]


RESULT_COLUMNS = ("family", "model", "params", "tokens", "unique_tokens", "epochs", "flops", "flops_processed",
                  "loss", "loss_best", "seed", "tokens_planned", "epochs_planned", "options", "trial_id", "run_id")
EVAL_PREFIX = "eval/"  # `sweeper eval`'s metrics, eval/<task>/<metric> and its _stderr: one column each


def eval_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The eval/<task>/<metric> columns any of `rows` holds, sorted: they follow RESULT_COLUMNS."""
    return sorted({key for row in rows for key in row if key.startswith(EVAL_PREFIX)})


def finished_rows(plan: Plan, tracking: Tracking) -> list[dict[str, Any]]:
    """One row per planned trial that the store holds as FINISHED, with its final and best loss.

    `tokens`, `epochs` and `flops` count what the trial trained (steps × batch tokens, as its run
    recorded it), which the ceil to whole steps puts a little above the planned D; `tokens_planned`
    and `epochs_planned` keep the plan's. The fitter classes a row single-epoch by `epochs_planned`
    (sweeper.fit.table), so a one-epoch trial that trained 1.007 epochs stays one. `options` names
    the train options the trial set away from their defaults (sweeper.trial.OPTION_DEFAULTS), e.g.
    "orderings=4", "" for none: the report's ablations; the fit reads only rows without.
    `flops_processed` is what the trial's passes compute (bd3lm: twice 6ND, sweeper.trial), and
    every downstream metric its run holds follows as its own `eval/<task>/<metric>` key."""
    rows = []
    for trial, record in joined(plan.trials, tracking.trial_records([t.id for t in plan.trials])):
        if record is None or record.status != "FINISHED" or "final/val_loss" not in record.metrics:
            continue
        tokens = int(record.metrics.get("final/tokens_trained", trial.tokens_trained))
        rows.append({"family": trial.family, "model": trial.model.name, "params": trial.num_params,
                     "tokens": tokens, "unique_tokens": trial.unique_tokens,
                     "epochs": tokens / trial.unique_tokens, "flops": training_flops(trial.num_params, tokens),
                     "flops_processed": processed_flops(trial.num_params, tokens, trial.family),
                     "loss": record.metrics["final/val_loss"],
                     "loss_best": record.metrics.get("final/val_loss_best"), "seed": trial.seed,
                     "tokens_planned": trial.tokens, "epochs_planned": trial.epochs,
                     "options": options_text(plain(trial.train)), "trial_id": trial.id, "run_id": record.run_id,
                     **{k: v for k, v in sorted(record.metrics.items()) if k.startswith(EVAL_PREFIX)}})
    return rows


def older_recipe_note(plan: Plan, records: Mapping[str, TrialRecord]) -> str | None:
    """One line when the store holds finished trials of this sweep trained under another recipe
    version (ID_SCHEMA) than the plan's: their ids differ, so they are not done for this one."""
    older = [record for record in records.values()
             if record.status == "FINISHED" and record.tags.get(TAG_SWEEP) == plan.spec_name
             and record.tags.get(TAG_SCHEMA, OLDEST_SCHEMA) != ID_SCHEMA]
    if not older:
        return None
    versions = ", ".join(sorted({r.tags.get(TAG_SCHEMA, OLDEST_SCHEMA) for r in older}))
    return (f"{len(older)} finished trials of {plan.spec_name} in the store were trained under an older "
            f"recipe ({versions}); they do not count as done under {ID_SCHEMA} (README: what changed "
            "between recipe versions)")
