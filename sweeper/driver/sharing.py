"""Prefix sharing in the driver: what a trunk and a branch carry to their workers, the branch points in
storage, and the order in which trials start (sweeper.trainer.branch says what trunks and branches are).

A trunk keeps each branch point as a checkpoint that the trainer never prunes, but Tune keeps only the
trial's newest two (`CheckpointConfig(num_to_keep=2)`), so the trunk's worker also copies it, as it
reports it, to `{trunk's folder}/branch_points/step_XXXXXXXX/`, its completion marker last: a torn copy
is one `checkpoint_problem` reads as torn. A branch starts from there, unless it has checkpoints of its
own (then it resumes from them, as any trial does).

`StartQueue` decides, in the driver, which trial starts next: in the planned order, every trial that is
not a branch, and every branch whose branch point is in storage; a branch whose trunk ended without
one (failed, or not trained by this run) starts from step 0, said in one line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BRANCH_POINTS = "branch_points"

# Payload keys (sweeper.driver.tune builds them, sweeper.driver.worker reads them).
EXTRA_EVAL_STEPS = "extra_eval_steps"  # a trunk's: its branches' eval steps up to their branch points
KEEP_STEPS = "keep_steps"  # a trunk's: its branches' branch points
TRUNK_DIR = "trunk_dir"  # a branch's: its trunk's trial folder in storage
TRUNK_ID = "trunk_id"
TRUNK_NAME = "trunk_name"
BRANCH_STEP = "branch_step"
BRANCH_NAME = "branch_name"


def sharing_payload(plan: Any, trial: Any, trial_dir_of: Callable[[str], str]) -> dict[str, Any]:
    """The payload keys of `trial` under prefix sharing (none for a trial that neither is a trunk nor
    branches). `plan`: the whole sweeper.plan.Plan, so a trunk keeps the branch points of every branch,
    also those this run does not train."""
    if trial.trunk_id is not None:
        trunk = next(t for t in plan.trials if t.id == trial.trunk_id)
        return {TRUNK_ID: trunk.id, TRUNK_NAME: trunk.name, TRUNK_DIR: trial_dir_of(trunk.id),
                BRANCH_STEP: trial.branch_step, BRANCH_NAME: trial.name}
    branches = plan.branches(trial.id)
    if not branches:
        return {}
    extra = sorted(set(plan.trunk_eval_steps(trial.id)) - set(trial.config.eval_steps))
    return {EXTRA_EVAL_STEPS: extra, KEEP_STEPS: sorted({b.branch_step for b in branches})}


def train_arguments(payload: dict[str, Any]) -> dict[str, Any]:
    """train()'s prefix-sharing keywords of a trunk's payload (none for any other)."""
    if KEEP_STEPS not in payload:
        return {}
    return {"extra_eval_steps": frozenset(payload[EXTRA_EVAL_STEPS]), "keep_steps": frozenset(payload[KEEP_STEPS])}


def persister(payload: dict[str, Any]) -> Callable[[str], None] | None:
    """For a trunk's TrialReporter: copies a checkpoint at a branch point to storage (None for other trials)."""
    if KEEP_STEPS not in payload or not payload[KEEP_STEPS]:
        return None
    return lambda written: persist_branch_point(written, payload["trial_dir"], payload.get("storage_endpoint"))


def branch_point_path(trial_dir: str, step: int) -> str:
    return f"{trial_dir}/{BRANCH_POINTS}/step_{step:08d}"


def persist_branch_point(written: str, trial_dir: str, endpoint: str | None) -> None:
    """Copy the local checkpoint folder `written` into the trunk's branch points in storage, its
    completion marker last (a copy cut off has none, and is never taken for whole)."""
    from sweeper.storage import filesystem_for
    from sweeper.trainer.checkpoint import COMPLETE_FILE

    source = Path(written)
    filesystem, target = filesystem_for(branch_point_path(trial_dir, int(source.name.removeprefix("step_"))), endpoint)
    filesystem.delete_dir_contents(target, missing_dir_ok=True)  # an earlier torn copy
    filesystem.create_dir(target, recursive=True)
    files = sorted(p for p in source.rglob("*") if p.is_file())
    for path in sorted(files, key=lambda p: p.name == COMPLETE_FILE):
        name = path.relative_to(source).as_posix()
        if "/" in name:
            filesystem.create_dir(f"{target}/{name.rsplit('/', 1)[0]}", recursive=True)
        with path.open("rb") as source_file, filesystem.open_output_stream(f"{target}/{name}") as out:
            while chunk := source_file.read(16 << 20):
                out.write(chunk)


