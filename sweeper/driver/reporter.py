"""How a trial's worker reports to the driver: the keys of its results beside the trainer's metrics,
and `TrialReporter`, the trainer's reporter under Ray (sweeper.driver.worker says more)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sweeper.driver.checkpoints import write_curve
from sweeper.trainer.branch import BRANCH_POINT_KEY

FAILURE_KEY = "sweeper/failure"
RESUMED_KEY = "sweeper/resumed_at_tokens"
WARNING_KEY = "sweeper/warning"  # checkpoints passed over when (re)starting, in the first result
NODE_KEY = "sweeper/node_id"  # the Ray node a trial (re)started on (rank 0's), in its first result there
PROCESSES_KEY = "sweeper/processes"  # how many processes train it, in the same first result
# In the first result after a resume: the curve up to the checkpoint it resumed from, as that
# checkpoint keeps it in its metadata ([[tokens, {metric: value}], ...]), so that a driver which died
# before writing some of those points writes them now (it drops the points it already has).
CURVE_KEY = "sweeper/curve"
# A checkpoint that did not fit in storage: the trial ends at once (no retry can fit it either), its
# torn copy removed, and the driver stops the sweep for its trials to resume once there is room.
STORAGE_FULL_KEY = "sweeper/storage_full"


def kept_curve(checkpoint: Any) -> list[list[Any]] | None:
    """The curve a checkpoint in storage keeps (see TrialReporter), or None: no checkpoint, or one
    written before checkpoints kept curves."""
    from sweeper.driver.checkpoints import read_curve

    return None if checkpoint is None else read_curve(checkpoint.filesystem, checkpoint.path)


class TrialReporter:
    """The trainer's reporter under Ray: the trainer's metrics, plus in the first result the node and
    the resume point, and each new checkpoint with its step and tokens as metadata (which
    `latest_persisted` reads) and the trial's whole curve up to it in its CURVE_FILE (`curve`: what
    the checkpoint resumed from kept, then every point reported since). The first result after a resume carries
    that earlier curve (CURVE_KEY), so no point is lost when the driver died before writing it, and
    a lost MLflow store gets its curves back. `send(metrics, checkpoint or None)` is tune.report for
    a trial in one process, ray.train.report on rank 0 of a Train run. `persist(folder)`: a trunk's, which
    copies each checkpoint at a branch point (reported with BRANCH_POINT_KEY) to its branch points in
    storage before Tune has it (sweeper.driver.sharing)."""

    def __init__(self, resume_from: str | None, checkpoint_type: Any,
                 send: Callable[[dict[str, Any], Any], None], processes: int = 1, warning: str | None = None,
                 curve: list[list[Any]] | None = None, persist: Callable[[str], None] | None = None) -> None:
        self.resume_from, self.checkpoint_type, self.send, self.persist = resume_from, checkpoint_type, send, persist
        self.processes, self.warning = processes, warning
        self.curve: list[list[Any]] = list(curve or [])
        self.first = True

    def __call__(self, metrics: dict[str, float], written: str | None) -> None:
        out: dict[str, Any] = dict(metrics)
        if self.first:  # the first point says where the trial runs, and where it resumed
            import ray

            out[NODE_KEY] = ray.get_runtime_context().get_node_id()
            out[PROCESSES_KEY] = self.processes
            if self.resume_from is not None:
                out[RESUMED_KEY] = metrics["tokens"]
                if self.curve:
                    out[CURVE_KEY] = list(self.curve)
            if self.warning is not None:
                out[WARNING_KEY] = self.warning
            self.first = False
        if written is not None and written == self.resume_from:
            # resumed at the very end: the final point again (its curve has it), from a checkpoint already stored
            self.send(out, None)
            return
        self.curve.append([int(metrics["tokens"]), {k: float(v) for k, v in metrics.items() if k != "tokens"}])
        if written is None:
            self.send(out, None)
            return
        write_curve(Path(written), self.curve)
        if BRANCH_POINT_KEY in metrics and self.persist is not None:
            self.persist(written)
        checkpoint = self.checkpoint_type.from_directory(written)
        checkpoint.set_metadata({"step": int(Path(written).name.removeprefix("step_")),
                                 "tokens": int(metrics["tokens"])})
        self.send(out, checkpoint)

