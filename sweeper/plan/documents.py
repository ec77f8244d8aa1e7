"""Plan output: a rich table with totals, or JSON / CSV for other programs."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sweeper.console import console
from sweeper.plan import Plan, Trial
from sweeper.spec import SweepSpec
from sweeper.spec.schema import plain
from sweeper.units import fmt_bytes, fmt_count, fmt_duration, fmt_epochs, fmt_sci
from sweeper.plan.where import Filter, select


def render(spec: SweepSpec, plan: Plan, filters: list[Filter], fmt: str, states: StoreStates | None = None) -> None:
    shown = dataclasses.replace(plan, trials=tuple(select(plan.trials, filters))) if filters else plan
    if fmt == "json":
        document = plan_json(spec, shown)
        if states is not None:
            document["store"] = states.note
            for trial in document["trials"]:
                trial["state"] = states.state(trial["id"])
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    elif fmt == "csv":
        sys.stdout.write(plan_csv(shown, states))
    else:
        print_table(spec, shown, filtered=len(shown.trials) != len(plan.trials), total=len(plan.trials),
                    states=states)


def trial_json(trial: Trial) -> dict[str, Any]:
    memory = dataclasses.asdict(trial.sizing.memory) | {"total": trial.sizing.memory.total}
    return {
        "id": trial.id, "name": trial.name, "family": trial.family, "model": trial.model.name,
        "model_dims": trial.model.dimensions(), "num_params": trial.num_params,
        "num_params_actual": trial.num_params_actual, "unique_tokens": trial.unique_tokens,
        "epochs": trial.epochs, "tokens": trial.tokens, "steps": trial.steps,
        "tokens_trained": trial.tokens_trained, "epochs_trained": trial.epochs_trained,
        "warmup_steps": trial.warmup_steps,
        "eval_steps": list(trial.eval_steps), "checkpoint_every_steps": trial.checkpoint_every_steps,
        "flops": trial.flops, "flops_processed": trial.flops_processed, "flops_budget": trial.flops_budget,
        "seed": trial.seed,
        "micro_batch": trial.sizing.micro_batch, "grad_accum": trial.sizing.grad_accum,
        "devices": trial.sizing.devices, "device_share": trial.sizing.device_share, "fits": trial.sizing.fits,
        "memory": memory, "resources": dict(trial.sizing.resources),
        "est_device_hours": trial.device_seconds / 3600, "est_wall_hours": trial.wall_seconds / 3600,
        "est_cost": trial.cost, "train": plain(trial.train), "origin": trial.origin,
        "trunk_id": trial.trunk_id, "branch_step": trial.branch_step,
        "est_branch_device_hours": trial.branch_device_seconds / 3600 if trial.trunk_id else None,
    }


def plan_json(spec: SweepSpec, plan: Plan) -> dict[str, Any]:
    return {
        "spec": spec.name, "files": list(spec.files), "experiment": plan.experiment, "profile": plan.profile,
        "assumptions": {"hardware": plan.hardware.name, "throughput": plan.hardware.assumption(),
                        "concurrency": plan.concurrency},
        "data": plain(spec.data),
        "trials": [trial_json(t) for t in plan.trials],
        "totals": plan.totals(),
    }


CSV_COLUMNS = ("id", "name", "family", "model", "num_params", "unique_tokens", "epochs", "tokens", "steps", "flops",
               "seed", "micro_batch", "devices", "resources", "memory_bytes", "fits", "est_device_hours", "est_cost",
               "tokens_trained", "epochs_trained", "state", "flops_processed", "trunk_id", "branch_step")


def plan_csv(plan: Plan, states: StoreStates | None = None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for t in plan.trials:
        resources = ";".join(f"{k}={v:g}" for k, v in t.sizing.resources.items())
        writer.writerow([t.id, t.name, t.family, t.model.name, t.num_params, t.unique_tokens, repr(t.epochs),
                         t.tokens, t.steps, repr(t.flops), t.seed, t.sizing.micro_batch, t.sizing.devices, resources,
                         t.sizing.memory.total, t.sizing.fits, f"{t.device_seconds / 3600:.6g}",
                         "" if t.cost is None else f"{t.cost:.2f}", t.tokens_trained, repr(t.epochs_trained),
                         (states and states.state(t.id)) or "", repr(t.flops_processed), t.trunk_id or "",
                         t.branch_step])
    return out.getvalue()


def print_table(spec: SweepSpec, plan: Plan, *, filtered: bool, total: int, states: StoreStates | None = None) -> None:
    from sweeper.console import print_table as print_rows

    known = states is not None and states.states is not None
    shared = any(t.trunk_id for t in plan.trials)
    columns = [("id", "left"), ("family", "left"), ("model", "left"), ("N", "right"), ("U", "right"),
               ("epochs", "right"), ("D", "right"), ("steps", "right"), ("FLOPs", "right"), ("memory", "right"),
               ("micro×accum", "right"), ("resources", "left"), ("est. time", "right"),
               *((("trunk/branch", "left"),) if shared else ()), *((("state", "left"),) if known else ())]
    rows = []
    branches = Counter(t.trunk_id for t in plan.trials if t.trunk_id)
    for t in plan.trials:
        resources = " ".join(f"{v:g} {k}" for k, v in t.sizing.resources.items())
        memory = fmt_bytes(t.sizing.memory.total) + ("" if t.sizing.fits else " ✗")
        rows.append([t.id, t.family, t.model.name, fmt_count(t.num_params), fmt_count(t.unique_tokens),
                     fmt_epochs(t.epochs), tokens_cell(t), f"{t.steps:,}", flops_cell(t), memory,
                     f"{t.sizing.micro_batch}×{t.sizing.grad_accum}", resources, fmt_duration(t.wall_seconds),
                     *((sharing_cell(t, branches),) if shared else ()),
                     *((states.state(t.id) or "",) if known else ())])  # type: ignore[union-attr]
    print_rows(f"{spec.name}: {len(plan.trials)} trials" + (f" of {total}" if filtered else ""), columns, rows,
               [None if t.sizing.fits else "red" for t in plan.trials])
    print_summary(plan)
    rounded = [t for t in plan.trials if t.tokens_trained != t.tokens]
    if rounded:
        most = max(rounded, key=lambda t: t.tokens_trained / t.tokens)
        console.print(f"D a→b: {len(rounded)} trials train b tokens, their planned D = a rounded up to whole steps "
                      f"(at most +{most.tokens_trained / most.tokens - 1:.1%}); results and fits count b",
                      markup=False, soft_wrap=True)
    doubled = sorted({t.family for t in plan.trials if t.flops_processed != t.flops})
    if doubled:
        console.print(f"FLOPs a→b: {', '.join(doubled)} processes x_t ⊕ x_0, 2L tokens a sequence of L: a is the "
                      "paper's C = 6ND, b the compute its passes spend; fits and C_crit compare on 6ND",
                      markup=False, soft_wrap=True)
    if spec.evals is not None:
        documents = "all documents (1,000 assumed)" if spec.evals.limit is None else f"{spec.evals.limit:,} documents"
        console.print(f"evals: each trial then scores {', '.join(spec.evals.tasks)} ({documents} a task) in its "
                      "worker; the time above includes it", markup=False, soft_wrap=True)
    if states is not None:
        console.print(states.summary([t.id for t in plan.trials]), markup=False, soft_wrap=True)


def sharing_cell(trial: Trial, branches: Counter[str | None]) -> str:
    """Prefix sharing: `trunk, 9 branches`, `↳ 1a2b3c4d5e6f@7,629` (a branch from that trunk's state
    after 7,629 steps), or '' for a trial trained alone."""
    if trial.trunk_id:
        return f"↳ {trial.trunk_id}@{trial.branch_step:,}"
    count = branches.get(trial.id, 0)
    return f"trunk, {count} branch{'es' if count > 1 else ''}" if count else ""


def flops_cell(trial: Trial) -> str:
    """C = 6ND, and the compute processed where the family spends more: `3.5e11→7.1e11` (bd3lm)."""
    paper = fmt_sci(trial.flops)
    return paper if trial.flops_processed == trial.flops else f"{paper}→{fmt_sci(trial.flops_processed)}"


def tokens_cell(trial: Trial) -> str:
    """Planned D, and the tokens trained where whole steps make them differ: `25M→25.2M`."""
    planned = fmt_count(trial.tokens)
    return planned if trial.tokens_trained == trial.tokens else f"{planned}→{fmt_count(trial.tokens_trained)}"


def print_summary(plan: Plan) -> None:
    totals = plan.totals()
    families = ", ".join(f"{n} {f}" for f, n in totals["per_family"].items()) or "none"
    console.print(f"[bold]{totals['trials']} trials[/] ({families}) · {fmt_count(totals['tokens'])} tokens · "
                  f"{fmt_sci(totals['flops']) if totals['flops'] else 0} FLOPs (6ND"
                  + (f"; {fmt_sci(totals['flops_processed'])} processed" if totals["flops_processed"] != totals["flops"]
                     else "") + ") · "
                  f"{totals['device_hours']:,.1f} device-hours"
                  + (f" · ${totals['cost']:,.0f}" if totals["cost"] is not None else ""))
    if totals["branches"]:
        console.print(f"with prefix sharing ({totals['trunks']} trunks, {totals['branches']} branches, each training "
                      f"only its decay): {fmt_sci(totals['flops_shared'])} FLOPs "
                      f"({totals['flops_shared'] / totals['flops']:.2f}× of {fmt_sci(totals['flops'])}) · "
                      f"{totals['device_hours_shared']:,.1f} device-hours"
                      + (f" · ${totals['cost_shared']:,.0f}" if totals["cost_shared"] is not None else ""),
                      markup=False, soft_wrap=True)
    console.print(f"on {plan.profile} ({plan.hardware.name}, {plan.hardware.total_devices} devices, "
                  f"{plan.concurrency} concurrent): ≈{fmt_duration(plan.makespan_seconds())} wall"
                  + (f" trained alone, ≈{fmt_duration(totals['makespan_hours_shared'] * 3600)} with prefix sharing"
                     if totals["branches"] else "") + ", "
                  f"assuming {plan.hardware.assumption()}")
    if totals["not_fitting"]:
        console.print(f"[red]{totals['not_fitting']} trials do not fit this profile's hardware "
                      f"({fmt_bytes(plan.hardware.memory_per_device)} per device, marked ✗); "
                      "plan with --cluster or --backend FILE[/]")
    if plan.merged_duplicates:
        console.print(f"{plan.merged_duplicates} grid points resolved to trials already in the plan and were merged")


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreStates:
    states: dict[str, str] | None  # trial id -> done / failed / running / to run; None: unknown
    note: str  # one line: where the states come from, or why they are unknown

    def state(self, trial_id: str) -> str | None:
        return None if self.states is None else self.states.get(trial_id, "to run")

    def summary(self, trial_ids: Sequence[str]) -> str:
        if self.states is None:
            return self.note
        counts: dict[str, int] = {}
        for trial_id in trial_ids:
            state = self.state(trial_id) or "to run"
            counts[state] = counts.get(state, 0) + 1
        order = ("done", "running", "failed", "to run")
        return f"{self.note}: " + ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s))