def _whole_branch_point(trial_dir: str, step: int, endpoint: str | None) -> tuple[Any, str] | None:
    """The trunk's checkpoint at `step` in storage, (pyarrow filesystem, path), when it is whole, else None."""
    from sweeper.driver.checkpoints import _torn
    from sweeper.storage import filesystem_for

    filesystem, path = filesystem_for(branch_point_path(trial_dir, step), endpoint)
    return (filesystem, path) if _torn(filesystem, path) is None else None


def branch_point(trial_dir: str, step: int, endpoint: str | None) -> Any:
    """The trunk's checkpoint at `step` in storage as a tune.Checkpoint when it is whole, else None."""
    from ray import tune

    whole = _whole_branch_point(trial_dir, step, endpoint)
    return None if whole is None else tune.Checkpoint(path=whole[1], filesystem=whole[0])


def stored_branch_points(trials: Sequence[Any], trial_dir_of: Callable[[str], str], endpoint: str | None) -> frozenset[str]:
    """The ids of the branches among `trials` (sweeper.plan.Trial) whose trunk's checkpoint at their
    branch point is already whole in storage, left by an earlier run: they start there at once.
    No Ray: preflight asks before Ray starts."""
    return frozenset(t.id for t in trials if t.trunk_id is not None
                     and _whole_branch_point(trial_dir_of(t.trunk_id), t.branch_step, endpoint) is not None)


def fetch_branch_point(payload: dict[str, Any], scratch: Path) -> str | None:
    """A branch's starting checkpoint, copied from storage into `scratch`, or None: not a branch, or
    its trunk's branch point is not (whole) in storage."""
    if TRUNK_DIR not in payload:
        return None
    step = int(payload[BRANCH_STEP])
    saved = branch_point(payload[TRUNK_DIR], step, payload.get("storage_endpoint"))
    return None if saved is None else saved.to_directory(str(scratch / "branch" / f"step_{step:08d}"))


def from_step_zero(payload: dict[str, Any]) -> str:
    """The line that says a branch trains from step 0."""
    return (f"started {payload[BRANCH_NAME]} from step 0: "
            f"its trunk {payload[TRUNK_NAME]} has no checkpoint at step {payload[BRANCH_STEP]}")


def without_branch(payload: dict[str, Any]) -> dict[str, Any]:
    """A branch's payload as an unshared trial's: it trains from step 0."""
    return {k: v for k, v in payload.items() if k not in (TRUNK_DIR, TRUNK_ID, TRUNK_NAME, BRANCH_STEP, BRANCH_NAME)}


def started_from_step_zero(trial: Any, payload: dict[str, Any]) -> bool:
    """Whether `trial` (sweeper.plan.Trial), a branch, was started with `payload` from step 0 (without_branch)."""
    return trial.trunk_id is not None and TRUNK_ID not in payload


DONE = "done"


class StartQueue:
    """Which trial starts next (no Ray here: sweeper.driver.searcher hands it to Tune).

    payloads: in the planned order. ready(payload): whether a branch may start at once (its branch point
    is in storage, or it has checkpoints of its own); asked once per branch at the start and again when
    its trunk ends. say: one line for the user."""

    def __init__(self, payloads: Sequence[dict[str, Any]], ready: Callable[[dict[str, Any]], bool],
                 say: Callable[[str], None]) -> None:
        self.waiting = list(payloads)
        self.ready_check, self.say = ready, say
        running = {p["trial_id"] for p in payloads}
        self.ready = {p["trial_id"] for p in payloads if TRUNK_ID not in p or ready(p)}
        # A trunk this run does not train (filtered out, finished before) never reports a branch point.
        self.ended = {p[TRUNK_ID] for p in payloads if TRUNK_ID in p and p[TRUNK_ID] not in running}

    def next(self) -> dict[str, Any] | str | None:
        """The next payload to start, None while every one left waits for its branch point, DONE at the end."""
        if not self.waiting:
            return DONE
        for payload in self.waiting:
            if payload["trial_id"] in self.ready:
                self.waiting.remove(payload)
                return payload
            if payload[TRUNK_ID] in self.ended:  # its trunk ended without the branch point
                self.waiting.remove(payload)
                self.say(from_step_zero(payload))
                return without_branch(payload)
        return None

    def branch_point(self, trunk_id: str, step: int) -> None:
        """A trunk reported its checkpoint at `step`, copied to storage."""
        self.ready.update(p["trial_id"] for p in self.waiting
                          if p.get(TRUNK_ID) == trunk_id and p[BRANCH_STEP] == step)

    def trunk_ended(self, trunk_id: str) -> None:
        """A trunk completed or failed: its waiting branches start, from storage or step 0."""
        self.ended.add(trunk_id)
        self.ready.update(p["trial_id"] for p in self.waiting if p.get(TRUNK_ID) == trunk_id and self.ready_check(p))
