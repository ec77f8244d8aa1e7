"""The training loop: `train(config, train_tokens, val_tokens, reporter)` runs one trial.

The config fixes every count; this module only follows it. The loop reaches the host (a sync)
only at log points, evaluation points and checkpoints: losses of the steps in between stay on the
device in a short list that the next log point reduces, checks for NaN/inf and reports. Every
curve starts with an evaluation of the untrained model (tokens = 0), follows `eval_steps`, and
ends with an evaluation at the last step, also when `max_steps` cuts the run short; the learning
rate schedule always spans the planned `steps`, so a cut run is an exact prefix of the full one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from sweeper.trainer import distributed
from sweeper.trainer.branch import BRANCH_POINT_KEY, BRANCHED_KEY, RECORD_KEY, SHARED_KEY, TrunkRecord, \
    check_resume, check_sharing, open_branch, resumed_record
from sweeper.trainer.checkpoint import (
    load_into,
    model_snapshot,
    prune_checkpoints,
    read_best,
    read_checkpoint,
    set_rng_state,
    write_checkpoint,
)
from sweeper.trainer.distributed import Processes, all_reduce_sum, set_grad_sync
from sweeper.trainer.evaluation import validation_loss
from sweeper.trainer.errors import TrialOutOfMemory
from sweeper.trial import TrialConfig, model_flops_utilisation, palm_flops_per_token, \
    processed_flops, processed_per_token, training_flops
from sweeper.trainer.loader import SampleStream, ValidationSet, check_token_ids, to_device
from sweeper.trainer.model import ModelConfig, Transformer
from sweeper.trainer.objectives import block_loss_sums, dual_loss_sums, family_loss_sums
from sweeper.trainer.optim import lr_at, make_optimizer
from sweeper.trainer.steps import LossWindow, step_noise

Reporter = Callable[[dict[str, float], str | None], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainResult:
    trial_id: str
    steps_done: int  # optimizer steps of the trial so far (a resumed run counts earlier ones too)
    tokens: int
    completed: bool  # steps_done == config.steps
    final_val_loss: float
    final_val_loss_best: float
    wall_s: float
    tokens_per_s: float
    num_params_actual: int
    checkpoint_dir: str | None  # the last checkpoint written (None without a checkpoint root)


@dataclass(slots=True)
class _Loop:
    """What the loop carries from step to step; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    val_loss_last: float = math.nan
    val_loss_best: float = math.inf  # over the planned evaluations

    def best(self) -> float:
        return min(self.val_loss_best, self.val_loss_last)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def train(config: TrialConfig, train_tokens: np.ndarray, val_tokens: np.ndarray, reporter: Reporter,
          *, checkpoint_dir: str | None = None, resume_from: str | None = None,
          max_steps: int | None = None, keep_checkpoints: int = 2, keep_best: bool = False,
          extra_eval_steps: frozenset[int] = frozenset(), keep_steps: frozenset[int] = frozenset(),
          branch_from: str | None = None) -> TrainResult:
    """Train one trial and report its curve.

    train_tokens: the trial's pool, exactly U packed tokens (1-D integer array, memmap welcome).
    val_tokens: the validation tokens, cut into non-overlapping samples in fixed order.
    reporter(metrics, checkpoint_dir): called on process 0 at every log/eval point, with the
      checkpoint folder when one was written at that point (names: sweeper.trainer.METRICS).
    checkpoint_dir: root for step_* checkpoints (none are written when None); the newest
      `keep_checkpoints` are kept, older ones deleted once the reporter has had the newer.
    resume_from: a step_* checkpoint folder to continue from, exactly.
    max_steps: stop after this many optimizer steps of the trial (counted from its start).
    keep_best: every checkpoint also keeps the model's weights at the trial's lowest val/loss over
      the planned evaluations so far (sweeper.trainer.checkpoint, BEST_FILE), for downstream
      evaluation of the best-validation model (`load_model(..., weights="best")`). Resumed from a
      checkpoint without them, it keeps weights only once a later evaluation beats the stored best.
    Prefix sharing (sweeper.trainer.branch), a trunk's: extra_eval_steps (in 0..steps), its branches'
      eval steps up to their branch points, evaluated for them only (in every checkpoint, no report);
      keep_steps (in 1..steps, with checkpoint_dir), its branch points: checkpoints never pruned,
      reported with BRANCH_POINT_KEY; neither changes its curve. A branch's: branch_from, its trunk's
      checkpoint at its branch point (ValueError if they disagree): it trains on from there and first
      reports its curve up to there (SHARED_KEY). With keep_best it keeps weights once an evaluation
      from its branch point on is its best so far (a best one before that is the trunk's, not kept).
    Raises NonFiniteLoss or TrialOutOfMemory (terminal, `retryable = False`) on those failures.
    """
    wall_start = time.perf_counter()
    stop_step = config.steps if max_steps is None else max(0, min(config.steps, max_steps))
    check_sharing(config, extra_eval_steps, keep_steps, checkpoint_dir, resume_from, branch_from)
    procs = distributed.start(config.device)
    try:
        trial = _Trial(config, train_tokens, val_tokens, procs, resume_from, keep_best,
                       frozenset(extra_eval_steps), frozenset(keep_steps))
        if branch_from is not None:
            trial.branch(branch_from, stop_step, checkpoint_dir is not None)
        return trial.run(reporter, stop_step, checkpoint_dir, keep_checkpoints, wall_start)
    except torch.OutOfMemoryError as error:
        raise TrialOutOfMemory(config.micro_batch, str(procs.device), str(error)) from error
    finally:
        distributed.stop(procs)


