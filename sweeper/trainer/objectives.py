"""The two objectives (PAPER.md), as per-sequence loss sums that train and evaluation share.

ar: inputs tokens[:-1], targets tokens[1:]; loss = mean CE over all positions.
mdm: per sequence t ~ U(0,1), p = (1 - 1e-3)·t + 1e-3, each token masked i.i.d. with prob p;
loss = Σ_masked CE / p, divided by B·L: by all positions, never by the masked count, so mdm and
ar losses are both nats per token (the masked-count division is the classic bug).

Masking noise is drawn on the CPU from a generator keyed by what the noise is for (training: seed
and optimizer step, drawn for the whole global batch, so sequence i of the batch takes row i
whichever micro-batch and process trains it; evaluation: validation sample index). The noise is
therefore the same on every device, for any micro-batch, any number of processes and after a
resume, with no RNG state to carry. Each process draws the whole batch once per step (a few
microseconds a sequence, about 3 ms for 512 × 1024 tokens) on the host, overlapping device work.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

MIN_MASK_RATE = 1e-3  # p = (1 - MIN_MASK_RATE)·t + MIN_MASK_RATE keeps 1/p bounded
EVAL_NOISE_SEED = 0  # fixed for every trial, so val/loss of any two trials uses the same draws

# stream tags keep training and evaluation noise independent of each other
_TRAIN_STREAM = 1
_EVAL_STREAM = 2


def keyed_generator(*key: int) -> torch.Generator:
    """A CPU generator whose stream is a pure function of the integer key."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def mask_rate(t: torch.Tensor) -> torch.Tensor:
    return (1.0 - MIN_MASK_RATE) * t + MIN_MASK_RATE


def draw_mask(t: torch.Tensor, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """t (n,) -> p (n,), masked (n, seq_len) bool with each token masked i.i.d. with prob p."""
    p = mask_rate(t)
    masked = torch.rand((t.shape[0], seq_len), generator=generator) < p[:, None]
    return p, masked


def train_noise(seed: int, step: int, batch_sequences: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training noise of optimizer step `step` for its whole global batch: p (B,), masked (B, L);
    row i belongs to sequence i of the batch (stream positions step·B + i), so a micro-batch takes
    the rows of its sequences and any split of the batch trains on the same masks."""
    g = keyed_generator(seed, _TRAIN_STREAM, step)
    t = torch.rand((batch_sequences,), generator=g)
    return draw_mask(t, seq_len, g)


def eval_noise(sample_index: int, num_mc: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluation noise for one validation sample: num_mc stratified draws of t, one per stratum
    [j/num_mc, (j+1)/num_mc), which lowers the variance of the ELBO estimate.
    Returns p (num_mc,), masked (num_mc, L)."""
    g = keyed_generator(EVAL_NOISE_SEED, _EVAL_STREAM, sample_index)
    t = (torch.arange(num_mc, dtype=torch.float32) + torch.rand((num_mc,), generator=g)) / num_mc
    return draw_mask(t, seq_len, g)


def sequence_loss_sums(model: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
                       targets: torch.Tensor) -> torch.Tensor:
    """ar: per-sequence sum of next-token cross-entropy, (B,), for inputs = tokens[:, :-1] and
    targets = tokens[:, 1:] (B, L); the loss is then sums.sum() / (B·L)."""
    logits = model(inputs)  # (B, L, V)
    B, L, V = logits.shape
    ce = F.cross_entropy(logits.reshape(B * L, V), targets.reshape(B * L), reduction="none")
    return ce.view(B, L).float().sum(dim=1)  # autocast already computes the loss in fp32


def masked_loss_sums(model: Callable[..., torch.Tensor], x0: torch.Tensor, masked: torch.Tensor,
                     p: torch.Tensor, mask_id: int) -> torch.Tensor:
    """mdm: per-sequence Σ_masked CE(logits, x0) / p, (B,), for clean tokens x0 (B, L), masked
    (B, L) bool and mask rates p (B,); the loss is then sums.sum() / (B·L).

    The model reads x0 with its masked positions set to `mask_id` and scores only those positions
    (`model(inputs, select=masked)`): every other position has weight 0 in the loss, so scoring it
    would be work thrown away. A sequence with no masked token sums to 0."""
    inputs = torch.where(masked, mask_id, x0)
    logits = model(inputs, select=masked)  # (M, V), the masked positions in row-major order
    rows = masked.nonzero(as_tuple=True)[0]  # (M,) the sequence of each masked position
    ce = F.cross_entropy(logits, x0[masked], reduction="none").float() / p[rows]
    return torch.zeros(x0.shape[0], dtype=ce.dtype, device=ce.device).index_add(0, rows, ce)


def family_loss_sums(model: Callable[..., torch.Tensor], tokens: torch.Tensor,
                     masked: torch.Tensor | None, p: torch.Tensor | None, mask_id: int) -> torch.Tensor:
    """Samples (B, L+1) -> per-sequence loss sums (B,); the family follows from the noise given.

    ar (masked and p None): inputs tokens[:, :-1], targets tokens[:, 1:].
    mdm: the first L tokens, masked (B, L) positions replaced by the mask id, weights 1 / p.
    """
    if masked is None or p is None:
        return sequence_loss_sums(model, tokens[:, :-1], tokens[:, 1:])
    return masked_loss_sums(model, tokens[:, :-1], masked, p, mask_id)
