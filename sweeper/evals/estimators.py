"""Log-likelihoods of a continuation given a context, from a model of any family: the numbers that
lm-evaluation-harness turns into accuracies and perplexities.

Token lists in, floats in nats out. `model` is sweeper's Transformer (sweeper.trainer.model): called
as model(idx (B, T), select=..., causal=..., attention_mask=...) -> logits over the tokenizer's ids,
with the mask id `model.config.vocab_size`. A window holds at most `width` tokens: seq_len + 1 for
ar (its input is all but the last), seq_len for the diffusion families; a longer context is cut
from the left, and a continuation that does not fit one window is scored piece by piece, each piece
given the tokens before it (the chain rule; for the diffusion families a sum of bounds).

- ar: exact, Σ log p(x_i | x_<i) over the continuation (the chain rule of a causal model).
- mdm: the negative Monte-Carlo ELBO of the continuation given the context (Shi et al. 2024,
  "Simplified and Generalized Masked Diffusion", Eq. 5; Sahoo et al. 2024, MDLM, Eq. 10; PAPER.md's
  objective with the paper's clamp p = (1 - 1e-3)·t + 1e-3): every continuation token is masked
  i.i.d. with probability p(t), the context stays clean, and -log p(cont | ctx) ≤
  E_t E_mask[Σ_masked -log p_θ(x_i | x_masked) / p(t)]. t is stratified over the draws, one per
  [j/n, (j+1)/n), as the validation loss draws it. With logits that do not depend on the input the
  expectation is Σ_i -log p_θ(x_i) exactly, since E[1{masked} / p] = 1: the estimator is unbiased
  for the bound, whatever the draws.
- bd3lm: the same per block (Arriola et al. 2025, BD3-LM, arXiv 2503.09573, Sec. 3): blocks of
  `block_size` from the window's start, each with its own t, scored given its noisy self and the
  clean blocks before it; the sum over blocks bounds -log p(cont | ctx).
The draws (t and the masks) come from a generator keyed by the context's tokens, so every choice of
one multiple-choice question is scored on the same noise (position k of the continuation is masked
under draw j by the same uniform number for every choice).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

MIN_MASK_RATE = 1e-3  # PAPER.md: p = (1 - 1e-3)·t + 1e-3, as the trainer's ELBO
EVAL_SEED = 20  # the draws of every downstream evaluation
MAX_BATCH_TOKENS = 2**16  # tokens per forward pass when draws or windows are batched


def keyed_generator(*key: int) -> torch.Generator:
    """A CPU generator whose stream is a pure function of the integer key."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def context_key(tokens: Sequence[int]) -> tuple[int, ...]:
    """Four 32-bit words of the SHA-256 of the token ids: what keys a context's draws."""
    digest = hashlib.sha256(np.asarray(tokens, dtype=np.int64).tobytes()).digest()
    return tuple(int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4))


