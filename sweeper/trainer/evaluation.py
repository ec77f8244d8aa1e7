"""Validation loss on the fixed validation set, the same for every trial.

ar: exact mean next-token CE over all validation tokens. mdm: the ELBO estimate of PAPER.md, per
sequence averaged over `mdm_eval_samples` stratified draws of t whose masks are seeded by the
sample's index, so two evaluations of the same weights agree exactly (on any device count).
bd3lm: its ELBO, the same estimator with a t per block in each stratum. dual: both ar's CE (the
model read causally) and mdm's ELBO (read bidirectionally), `val/loss` being the one the trial's
`dual_val_loss` names. All are sums over sequences divided by (samples × seq_len), accumulated in
float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch

from sweeper.trial import TrialConfig
from sweeper.trainer.distributed import Processes, all_reduce_sum
from sweeper.trainer.loader import ValidationSet, to_device
from sweeper.trainer.objectives import eval_noise

LossSums = Callable[..., torch.Tensor]  # (tokens, masked, p[, order]) -> per-sequence sums


@torch.no_grad()
def validation_loss(forward: LossSums, model: torch.nn.Module, val_set: ValidationSet, c: TrialConfig,
                    procs: Processes, autocast: Callable[[], AbstractContextManager[Any]]) -> dict[str, float]:
    """forward(tokens, masked, p[, order]) -> per-sequence loss sums (the trial's `_loss_sums`);
    `model` is switched to eval mode (no dropout) for the duration. Returns {"val/loss": nats per
    token}, for dual also "val/loss_ar" and "val/loss_mdm"."""
    device = procs.device
    model.eval()
    kinds = ("ar", "mdm") if c.family == "dual" else ("ar" if c.family == "ar" else "mdm",)
    total = torch.zeros(len(kinds), dtype=torch.float64, device=device)
    for ids, tokens_np, weight in _rounds(val_set, c.micro_batch, procs):
        tokens = to_device(tokens_np, device)
        for k, kind in enumerate(kinds):
            # dual reads `order` as which sequences are ar: all of them, or none
            choice = () if c.family != "dual" else (torch.full((len(ids),), kind == "ar", device=device),)
            if kind == "ar":
                with autocast():
                    sums = forward(tokens, None, None, *choice).double()
            else:
                block_size = c.block_size if c.family == "bd3lm" else None
                noise = [eval_noise(int(i), c.mdm_eval_samples, c.seq_len, block_size) for i in ids]
                p_all = to_device(torch.stack([p for p, _ in noise]), device)  # (b, num_mc) or (b, num_mc, L)
                masked_all = to_device(torch.stack([m for _, m in noise]), device)  # (b, num_mc, L)
                sums = torch.zeros(len(ids), dtype=torch.float64, device=device)
                for j in range(c.mdm_eval_samples):
                    with autocast():
                        sums += forward(tokens, masked_all[:, j], p_all[:, j], *choice).double()
                sums /= c.mdm_eval_samples
            total[k] += weight * sums.sum()
    all_reduce_sum(total, procs)
    model.train()
    losses = dict(zip(kinds, (total / (val_set.num_samples * c.seq_len)).tolist(), strict=True))
    if c.family != "dual":
        return {"val/loss": losses[kinds[0]]}
    return {"val/loss": losses[c.dual_val_loss], "val/loss_ar": losses["ar"], "val/loss_mdm": losses["mdm"]}


def _rounds(val_set: ValidationSet, batch: int,
            procs: Processes) -> Iterator[tuple[np.ndarray, np.ndarray, float]]:
    """This process's validation batches as (sample ids, tokens, weight), padded so every process
    runs the same number of forward passes (sharded models gather weights collectively in each);
    padding rounds repeat the first batch with weight 0."""
    rounds = math.ceil(math.ceil(val_set.num_samples / batch) / procs.world_size)
    done = 0
    for ids, tokens in val_set.batches(batch, procs.rank, procs.world_size):
        done += 1
        yield ids, tokens, 1.0
    for _ in range(rounds - done):
        ids, tokens = next(val_set.batches(batch, 0, 1))
        yield ids, tokens, 0.0
