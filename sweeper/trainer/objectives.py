"""The two objectives (PAPER.md), as per-sequence loss sums that train and evaluation share.

ar: inputs tokens[:-1], targets tokens[1:]; loss = mean CE over all positions.
mdm: per sequence t ~ U(0,1), p = (1 - 1e-3)·t + 1e-3, each token masked i.i.d. with prob p;
loss = Σ_masked CE / p, divided by B·L: by all positions, never by the masked count, so mdm and
ar losses are both nats per token (the masked-count division is the classic bug).

Training options (TrialConfig; defaults are the above): ar may replace each input token by the mask
id with probability `input_mask_rate` (targets unchanged; the paper's `--randmask-ratio`) and read
samples in one of `orderings` fixed orders (sweeper.trainer.orderings). mdm may weight each masked
CE by 1 instead of 1/p (`mdm_loss_weight: unweighted`, no longer a likelihood bound), draw t one
per stratum [k/B, (k+1)/B) of the global batch instead of i.i.d. (`mdm_t_sampling: stratified`,
as the evaluation does per sequence), and clamp p at another `mdm_min_mask_rate` than 1e-3.
Evaluation ignores all of them: ar in the natural order, unmasked; mdm the ELBO at the paper's 1e-3.

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
_INPUT_MASK_STREAM = 5  # 3 and 4: sweeper.trainer.orderings


def keyed_generator(*key: int) -> torch.Generator:
    """A CPU generator whose stream is a pure function of the integer key."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def mask_rate(t: torch.Tensor, min_rate: float = MIN_MASK_RATE) -> torch.Tensor:
    """p = (1 - m)·t + m (PAPER.md, m = 1e-3), so 1/p stays at most 1/m."""
    return (1.0 - min_rate) * t + min_rate


def draw_mask(t: torch.Tensor, seq_len: int, generator: torch.Generator,
              min_rate: float = MIN_MASK_RATE) -> tuple[torch.Tensor, torch.Tensor]:
    """t (n,) -> p (n,), masked (n, seq_len) bool with each token masked i.i.d. with prob p."""
    p = mask_rate(t, min_rate)
    masked = torch.rand((t.shape[0], seq_len), generator=generator) < p[:, None]
    return p, masked


def train_noise(seed: int, step: int, batch_sequences: int, seq_len: int, *, t_sampling: str = "iid",
                min_mask_rate: float = MIN_MASK_RATE) -> tuple[torch.Tensor, torch.Tensor]:
    """Training noise of optimizer step `step` for its whole global batch: p (B,), masked (B, L);
    row i belongs to sequence i of the batch (stream positions step·B + i), so a micro-batch takes
    the rows of its sequences and any split of the batch trains on the same masks.

    t_sampling "iid": t ~ U(0, 1) per sequence. "stratified": t_i = (π_i + u_i) / B with π a random
    permutation of 0..B-1 and u_i ~ U(0, 1): one t in each stratum [k/B, (k+1)/B) of the global
    batch, in random sequence order (stratified sampling of the ELBO's t, as the evaluation draws
    per sequence; the low-discrepancy sampler of VDM, Kingma et al. 2021, spreads t the same way)."""
    g = keyed_generator(seed, _TRAIN_STREAM, step)
    if t_sampling == "stratified":
        strata = torch.randperm(batch_sequences, generator=g)
        t = (strata + torch.rand((batch_sequences,), generator=g)) / batch_sequences
    else:
        t = torch.rand((batch_sequences,), generator=g)
    return draw_mask(t, seq_len, g, min_mask_rate)


def input_mask(seed: int, step: int, batch_sequences: int, seq_len: int, rate: float) -> torch.Tensor:
    """ar input masking of optimizer step `step`'s global batch: (B, L) bool, each input token
    masked i.i.d. with probability `rate`; keyed like `train_noise`, so any micro-batch agrees."""
    g = keyed_generator(seed, _INPUT_MASK_STREAM, step)
    return torch.rand((batch_sequences, seq_len), generator=g) < rate


