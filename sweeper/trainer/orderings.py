"""ar on N fixed token orderings (`orderings: N`), the paper's ablation of diffusion as augmentation.

PAPER.md, "Ablations in the paper" (App. 12): ar models trained on N ∈ {1, 2, 4, 8, 16} fixed random
token orderings resist overfitting more as N grows, N = 16 approaching diffusion. Here:

- The orderings are N permutations of a sample's L + 1 positions: the first is the identity, the
  other N - 1 are random permutations drawn once from the trial's seed, so every step of the trial
  (and a resume, and every process) uses the same N.
- Each training sequence is read in one of them, chosen per sequence from (seed, step, the
  sequence's index in the global batch): like mdm's masks, the choice does not depend on the
  micro-batch or the number of processes.
- In ordering o, the model reads x[o_0], ..., x[o_{L-1}] with causal attention and predicts
  x[o_{i+1}] at step i: next-token prediction in that order, the same L targets per sample as ar.
- Positions: RoPE rotates each key by its token's *original* index o_j, so attention sees where in
  the text every context token sits, and rotates the query of step i by the original index of the
  token it is to predict, o_{i+1}. A query-key score then depends on o_{i+1} - o_j, the offset of
  each context token from the target: that is how the model learns which position comes next (in a
  permuted order the context does not imply it). This follows XLNet's query stream (Yang et al.
  2019, "XLNet", §2.3: two-stream attention, whose query for target position z_t attends to the
  context with relative positions measured from z_t) and σ-GPT's conditioning on the next token's
  position (Pannatier et al. 2024, arXiv 2404.09562), with RoPE in place of their encodings; it
  adds no parameter. PAPER.md's summary of App. 12 does not fix how the paper told its model the
  next position; this is the choice here, made explicit.
- Validation reads the natural order (the identity, with next positions 1..L), so val/loss is the
  same quantity as for plain ar.
- N = 1 takes none of these paths: queries rotate as the keys, by their own positions, and samples
  are read as plain ar reads them, bit for bit (tests/trainer/test_options.py).
"""

from __future__ import annotations

import functools

import torch

from sweeper.trainer.objectives import keyed_generator

# generator streams, beside sweeper.trainer.objectives' (1: mdm training, 2: evaluation, 5: ar input masks)
ORDERS_STREAM = 3
ORDER_CHOICE_STREAM = 4


@functools.lru_cache(maxsize=8)
def ordering_table(seed: int, orderings: int, length: int) -> torch.Tensor:
    """(orderings, length) int64: row 0 is 0..length-1, rows 1.. are random permutations of it, a
    pure function of the seed. Read only; callers index it."""
    g = keyed_generator(seed, ORDERS_STREAM)
    rows = [torch.arange(length)] + [torch.randperm(length, generator=g) for _ in range(orderings - 1)]
    return torch.stack(rows)


def training_orders(seed: int, step: int, batch_sequences: int, length: int,
                    orderings: int) -> torch.Tensor:
    """The orderings of optimizer step `step`'s global batch: (batch_sequences, length) int64,
    row i for sequence i of the batch, each row one of `ordering_table`'s chosen uniformly."""
    choice = torch.randint(0, orderings, (batch_sequences,),
                           generator=keyed_generator(seed, ORDER_CHOICE_STREAM, step))
    return ordering_table(seed, orderings, length)[choice]