def windows(context: Sequence[int], continuation: Sequence[int],
            width: int) -> Iterator[tuple[list[int], list[int]]]:
    """(context, piece) pairs of at most `width` tokens each that together score the continuation:
    pieces of at most width - 1 tokens, each after at least one token before it, cut from the left.
    Raises ValueError for an empty context or a width below 2."""
    if not context or width < 2:
        raise ValueError(f"need a context and a width of at least 2, got {len(context)} tokens and {width}")
    tokens = list(context) + list(continuation)
    start = len(context)
    while start < len(tokens):
        piece = tokens[start:start + width - 1]
        yield tokens[max(0, start - (width - len(piece))):start], piece
        start += len(piece)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def causal_scores(model: torch.nn.Module, pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
                  *, causal: bool = True) -> list[tuple[float, bool]]:
    """ar: for windows (context, continuation) with len(context) >= 1 and len(context) +
    len(continuation) - 1 <= seq_len, each (Σ log p(continuation_i | everything before), whether
    every continuation token is the argmax), the sum in float64. Windows are batched by length,
    right-padded (padding after a causal position never reaches it), and only the positions that
    predict a continuation token are scored, so the logits held are (continuation tokens, V)."""
    device = _device(model)
    out: list[tuple[float, bool] | None] = [None] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    start = 0
    while start < len(order):
        longest = len(pairs[order[start]][0]) + len(pairs[order[start]][1]) - 1
        batch = order[start:start + max(1, MAX_BATCH_TOKENS // longest)]
        start += len(batch)
        idx = torch.zeros((len(batch), longest), dtype=torch.long)
        select = torch.zeros((len(batch), longest), dtype=torch.bool)  # the positions that predict
        for row, i in enumerate(batch):
            context, continuation = pairs[i]
            seq = list(context) + list(continuation)
            idx[row, :len(seq) - 1] = torch.tensor(seq[:-1])
            select[row, len(context) - 1:len(seq) - 1] = True
        # only the continuation's positions reach the output head: (M, V), row-major
        logits = model(idx.to(device), select=select.to(device), causal=causal)
        logprobs = F.log_softmax(logits.double(), dim=-1).cpu()
        at = 0
        for i in batch:
            target = torch.tensor(list(pairs[i][1]))
            rows = logprobs[at:at + len(target)]  # (len(continuation), V)
            at += len(target)
            out[i] = (float(rows.gather(1, target[:, None]).sum()), bool((rows.argmax(-1) == target).all()))
    return out  # type: ignore[return-value]


def stratified_draws(key: Sequence[int], num_mc: int, width: int,
                     blocks: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise of one context: mask rates p (num_mc, blocks), one t per stratum [j/num_mc,
    (j+1)/num_mc) for each block, and uniform numbers u (num_mc, width); position k of a window is
    masked under draw j where u[j, k] < p of its block."""
    g = keyed_generator(EVAL_SEED, *key)
    strata = torch.arange(num_mc, dtype=torch.float64)[:, None]
    t = (strata + torch.rand((num_mc, blocks), generator=g, dtype=torch.float64)) / num_mc
    u = torch.rand((num_mc, width), generator=g, dtype=torch.float64)
    return (1.0 - MIN_MASK_RATE) * t + MIN_MASK_RATE, u


@torch.no_grad()
def diffusion_nelbo(model: torch.nn.Module, context: Sequence[int], continuation: Sequence[int], *,
                    num_mc: int, block_size: int | None = None) -> float:
    """mdm (block_size None) or bd3lm: the Monte-Carlo estimate of the negative ELBO of
    `continuation` given `context` (module docstring), nats, for one window of at most seq_len
    tokens (len(context) + len(continuation) <= seq_len; `windows` cuts longer ones)."""
    c = model.config
    device = _device(model)
    tokens = torch.tensor(list(context) + list(continuation), dtype=torch.long)
    T, first = tokens.numel(), len(context)
    if T > c.seq_len:
        raise ValueError(f"a window of {T} tokens exceeds seq_len {c.seq_len}")
    blocks = 1 if block_size is None else -(-c.seq_len // block_size)
    p, u = stratified_draws(context_key(context), num_mc, c.seq_len, blocks)
    block_of = torch.zeros(T, dtype=torch.long) if block_size is None else torch.arange(T) // block_size
    rate = p[:, block_of]  # (n, T): each position's rate under each draw
    masked = u[:, :T] < rate
    masked[:, :first] = False  # the context stays clean
    total = torch.zeros(num_mc, dtype=torch.float64)
    spans = [(0, T)] if block_size is None else \
        [(b * block_size, min(T, (b + 1) * block_size)) for b in range(int(block_of[first]), int(block_of[-1]) + 1)]
    for lo, hi in spans:  # bd3lm: block by block, the earlier blocks clean; mdm: the whole window
        select = torch.zeros((num_mc, hi), dtype=torch.bool)
        select[:, lo:hi] = masked[:, lo:hi]
        mask = None if block_size is None else \
            (block_of[None, :hi] <= block_of[:hi, None]).to(device)  # block-causal (T, T)
        step = max(1, MAX_BATCH_TOKENS // hi)
        for j0 in range(0, num_mc, step):
            sel = select[j0:j0 + step]
            if not bool(sel.any()):
                continue
            idx = torch.where(sel, c.vocab_size, tokens[:hi]).to(device)
            extra = {} if mask is None else {"attention_mask": mask}
            logits = model(idx, select=sel.to(device), **extra)  # (M, V), the masked positions
            rows = sel.nonzero(as_tuple=True)[0]
            ce = F.cross_entropy(logits.double(), tokens[:hi].expand_as(sel)[sel].to(device),
                                 reduction="none").cpu()
            weight = rate[j0:j0 + step, :hi][sel]
            total[j0:j0 + step] += torch.zeros(sel.shape[0], dtype=torch.float64).index_add(0, rows, ce / weight)
    return float(total.mean())