def eval_noise(sample_index: int, num_mc: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluation noise for one validation sample: num_mc stratified draws of t, one per stratum
    [j/num_mc, (j+1)/num_mc), which lowers the variance of the ELBO estimate.
    Returns p (num_mc,), masked (num_mc, L)."""
    g = keyed_generator(EVAL_NOISE_SEED, _EVAL_STREAM, sample_index)
    t = (torch.arange(num_mc, dtype=torch.float32) + torch.rand((num_mc,), generator=g)) / num_mc
    return draw_mask(t, seq_len, g)


def sequence_loss_sums(model: Callable[..., torch.Tensor], inputs: torch.Tensor,
                       targets: torch.Tensor, **positions: torch.Tensor) -> torch.Tensor:
    """ar: per-sequence sum of next-token cross-entropy, (B,), for inputs = tokens[:, :-1] and
    targets = tokens[:, 1:] (B, L); the loss is then sums.sum() / (B·L). `positions`: the model's
    `positions` and `next_positions` when the sequence is read in another order."""
    logits = model(inputs, **positions)  # (B, L, V)
    B, L, V = logits.shape
    ce = F.cross_entropy(logits.reshape(B * L, V), targets.reshape(B * L), reduction="none")
    return ce.view(B, L).float().sum(dim=1)  # autocast already computes the loss in fp32


def masked_loss_sums(model: Callable[..., torch.Tensor], x0: torch.Tensor, masked: torch.Tensor,
                     p: torch.Tensor, mask_id: int) -> torch.Tensor:
    """mdm: per-sequence Σ_masked CE(logits, x0) / p, (B,), for clean tokens x0 (B, L), masked
    (B, L) bool and mask rates p (B,); the loss is then sums.sum() / (B·L). p is only the divisor
    here: ones give the unweighted loss Σ_masked CE (`mdm_loss_weight: unweighted`).

    The model reads x0 with its masked positions set to `mask_id` and scores only those positions
    (`model(inputs, select=masked)`): every other position has weight 0 in the loss, so scoring it
    would be work thrown away. A sequence with no masked token sums to 0."""
    inputs = torch.where(masked, mask_id, x0)
    logits = model(inputs, select=masked)  # (M, V), the masked positions in row-major order
    rows = masked.nonzero(as_tuple=True)[0]  # (M,) the sequence of each masked position
    ce = F.cross_entropy(logits, x0[masked], reduction="none").float() / p[rows]
    return torch.zeros(x0.shape[0], dtype=ce.dtype, device=ce.device).index_add(0, rows, ce)


def family_loss_sums(model: Callable[..., torch.Tensor], tokens: torch.Tensor,
                     masked: torch.Tensor | None, p: torch.Tensor | None, mask_id: int,
                     order: torch.Tensor | None = None) -> torch.Tensor:
    """Samples (B, L+1) -> per-sequence loss sums (B,); the family follows from the noise given.

    ar (p None): inputs tokens[:, :-1], targets tokens[:, 1:]; with `order` (B, L+1), a permutation
    of positions per sequence, the sample read in that order (sweeper.trainer.orderings); with
    `masked` (B, L) bool, those inputs replaced by the mask id, the targets unchanged.
    mdm (p given): the first L tokens, masked (B, L) positions replaced by the mask id, weights 1 / p.
    """
    if p is not None and masked is not None:
        return masked_loss_sums(model, tokens[:, :-1], masked, p, mask_id)
    positions: dict[str, torch.Tensor] = {}
    if order is not None:
        tokens = tokens.gather(1, order)
        positions = {"positions": order[:, :-1], "next_positions": order[:, 1:]}
    inputs = tokens[:, :-1] if masked is None else torch.where(masked, mask_id, tokens[:, :-1])
    return sequence_loss_sums(model, inputs, tokens[:, 1:], **positions)
