"""Which checkpoint a trial may go on from: its own (`check_resume`), or its trunk's at its branch
point under prefix sharing: a trunk records what its branches need, and a branch that starts from the
trunk's checkpoint reports exactly the curve it would report trained alone.

With a wsd schedule (warmup, stable, decay; Hägele et al., arXiv 2405.18392) trials alike but for
their length train the same steps until their decay starts: the lr is lr_peak until then
(sweeper.trainer.optim.lr_at), the data order of epoch k depends on (seed, k) only and every random
draw of a step on (seed, step), and evaluations draw nothing from the training streams (their mdm
noise is keyed by the validation sample; the model is in eval mode, so dropout draws nothing). The
planner (sweeper.plan, `share_prefixes`) makes the longest of such a group the trunk and every other
one a branch at its own decay_start.

The trunk, `train(..., extra_eval_steps=..., keep_steps=...)`, keeps a TrunkRecord: every
evaluation at its own and the extra steps (its branches' planned evaluations before their branch
points), and the mean training loss of every optimizer step. Every checkpoint it writes holds the
record up to its step (state.pt, key RECORD_KEY), so a branch needs nothing but the checkpoint
folder; the extra evaluations reach no report, so the trunk's curve, val/loss_best and final
metrics are those it has trained alone. At each keep step (a branch point) it writes a checkpoint,
never pruned, and reports it with BRANCH_POINT_KEY.

The branch, `train(..., branch_from=<the trunk's step_* folder>)`, checks the trunk's config against
its own (`check_branch`: only BRANCH_FIELDS and how-settings may differ, and the lr of every step
before the branch point must agree), loads model, optimizer and RNG states, takes its val/loss_last
and val/loss_best from the record's evaluations at its own eval steps up to the branch point, and
replays (`shared_points`) the points its curve has up to there, then trains its remaining steps
under its own config (its decay).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sweeper.trial import HOW_KEYS, TrialConfig
from sweeper.trainer.checkpoint import read_checkpoint
from sweeper.trainer.optim import lr_at

# What may differ between a trunk and its branches: their length, their decay, and the counts that follow.
# The planner's own copy is sweeper.plan._BRANCH_FIELDS (the trainer imports no planner); a test holds
# the two equal.
BRANCH_FIELDS = frozenset({"trial_id", "epochs", "tokens", "steps", "eval_steps", "decay_steps", "decay_shape"})

RECORD_KEY = "trunk"  # a trunk checkpoint's state.pt: TrunkRecord.to_state() up to the checkpoint's step
# In a trunk's report at a keep step (the checkpoint folder it reports is the one written there): that
# step. A keep step that is not one of the trunk's own log points is reported with `tokens` and this key
# only, which is not a point of its curve.
BRANCH_POINT_KEY = "sweeper/branch_point"
# In a branch's reports: 1.0 on each point up to the branch point, which the trunk computed (no
# grad_norm, tokens_per_s or mfu there); the first of them also carries BRANCHED_KEY, the tokens at
# the branch point (branch step x tokens per step).
SHARED_KEY = "sweeper/shared"
BRANCHED_KEY = "sweeper/branched_at_tokens"


@dataclass(slots=True)
class TrunkRecord:
    """What a trunk keeps for its branches, the same on every process.

    evals: step -> the val/* metrics of the evaluation after that many optimizer steps ("val/loss",
      for dual also "val/loss_ar" and "val/loss_mdm"; nats/token), at the trunk's own eval_steps and
      extra_eval_steps reached so far.
    train_losses: mean training loss of optimizer step s + 1 at index s (nats/token, float64, as the
      loop reduces it: fp32 on the device, averaged over processes), for every step taken so far.
    logged_at: the trunk's last log point when the checkpoint was written: the losses after it belong
      to a window not yet reported, which a resumed trunk carries on."""

    evals: dict[int, dict[str, float]] = field(default_factory=dict)
    train_losses: list[float] = field(default_factory=list)
    logged_at: int = 0

    def to_state(self, step: int, logged_at: int) -> dict[str, Any]:
        """For state.pt (loadable weights_only): everything up to `step`."""
        return {"evals": {s: dict(v) for s, v in self.evals.items() if s <= step},
                "train_losses": torch.tensor(self.train_losses[:step], dtype=torch.float64),
                "logged_at": logged_at}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TrunkRecord:
        return cls(evals={int(s): dict(v) for s, v in state["evals"].items()},
                   train_losses=state["train_losses"].tolist(), logged_at=int(state["logged_at"]))


def resumed_record(state: dict[str, Any], record: TrunkRecord | None) -> tuple[TrunkRecord | None, np.ndarray, int]:
    """A checkpoint `state` resumed: (its trunk record, else `record`; the losses after its last log point
    that its first window carries, so its next train/loss is the one it reports unbroken; that log point).
    Only a trunk's checkpoint may lie between log points (a keep step); any other is a log point."""
    step = int(state["loop"]["step"])
    if RECORD_KEY not in state:
        return record, np.zeros(0), step
    saved = TrunkRecord.from_state(state[RECORD_KEY])
    return saved, np.array(saved.train_losses[saved.logged_at:step], dtype=np.float64), saved.logged_at


@dataclass(frozen=True, slots=True)
class BranchStart:
    """A branch at its branch point (`open_branch`): the trunk's checkpoint state (model, optimizer,
    rng) to load, and the branch's own loop values, curve so far, and unreported losses there."""

    state: dict[str, Any]
    step: int  # the branch point: optimizer steps done
    val_loss_last: float
    val_loss_best: float
    best_step: int  # the eval step of val_loss_best
    points: list[tuple[int, dict[str, float]]]  # shared_points
    carried: np.ndarray
    logged_at: int
    record: TrunkRecord  # the trunk's, up to the branch point


def check_sharing(c: TrialConfig, extra_eval_steps: Collection[int], keep_steps: Collection[int],
                  checkpoint_dir: str | None, resume_from: str | None, branch_from: str | None) -> None:
    """train()'s prefix-sharing arguments, checked before anything is built; ValueError says what is wrong."""
    if keep_steps and checkpoint_dir is None:
        raise ValueError("keep_steps needs a checkpoint_dir to write the branch points' checkpoints into")
    if not (set(keep_steps) <= set(range(1, c.steps + 1)) and set(extra_eval_steps) <= set(range(c.steps + 1))):
        raise ValueError(f"keep_steps must lie in 1..{c.steps} and extra_eval_steps in 0..{c.steps}, "
                         f"got {sorted(keep_steps)} and {sorted(extra_eval_steps)}")
    if branch_from is not None and resume_from is not None:
        raise ValueError("branch_from starts a branch; a branch that checkpointed since resumes with resume_from alone")


def open_branch(branch_from: str, c: TrialConfig, stop_step: int, checkpointing: bool) -> BranchStart:
    """Read the trunk's checkpoint `branch_from` and check it against the branch `c` (check_branch:
    ValueError); CheckpointUnreadable for a torn or damaged one."""
    trunk, state = read_checkpoint(branch_from)
    step = int(state["loop"]["step"])
    record = TrunkRecord.from_state(state[RECORD_KEY]) if RECORD_KEY in state else None
    check_branch(trunk, c, step, record, stop_step)
    assert record is not None
    last, best, best_step = branch_start(c, record, step)
    points, carried, logged_at = shared_points(c, record, step, checkpointing)
    return BranchStart(state=state, step=step, val_loss_last=last, val_loss_best=best, best_step=best_step,
                       points=points, carried=carried, logged_at=logged_at, record=record)


def check_resume(saved: TrialConfig, current: TrialConfig) -> None:
    """Only how-settings (HOW_KEYS: device, micro-batch, compile, cadences...) may differ between a
    checkpoint and the run resuming it. Not precision: it is in the trial id, and a curve continued in
    another precision would be two experiments recorded as one (sweeper.trial says more)."""
    differ = [f.name for f in dataclasses.fields(TrialConfig) if f.name not in HOW_KEYS
              and getattr(saved, f.name) != getattr(current, f.name)]
    if differ:
        raise ValueError(f"the checkpoint was written by a different trial (fields {', '.join(differ)} "
                         "differ): resume only with the config that wrote it, changing how-fields at most")


def check_branch(trunk: TrialConfig, branch: TrialConfig, step: int, record: TrunkRecord | None,
                 stop_step: int) -> None:
    """Whether `branch` may start from `trunk`'s checkpoint after `step` optimizer steps. Raises
    ValueError naming what is wrong: fields other than BRANCH_FIELDS and HOW_KEYS that differ (another
    lr, another U, ...), an lr that differs at some step before `step` (the branch's decay starts
    earlier), a branch point not before the branch's `stop_step`, a checkpoint without a trunk record
    (written by a trial trained without keep_steps), or evaluations of the branch's up to `step` that
    the trunk did not run (its extra_eval_steps lacked them)."""
    differ = [f.name for f in dataclasses.fields(TrialConfig) if f.name not in BRANCH_FIELDS | HOW_KEYS
              and getattr(trunk, f.name) != getattr(branch, f.name)]
    if differ:
        raise ValueError(f"trial {branch.trial_id} cannot branch from the checkpoint of trial {trunk.trial_id}: "
                         f"fields {', '.join(differ)} differ ("
                         + "; ".join(f"{n}: {getattr(trunk, n)!r} there, {getattr(branch, n)!r} here" for n in differ)
                         + "); a branch differs from its trunk only in its length and decay")
    other = next((s for s in range(step) if lr_at(s, trunk) != lr_at(s, branch)), None)
    if other is not None:
        raise ValueError(f"trial {branch.trial_id} cannot branch from trial {trunk.trial_id} at step {step}: their "
                         f"learning rates differ at step {other} ({lr_at(other, trunk)!r} there, "
                         f"{lr_at(other, branch)!r} here); branch at most at decay_start = {branch.decay_start}")
    if not 0 < step < stop_step:
        raise ValueError(f"trial {branch.trial_id} cannot branch at step {step}: a branch point is after step 0 "
                         f"and before the branch's last step ({stop_step})")
    if record is None:
        raise ValueError(f"the checkpoint of trial {trunk.trial_id} at step {step} keeps no trunk record: "
                         "train the trunk with keep_steps (its branch points) and extra_eval_steps")
    missing = [s for s in branch.eval_steps if s <= step and s not in record.evals]
    if missing or len(record.train_losses) < step:
        raise ValueError(f"trial {trunk.trial_id} did not evaluate at step(s) {missing} of trial {branch.trial_id} "
                         f"before its branch point {step}: train the trunk with them in extra_eval_steps"
                         if missing else f"the trunk record of trial {trunk.trial_id} lacks training losses")


def log_points(c: TrialConfig, upto: int, checkpointing: bool) -> list[int]:
    """The steps <= `upto` at which a run of `c` reports (and so starts a new train/loss window): 0, its
    eval_steps, the multiples of log_every_steps, and with `checkpointing` those of checkpoint_every_steps
    (sweeper.trainer.loop). Checkpoints taken by elapsed time (checkpoint_every_s) are also log points, so
    a run that took some reports train/loss over other windows; every other metric is unaffected."""
    steps = {0, *(s for s in c.eval_steps if s <= upto), *range(c.log_every_steps, upto + 1, c.log_every_steps)}
    if checkpointing:
        steps.update(range(c.checkpoint_every_steps, upto + 1, c.checkpoint_every_steps))
    return sorted(steps)


def branch_start(c: TrialConfig, record: TrunkRecord, step: int) -> tuple[float, float, int]:
    """(val_loss_last, val_loss_best, the step of that best) of the branch after `step` steps: over its
    own eval_steps up to `step` only, as its run trained alone has them there."""
    evals = [(s, record.evals[s]["val/loss"]) for s in c.eval_steps if s <= step]
    best_step, best = min(evals, key=lambda e: e[1])  # the first of equal ones, as the loop keeps it
    return evals[-1][1], best, best_step


def shared_points(c: TrialConfig, record: TrunkRecord, step: int,
                  checkpointing: bool) -> tuple[list[tuple[int, dict[str, float]]], np.ndarray, int]:
    """The branch's curve up to its branch point `step`, from the trunk's record: (points, carried,
    logged_at). points: (step, metrics) at each of log_points(c, step, checkpointing): train/loss (the
    mean over the steps since the previous point, float64 in step order, as the loop computes it) and lr
    after step 0, and at its eval_steps the val/* metrics with val/loss_best (the lowest val/loss of its
    eval_steps so far). carried: the losses of the steps after the last of these points, up to `step`,
    which the branch's first window adds to its own (float64); logged_at: that last point."""
    losses = np.asarray(record.train_losses[:step], dtype=np.float64)
    points, best, previous = [], math.inf, 0
    evals = frozenset(c.eval_steps)
    for s in log_points(c, step, checkpointing):
        metrics: dict[str, float] = {}
        if s > 0:
            metrics |= {"train/loss": float(losses[previous:s].mean()), "lr": lr_at(s - 1, c)}
        if s in evals:
            metrics |= record.evals[s]
            best = min(best, record.evals[s]["val/loss"])
            metrics["val/loss_best"] = best
        points.append((s, metrics))
        previous = s
    return points, losses[previous:step].copy(), previous
