"""The objectives of the four families, as per-sequence loss sums that train and evaluation share.

ar: inputs tokens[:-1], targets tokens[1:]; loss = mean CE over all positions.
mdm: per sequence t ~ U(0,1), p = (1 - 1e-3)·t + 1e-3, each token masked i.i.d. with prob p;
loss = Σ_masked CE / p, divided by B·L: by all positions, never by the masked count, so mdm and
ar losses are both nats per token (the masked-count division is the classic bug).

dual (the ar/mdm mixture of arXiv 2512.14549 and the paper's `--ar-ratio`): each training sequence
is trained as ar with probability `ar_fraction`, else as mdm, by one model told which by its
attention (causal for ar, bidirectional for mdm); the sums add, still divided by B·L.
bd3lm (block diffusion, Arriola et al., BD3-LM, arXiv 2503.09573): the L tokens are cut into L/L'
blocks of `block_size` L'; each block b draws its own t_b, masks its tokens with p_b, and is scored
by Σ_{masked i in b} CE_i / p_b given the noisy block and every clean block before it: the sum of
the blocks' masked-diffusion ELBOs, a bound on -log p(x) = Σ_b -log p(x^b | x^{<b}) (their Sec. 3,
linear schedule α_t = 1 - t, whose weight is 1/t; here 1/p with the paper's clamp). The bound is a
sum over blocks of an expectation over t each, so drawing t independently per block estimates it
without bias, and one block (L' = L) is mdm's draw exactly. See `block_loss_sums` for how all
blocks train in one pass, and why that pass is the paper's x_t ⊕ x_0.

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
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

MIN_MASK_RATE = 1e-3  # p = (1 - MIN_MASK_RATE)·t + MIN_MASK_RATE keeps 1/p bounded
EVAL_NOISE_SEED = 0  # fixed for every trial, so val/loss of any two trials uses the same draws

# stream tags keep training and evaluation noise independent of each other
_TRAIN_STREAM = 1
_EVAL_STREAM = 2
_INPUT_MASK_STREAM = 5  # 3 and 4: sweeper.trainer.orderings
_DUAL_STREAM = 6


def keyed_generator(*key: int) -> torch.Generator:
    """A CPU generator whose stream is a pure function of the integer key."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def mask_rate(t: torch.Tensor, min_rate: float = MIN_MASK_RATE) -> torch.Tensor:
    """p = (1 - m)·t + m (PAPER.md, m = 1e-3), so 1/p stays at most 1/m."""
    return (1.0 - min_rate) * t + min_rate