class _Trial:
    """One trial in one process: model, optimizer, data, counters."""

    def __init__(self, c: TrialConfig, train_tokens: np.ndarray, val_tokens: np.ndarray,
                 procs: Processes, resume_from: str | None, keep_best: bool = False,
                 extra_eval_steps: frozenset[int] = frozenset(), keep_steps: frozenset[int] = frozenset()) -> None:
        check_token_ids(train_tokens, c.vocab_size, "the training pool")
        check_token_ids(val_tokens, c.vocab_size, "the validation set")
        chunks = c.batch_sequences // c.micro_batch
        if chunks % procs.world_size:
            raise ValueError(f"batch_sequences={c.batch_sequences} / micro_batch={c.micro_batch} = "
                             f"{chunks} micro-batches do not split over {procs.world_size} processes: "
                             "pick a micro_batch so that batch_sequences / (micro_batch * processes) "
                             "is whole")
        self.c, self.procs, self.device = c, procs, procs.device
        self.accumulation = chunks // procs.world_size
        self.stream = SampleStream(train_tokens, c.seq_len, c.seed)
        self.val_set = ValidationSet(val_tokens, c.seq_len)
        self.eval_steps = frozenset(c.eval_steps)

        model = Transformer(ModelConfig.from_trial(c))
        model.init_weights(c.init_std, c.seed)
        self.num_params_actual = model.num_params()
        self.model = distributed.wrap(model.to(self.device), procs, c.parallelism, c.precision)
        self.optimizer = make_optimizer(self.model, c, self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.forward = torch.compile(self._loss_sums) if c.compile else self._loss_sums
        # bd3lm's passes read x_t ⊕ x_0: twice the tokens, each attending over 2L positions
        processed = processed_per_token(c.family)
        self.flops_per_token = processed * palm_flops_per_token(self.num_params_actual, c.layers, c.heads,
                                                                c.head_dim, processed * c.seq_len)
        self.loop = _Loop()
        self.train_seconds = 0.0
        self.resumed_from = resume_from
        self.keep_best, self.best, self.improved = keep_best, None, False
        # prefix sharing (sweeper.trainer.branch): a trunk's record, extra evaluations and branch points
        self.extra_eval_steps, self.keep_steps = extra_eval_steps - self.eval_steps, keep_steps
        self.record = TrunkRecord() if extra_eval_steps or keep_steps else None
        self.shared: list[tuple[int, dict[str, float]]] = []  # a branch's points before its branch point
        # the last log point, and the losses since then on the host (a resume or a branch carries some)
        self.logged_at, self.carried = 0, np.zeros(0)
        if resume_from is not None:
            saved, state = read_checkpoint(resume_from)
            check_resume(saved, c)
            load_into(self.model, self.optimizer, state)
            self.loop = _Loop(**state["loop"])
            self.best = read_best(resume_from) if keep_best and procs.is_main else None
            set_rng_state(state["rng"][procs.rank % len(state["rng"])])
            self.record, self.carried, self.logged_at = resumed_record(state, self.record)
        else:
            # dropout draws from the global torch RNG; one stream per process
            torch.manual_seed(c.seed + procs.rank)
            np.random.seed(c.seed + procs.rank)
        self.start_step = self.loop.step

    def branch(self, branch_from: str, stop_step: int, checkpointing: bool) -> None:
        """Start from the trunk's checkpoint `branch_from` at this trial's branch point."""
        start = open_branch(branch_from, self.c, stop_step, checkpointing)
        load_into(self.model, self.optimizer, start.state)
        set_rng_state(start.state["rng"][self.procs.rank % len(start.state["rng"])])
        self.loop = _Loop(step=start.step, val_loss_last=start.val_loss_last, val_loss_best=start.val_loss_best)
        self.start_step, self.shared = start.step, start.points
        self.carried, self.logged_at = start.carried, start.logged_at
        if self.record is not None:  # a branch that is a trunk in turn takes the record so far with it
            self.record = start.record
        self.improved = start.best_step == start.step  # keep_best: the weights at hand are the best only then
        self.remember_best(start.step)

    def _loss_sums(self, tokens: torch.Tensor, masked: torch.Tensor | None,
                   p: torch.Tensor | None, order: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sequence loss sums (B,) of the trial's family. For dual, `order` carries which
        sequences train as ar, (B,) bool; for the others it is ar's orderings."""
        c = self.c
        if c.family == "dual":
            assert order is not None, "dual needs to know which sequences train as ar"
            return dual_loss_sums(self.model, tokens, masked, p, order, c.mask_id)
        if c.family == "bd3lm":
            assert masked is not None and p is not None, "bd3lm needs its masks and rates"
            return block_loss_sums(self.model, tokens[:, :-1], masked, p, c.mask_id, c.block_size)
        orders = () if order is None else (order,)  # without orderings, the five-argument call as before
        return family_loss_sums(self.model, tokens, masked, p, c.mask_id, *orders)

    def autocast(self) -> AbstractContextManager[Any]:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.c.precision == "bf16")

    def train_step(self, step: int, window: LossWindow, need_norm: bool) -> None:
        """Optimizer step `step` (0-based): accumulate the micro-batches, clip, update. No sync."""
        c, procs = self.c, self.procs
        lr = lr_at(step, c)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        step_loss = torch.zeros((), device=self.device)
        noise = step_noise(c, step)
        for a in range(self.accumulation):
            chunk = a * procs.world_size + procs.rank
            tokens = to_device(self.stream.micro_batch(step, chunk, c.batch_sequences, c.micro_batch),
                               self.device)
            rows = slice(chunk * c.micro_batch, (chunk + 1) * c.micro_batch)  # this chunk's sequences
            masked, p, order = (None if x is None else to_device(x[rows], self.device) for x in noise)
            set_grad_sync(self.model, a == self.accumulation - 1)
            with self.autocast():
                loss = self.forward(tokens, masked, p, order).sum() / (c.micro_batch * c.seq_len)
            (loss / self.accumulation).backward()
            step_loss += loss.detach()
        if c.grad_clip is not None:
            window.grad_norm = torch.nn.utils.clip_grad_norm_(self.params, c.grad_clip)
        elif need_norm:
            window.grad_norm = torch.nn.utils.get_total_norm([q.grad for q in self.params
                                                              if q.grad is not None])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        window.losses.append(step_loss / self.accumulation)

    def position(self, step: int) -> dict[str, float]:
        tokens = step * self.c.tokens_per_step
        out = {"tokens": tokens, "epoch": self.stream.epoch_at(step * self.c.batch_sequences),
               "flops": training_flops(self.c.num_params, tokens)}
        if processed_per_token(self.c.family) != 1:
            out["flops_processed"] = processed_flops(self.c.num_params, tokens, self.c.family)
        return out

    def point(self, step: int, window: LossWindow | None, stop_step: int) -> dict[str, float]:
        """Metrics at a log/eval point after `step` optimizer steps: the host sync."""
        c, procs, loop = self.c, self.procs, self.loop
        metrics = self.position(step)
        if window is not None and window.losses:
            window.pull(self.procs, c.tokens_per_step, self.record)  # waits for every step of the window
            values = window.carried
            elapsed = time.perf_counter() - window.start_time
            self.train_seconds += elapsed
            self.logged_at = step
            tokens_per_s = (step - window.start_step) * c.tokens_per_step / max(elapsed, 1e-9)
            metrics.update({"train/loss": float(values.mean()), "lr": lr_at(step - 1, c),
                            "tokens_per_s": tokens_per_s})
            if window.grad_norm is not None:
                norm = window.grad_norm  # a DTensor under FSDP
                metrics["grad_norm"] = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
            if c.peak_flops is not None:
                metrics["mfu"] = model_flops_utilisation(self.flops_per_token, tokens_per_s,
                                                         c.peak_flops, procs.world_size)
        if step in self.extra_eval_steps and step != stop_step:
            self.evaluate(step)  # for the branches only: no report, no val/loss_best
        elif step in self.eval_steps or step == stop_step:
            losses = self.evaluate(step)
            loop.val_loss_last = losses.pop("val/loss")
            metrics.update(losses)  # dual: val/loss_ar and val/loss_mdm
            if step in self.eval_steps:
                self.improved = loop.val_loss_last < loop.val_loss_best
                loop.val_loss_best = min(loop.val_loss_best, loop.val_loss_last)
            # an evaluation off the plan (a max_steps cut) counts for this report but is not
            # carried on, so a run resumed after the cut continues exactly as if never cut
            metrics.update({"val/loss": loop.val_loss_last, "val/loss_best": loop.best()})
        return metrics

    def evaluate(self, step: int) -> dict[str, float]:
        """val/loss (dual: also val/loss_ar and _mdm) after `step` steps; a trunk records it."""
        losses = validation_loss(self.forward, self.model, self.val_set, self.c, self.procs, self.autocast)
        if self.record is not None and (step in self.eval_steps or step in self.extra_eval_steps):
            self.record.evals[step] = dict(losses)
        return losses

    def off_curve(self, step: int, window: LossWindow, reporter: Reporter, checkpoint_dir: str | None,
                  keep_checkpoints: int) -> str | None:
        """A trunk's extra evaluation or keep step between log points, neither a point of its curve: the
        evaluation is recorded, the checkpoint reported with `tokens` and BRANCH_POINT_KEY only. Returns
        the checkpoint folder written, if any; the window goes on, its time not counting this."""
        paused = time.perf_counter()
        if step in self.extra_eval_steps:
            self.evaluate(step)
        written = None
        if step in self.keep_steps and checkpoint_dir is not None:
            window.pull(self.procs, self.c.tokens_per_step, self.record)  # into the checkpoint's record
            written = self.checkpoint(checkpoint_dir)
            if self.procs.is_main:
                reporter({"tokens": step * self.c.tokens_per_step, BRANCH_POINT_KEY: step}, written)
                prune_checkpoints(checkpoint_dir, keep_checkpoints, self.keep_steps)
        window.start_time += time.perf_counter() - paused
        return written

    def checkpoint(self, checkpoint_dir: str) -> str:
        loop = self.loop
        shared = None if self.record is None else {RECORD_KEY: self.record.to_state(loop.step, self.logged_at)}
        return write_checkpoint(checkpoint_dir, self.c, self.model, self.optimizer, loop.to_dict(), self.procs,
                                best=self.best, shared=shared)

    def final_metrics(self, step: int, wall_start: float) -> dict[str, float]:
        return {"final/val_loss": self.loop.val_loss_last, "final/val_loss_best": self.loop.best(),
                "final/wall_s": time.perf_counter() - wall_start,
                "final/tokens_per_s": self.tokens_per_s(step),
                "final/tokens_trained": step * self.c.tokens_per_step,
                "final/epochs_trained": step * self.c.tokens_per_step / self.c.unique_tokens,
                "num_params_actual": self.num_params_actual}

    def tokens_per_s(self, step: int) -> float:
        trained = (step - self.start_step) * self.c.tokens_per_step
        return trained / self.train_seconds if self.train_seconds > 0 else 0.0

    def remember_best(self, step: int) -> None:
        """With keep_best: after a planned evaluation that beat every earlier one, copy the weights
        (collective; process 0 keeps them) for the checkpoints to come."""
        if not (self.keep_best and self.improved):
            return
        self.improved = False
        weights = model_snapshot(self.model)
        if self.procs.is_main:
            self.best = {"model": weights, "step": step, "tokens": step * self.c.tokens_per_step,
                         "val_loss": self.loop.val_loss_best}

    def checkpoint_due(self, last_save: float) -> bool:
        """Whether `checkpoint_every_s` has passed since the last checkpoint (or the start), so that a
        trial whose planned cadence was too sparse (its time estimate too low) still checkpoints as
        often as the spec's `checkpoint_every_minutes` asks. Only ever asked at a log point, so the
        curve never depends on timing; every process takes process 0's answer."""
        if self.c.checkpoint_every_s <= 0:
            return False
        due = torch.tensor(float(time.perf_counter() - last_save >= self.c.checkpoint_every_s
                                 and self.procs.is_main), device=self.device)
        return bool(all_reduce_sum(due, self.procs).item() > 0)

    def run(self, reporter: Reporter, stop_step: int, checkpoint_dir: str | None,
            keep_checkpoints: int, wall_start: float) -> TrainResult:
        c, procs, loop = self.c, self.procs, self.loop
        last_checkpoint = self.resumed_from
        if loop.step == 0:  # the untrained model opens every curve
            metrics = self.point(0, None, stop_step)
            self.remember_best(0)
            if stop_step == 0:
                metrics.update(self.final_metrics(0, wall_start))
            if procs.is_main:
                reporter(metrics, None)
        elif loop.step >= stop_step:  # resumed at the end: report the stored final evaluation again
            metrics = {**self.position(loop.step), **self.final_metrics(loop.step, wall_start)}
            if procs.is_main:
                reporter(metrics, self.resumed_from)
        for n, (step, shared) in enumerate(self.shared):  # a branch: its curve up to the branch point
            first = {BRANCHED_KEY: loop.step * c.tokens_per_step} if n == 0 else {}
            if procs.is_main:
                reporter({**self.position(step), **shared, SHARED_KEY: 1.0, **first}, None)

        window = LossWindow(start_step=loop.step, start_time=time.perf_counter(), logged_at=self.logged_at,
                            carried=self.carried)
        last_save = window.start_time
        while loop.step < stop_step:
            step = loop.step + 1  # optimizer steps done once this one is
            is_log = step % c.log_every_steps == 0 or step in self.eval_steps or step == stop_step
            is_checkpoint = checkpoint_dir is not None and (
                step % c.checkpoint_every_steps == 0 or step == stop_step
                or (is_log and self.checkpoint_due(last_save)))
            is_log = is_log or is_checkpoint
            is_keep = step in self.keep_steps  # a branch point: a checkpoint, but no point of the curve
            self.train_step(loop.step, window, need_norm=is_log)
            loop.step = step
            if not is_log:
                if is_keep or step in self.extra_eval_steps:
                    written = self.off_curve(step, window, reporter, checkpoint_dir, keep_checkpoints)
                    last_checkpoint = written or last_checkpoint
                continue
            metrics = self.point(step, window, stop_step)
            self.remember_best(step)
            written = None
            if (is_checkpoint or is_keep) and checkpoint_dir is not None:
                written = self.checkpoint(checkpoint_dir)
                last_checkpoint, last_save = written, time.perf_counter()
            if step == stop_step:
                metrics.update(self.final_metrics(step, wall_start))
            if is_keep:
                metrics[BRANCH_POINT_KEY] = step
            if procs.is_main:
                reporter(metrics, written)
                if written is not None and checkpoint_dir is not None:
                    prune_checkpoints(checkpoint_dir, keep_checkpoints, self.keep_steps)
            window = LossWindow(start_step=step, start_time=time.perf_counter(), logged_at=step)

        return TrainResult(trial_id=c.trial_id, steps_done=loop.step, tokens=loop.step * c.tokens_per_step,
                           completed=loop.step == c.steps, final_val_loss=loop.val_loss_last,
                           final_val_loss_best=loop.best(), wall_s=time.perf_counter() - wall_start,
                           tokens_per_s=self.tokens_per_s(loop.step),
                           num_params_actual=self.num_params_actual, checkpoint_dir=last_checkpoint)

