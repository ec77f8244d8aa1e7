"""What one optimizer step draws and leaves behind: its random draws for the whole global batch
(`step_noise`, keyed by (seed, step), so any micro-batch split, process count or resume trains the
same), and the window of step losses that the next log point reduces (`LossWindow`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from sweeper.trial import TrialConfig
from sweeper.trainer.branch import TrunkRecord
from sweeper.trainer.distributed import Processes, all_reduce_sum
from sweeper.trainer.errors import NonFiniteLoss
from sweeper.trainer.objectives import dual_choice, input_mask, train_noise
from sweeper.trainer.orderings import training_orders


def step_noise(c: TrialConfig, step: int) -> tuple[torch.Tensor | None, ...]:
    """(masked, p, order) of optimizer step `step` for the whole global batch, row i for its
    sequence i (None where the trial has none): mdm's (and bd3lm's, per block) masks and loss
    divisors, or ar's input masks and orderings; dual's mdm masks and divisors and, as `order`,
    which sequences train as ar. Keyed by (seed, step), so any micro-batch split trains the same."""
    if c.family == "bd3lm":
        p, masked = train_noise(c.seed, step, c.batch_sequences, c.seq_len, block_size=c.block_size)
        return masked, p, None
    if c.family == "dual":
        p, masked = train_noise(c.seed, step, c.batch_sequences, c.seq_len)
        return masked, p, dual_choice(c.seed, step, c.batch_sequences, c.ar_fraction)
    if c.family == "mdm":
        p, masked = train_noise(c.seed, step, c.batch_sequences, c.seq_len, t_sampling=c.mdm_t_sampling,
                                min_mask_rate=c.mdm_min_mask_rate)
        return masked, p if c.mdm_loss_weight == "elbo" else torch.ones_like(p), None
    masked = input_mask(c.seed, step, c.batch_sequences, c.seq_len, c.input_mask_rate) \
        if c.input_mask_rate > 0 else None
    order = training_orders(c.seed, step, c.batch_sequences, c.seq_len + 1, c.orderings) \
        if c.orderings > 1 else None
    return masked, None, order


@dataclass(slots=True)
class LossWindow:
    """The training losses of the steps after the last log point `logged_at`: first `carried` on the host
    (float64; taken there by a trunk's checkpoint between two log points, or carried over a resume or
    from the trunk into a branch), then `losses` on the device, one per step, unsynced. The wall time
    counts the steps trained since start_step (the loop moves start_time past work that is not
    training); grad_norm is the last step's."""

    start_step: int
    start_time: float
    logged_at: int
    losses: list[torch.Tensor] = field(default_factory=list)
    grad_norm: torch.Tensor | None = None
    carried: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def pull(self, procs: Processes, tokens_per_step: int, record: TrunkRecord | None = None) -> None:
        """The device losses to the host (a sync), averaged over processes, appended to `carried` (float64)
        and, given a trunk's record, to its train_losses. Raises
        NonFiniteLoss naming the first step whose loss is not finite."""
        losses = all_reduce_sum(torch.stack(self.losses).float(), procs) / procs.world_size
        values = losses.double().cpu().numpy()
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            bad_step = self.logged_at + len(self.carried) + int(bad[0]) + 1
            raise NonFiniteLoss(bad_step, bad_step * tokens_per_step, float(values[bad[0]]))
        self.carried = np.concatenate([self.carried, values]) if len(self.carried) else values
        self.losses = []
        if record is not None:
            record.train_losses.extend(values.tolist())
