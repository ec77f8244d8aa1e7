"""Planned trials joined with their MLflow runs: what to train, each trial's state, the finished rows."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sweeper.console import UserError
from sweeper.plan import Plan, Trial
from sweeper.tracking import Tracking, TrialRecord


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


def joined(trials: Sequence[Trial], tracking: Tracking) -> Iterator[tuple[Trial, TrialRecord | None]]:
    """Each trial, in order, with what the store holds for it (None: it has no run); one read of
    the store for all of them."""
    records = tracking.trial_records([t.id for t in trials])
    for trial in trials:
        yield trial, records.get(trial.id)


def select_to_run(plan: Plan, tracking: Tracking, *, rerun: Sequence[str], retry_failed: bool,
                  trials: Sequence[Trial]) -> Selection:
    unknown = [i for i in rerun if i not in {t.id for t in plan.trials}]
    if unknown:
        raise UserError(f"--rerun {unknown[0]}: no trial with this id in the plan of {plan.spec_name}")
    to_run, finished, failed = [], [], []
    for trial, record in joined(trials, tracking):
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


def status_rows(plan: Plan, tracking: Tracking) -> list[dict[str, Any]]:
    """One row per planned trial: its state in the store (PENDING without a run), progress, loss."""
    return [{"id": trial.id, "name": trial.name, "status": record.status if record else "PENDING",
             "tokens_done": max(record.last_steps.values(), default=0) if record else 0, "tokens": trial.tokens,
             "val_loss": record.metrics.get("val/loss") if record else None,
             "failure": record.failure if record else None, "run_id": record.run_id if record else None}
            for trial, record in joined(plan.trials, tracking)]


RESULT_COLUMNS = ("family", "model", "params", "tokens", "unique_tokens", "epochs", "flops", "loss", "loss_best",
                  "seed", "trial_id", "run_id")


def finished_rows(plan: Plan, tracking: Tracking) -> list[dict[str, Any]]:
    """One row per planned trial that the store holds as FINISHED, with its final and best loss."""
    return [{"family": trial.family, "model": trial.model.name, "params": trial.num_params,
             "tokens": trial.tokens, "unique_tokens": trial.unique_tokens, "epochs": trial.epochs,
             "flops": trial.flops, "loss": record.metrics["final/val_loss"],
             "loss_best": record.metrics.get("final/val_loss_best"), "seed": trial.seed,
             "trial_id": trial.id, "run_id": record.run_id}
            for trial, record in joined(plan.trials, tracking)
            if record is not None and record.status == "FINISHED" and "final/val_loss" in record.metrics]