def draw_mask(t: torch.Tensor, seq_len: int, generator: torch.Generator,
              min_rate: float = MIN_MASK_RATE) -> tuple[torch.Tensor, torch.Tensor]:
    """t (n,) -> p (n,), masked (n, seq_len) bool with each token masked i.i.d. with prob p.
    Per block, t (n, blocks) with blocks dividing seq_len -> p (n, seq_len), each token's block's
    rate (bd3lm); the masks draw the same numbers either way, so one block is the (n,) case."""
    p = mask_rate(t, min_rate)
    if p.dim() == 2:
        p = p.repeat_interleave(seq_len // p.shape[1], dim=1)  # (n, L): each token its block's rate
    masked = torch.rand((t.shape[0], seq_len), generator=generator) < (p if p.dim() == 2 else p[:, None])
    return p, masked


def _blocks(seq_len: int, block_size: int | None) -> int:
    """Blocks of one sequence; 1 without a block size (mdm) or with block_size = seq_len."""
    return 1 if block_size is None else seq_len // block_size


def train_noise(seed: int, step: int, batch_sequences: int, seq_len: int, *, t_sampling: str = "iid",
                min_mask_rate: float = MIN_MASK_RATE,
                block_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training noise of optimizer step `step` for its whole global batch: p (B,), masked (B, L);
    row i belongs to sequence i of the batch (stream positions step·B + i), so a micro-batch takes
    the rows of its sequences and any split of the batch trains on the same masks. With a
    `block_size` below seq_len (bd3lm), t is i.i.d. per block and p is (B, L), each token's block's
    rate; block_size = seq_len draws exactly mdm's noise.

    t_sampling "iid": t ~ U(0, 1) per sequence. "stratified": t_i = (π_i + u_i) / B with π a random
    permutation of 0..B-1 and u_i ~ U(0, 1): one t in each stratum [k/B, (k+1)/B) of the global
    batch, in random sequence order (stratified sampling of the ELBO's t, as the evaluation draws
    per sequence; the low-discrepancy sampler of VDM, Kingma et al. 2021, spreads t the same way)."""
    g = keyed_generator(seed, _TRAIN_STREAM, step)
    blocks = _blocks(seq_len, block_size)
    if blocks > 1:
        return draw_mask(torch.rand((batch_sequences, blocks), generator=g), seq_len, g, min_mask_rate)
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


def eval_noise(sample_index: int, num_mc: int, seq_len: int,
               block_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluation noise for one validation sample: num_mc stratified draws of t, one per stratum
    [j/num_mc, (j+1)/num_mc), which lowers the variance of the ELBO estimate.
    Returns p (num_mc,), masked (num_mc, L). With a `block_size` below seq_len (bd3lm), every block
    draws its own t in each stratum: p (num_mc, L); block_size = seq_len is mdm's noise exactly."""
    g = keyed_generator(EVAL_NOISE_SEED, _EVAL_STREAM, sample_index)
    blocks = _blocks(seq_len, block_size)
    strata = torch.arange(num_mc, dtype=torch.float32)
    if blocks > 1:
        return draw_mask((strata[:, None] + torch.rand((num_mc, blocks), generator=g)) / num_mc, seq_len, g)
    t = (strata + torch.rand((num_mc,), generator=g)) / num_mc
    return draw_mask(t, seq_len, g)


def dual_choice(seed: int, step: int, batch_sequences: int, ar_fraction: float) -> torch.Tensor:
    """dual: which sequences of step `step`'s global batch train as ar, (B,) bool, each with
    probability `ar_fraction` (0: none, 1: all); keyed like `train_noise`, so any micro-batch agrees."""
    g = keyed_generator(seed, _DUAL_STREAM, step)
    return torch.rand((batch_sequences,), generator=g) < ar_fraction


def sequence_loss_sums(model: Callable[..., torch.Tensor], inputs: torch.Tensor,
                       targets: torch.Tensor, **positions: Any) -> torch.Tensor:
    """ar: per-sequence sum of next-token cross-entropy, (B,), for inputs = tokens[:, :-1] and
    targets = tokens[:, 1:] (B, L); the loss is then sums.sum() / (B·L). `positions`: the model's
    `positions` and `next_positions` when the sequence is read in another order (and `causal` for a
    dual model, whose default attention is bidirectional)."""
    logits = model(inputs, **positions)  # (B, L, V)
    B, L, V = logits.shape
    ce = F.cross_entropy(logits.reshape(B * L, V), targets.reshape(B * L), reduction="none")
    return ce.view(B, L).float().sum(dim=1)  # autocast already computes the loss in fp32


def masked_loss_sums(model: Callable[..., torch.Tensor], x0: torch.Tensor, masked: torch.Tensor,
                     p: torch.Tensor, mask_id: int) -> torch.Tensor:
    """mdm: per-sequence Σ_masked CE(logits, x0) / p, (B,), for clean tokens x0 (B, L), masked
    (B, L) bool and mask rates p (B,), or per token (B, L); the loss is then sums.sum() / (B·L).
    p is only the divisor here: ones give the unweighted loss Σ_masked CE
    (`mdm_loss_weight: unweighted`).

    The model reads x0 with its masked positions set to `mask_id` and scores only those positions
    (`model(inputs, select=masked)`): every other position has weight 0 in the loss, so scoring it
    would be work thrown away. A sequence with no masked token sums to 0."""
    inputs = torch.where(masked, mask_id, x0)
    logits = model(inputs, select=masked)  # (M, V), the masked positions in row-major order
    return _masked_sums(logits, x0, masked, p)


def _masked_sums(logits: torch.Tensor, x0: torch.Tensor, masked: torch.Tensor,
                 p: torch.Tensor) -> torch.Tensor:
    """Σ_masked CE / p per sequence, (B,), from the logits of the masked positions (M, V)."""
    rows = masked.nonzero(as_tuple=True)[0]  # (M,) the sequence of each masked position
    divisor = p[masked] if p.dim() == 2 else p[rows]
    ce = F.cross_entropy(logits, x0[masked], reduction="none").float() / divisor
    return torch.zeros(x0.shape[0], dtype=ce.dtype, device=ce.device).index_add(0, rows, ce)


def block_diffusion_mask(seq_len: int, block_size: int, device: torch.device | None = None) -> torch.Tensor:
    """The attention mask of x_t ⊕ x_0, (2L, 2L) bool, True where a query (row) may attend to a key
    (BD3-LM, arXiv 2503.09573, Sec. 3, Fig. 2): a noisy token attends to the noisy tokens of its
    own block (block diagonal) and to the clean tokens of every earlier block (offset block-causal);
    a clean token attends to the clean tokens of its own and earlier blocks (block-causal), never to
    a noisy one."""
    block = torch.arange(seq_len, device=device) // block_size  # (L,) each position's block
    same, earlier = block[:, None] == block[None, :], block[None, :] < block[:, None]
    upto = same | earlier
    top = torch.cat((same, earlier), dim=1)  # queries in x_t
    bottom = torch.cat((torch.zeros_like(same), upto), dim=1)  # queries in x_0
    return torch.cat((top, bottom), dim=0)


def block_loss_sums(model: Callable[..., torch.Tensor], x0: torch.Tensor, masked: torch.Tensor,
                    p: torch.Tensor, mask_id: int, block_size: int) -> torch.Tensor:
    """bd3lm: per-sequence Σ_b Σ_{masked i in block b} CE_i / p_b, (B,), for clean tokens x0 (B, L),
    masked (B, L) bool and per-token rates p (B, L) (or per sequence, (B,), one t for all blocks);
    the loss is then sums.sum() / (B·L). CE_i scores token i given its noisy block x_t^b and the
    clean blocks x^{<b}.

    All blocks train in one forward pass over x_t ⊕ x_0 (2L tokens; BD3-LM, arXiv 2503.09573,
    Sec. 3, its vectorized training with the mask of Fig. 2): the model reads the noisy sequence
    followed by the clean one, both at positions 0..L-1, under `block_diffusion_mask`, and scores
    the masked noisy positions.
    Clean tokens see only clean tokens of their own and earlier blocks, so their states are those a
    left-to-right pass over the clean blocks computes (the cache a sampler keeps), and each noisy
    block sees exactly x_t^b and x^{<b}: the same conditionals as L/L' separate passes, one per
    block, at the cost of one pass over 2L tokens. block_size = L is mdm's loss on the same noise
    (no earlier block; the clean half is never read), and block_size = 1 is ar's chain rule
    Σ_i CE(x_i | x_{<i}) read off a mask token at position i, in expectation over t exactly so."""
    L = x0.shape[1]
    inputs = torch.cat((torch.where(masked, mask_id, x0), x0), dim=1)  # (B, 2L): x_t ⊕ x_0
    select = torch.cat((masked, torch.zeros_like(masked)), dim=1)
    positions = torch.arange(L, device=x0.device).repeat(2)  # both halves at 0..L-1
    logits = model(inputs, select=select, positions=positions,
                   attention_mask=block_diffusion_mask(L, block_size, x0.device))  # (M, V)
    return _masked_sums(logits, x0, masked, p)


def dual_loss_sums(model: Callable[..., torch.Tensor], tokens: torch.Tensor, masked: torch.Tensor | None,
                   p: torch.Tensor | None, is_ar: torch.Tensor, mask_id: int) -> torch.Tensor:
    """dual: samples (B, L+1) -> per-sequence loss sums (B,): ar's next-token CE sum with causal
    attention where `is_ar` (B,) bool, mdm's Σ_masked CE / p with bidirectional attention elsewhere
    (masked (B, L), p (B,); None when every sequence is ar). The loss is then sums.sum() / (B·L),
    the two kinds of sums in nats per token alike.

    Both passes run whatever the split, one of them on no sequences where the batch is all of one
    kind (mdm's only where masks are given), so every process of a sharded model makes the same
    collective calls in the same order."""
    sums = torch.zeros(tokens.shape[0], dtype=torch.float32, device=tokens.device)
    ar_rows = is_ar.nonzero(as_tuple=True)[0]
    chosen = tokens[ar_rows]
    sums = sums.index_copy(0, ar_rows, sequence_loss_sums(model, chosen[:, :-1], chosen[:, 1:], causal=True))
    if masked is not None:
        assert p is not None, "dual's mdm sequences need their rates"
        mdm_rows = (~is_ar).nonzero(as_tuple=True)[0]
        sums = sums.index_copy(0, mdm_rows, masked_loss_sums(model, tokens[mdm_rows, :-1], masked[mdm_rows],
                                                             p[mdm_rows], mask_id))
    elif not bool(is_ar.all()):
        raise ValueError("dual's mdm sequences need their masks and rates")
    return sums


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
