"""Samples from a packed token array, in the order the whole trial consumes them.

A sample is seq_len + 1 consecutive tokens: sample i = tokens[i·L : i·L + L + 1] (neighbouring
samples share one boundary token, so every token is a target once per epoch). Training draws
samples from an endless stream: epoch e is a permutation of all samples seeded by (seed, e), and
the stream is epoch 0, then epoch 1, ... The position in that stream (samples consumed) is the
whole loader state, so a resume needs one integer. Optimizer step s takes stream positions
[s·B, (s+1)·B) and cuts them into micro-batch chunks; chunk k belongs to process k mod world at
accumulation index k div world, so any number of processes sees the same global batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def samples_in(tokens: np.ndarray, seq_len: int) -> int:
    return (len(tokens) - 1) // seq_len


def gather_samples(tokens: np.ndarray, sample_ids: np.ndarray, seq_len: int) -> np.ndarray:
    """-> (n, seq_len + 1) int64. Fancy indexing reads only those rows of a memmap."""
    offsets = sample_ids[:, None].astype(np.int64) * seq_len + np.arange(seq_len + 1)
    return np.asarray(tokens[offsets], dtype=np.int64)


def check_token_ids(tokens: np.ndarray, vocab_size: int, what: str) -> None:
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"{what} must be a 1-D integer array, got {tokens.dtype} of shape {tokens.shape}")
    if len(tokens) and int(tokens.max()) >= vocab_size:
        raise ValueError(f"{what} holds token id {int(tokens.max())} >= vocab_size={vocab_size}: the "
                         "tokenizer and the config disagree; fix vocab_size in the spec or re-tokenize")


class SampleStream:
    """The trial's training samples as one endless, epoch-by-epoch permuted stream."""

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int) -> None:
        self.tokens, self.seq_len, self.seed = tokens, seq_len, seed
        self.samples_per_epoch = samples_in(tokens, seq_len)
        if self.samples_per_epoch < 1:
            raise ValueError(f"the training pool holds {len(tokens)} tokens, fewer than one sample of "
                             f"seq_len + 1 = {seq_len + 1}: use more unique tokens or a shorter seq_len")
        self._cached: tuple[int, np.ndarray] | None = None

    def permutation(self, epoch: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._cached = (epoch, rng.permutation(self.samples_per_epoch))
        return self._cached[1]

    def sample_ids(self, start: int, count: int) -> np.ndarray:
        """Sample ids at stream positions [start, start + count), crossing epochs as needed."""
        out = np.empty(count, dtype=np.int64)
        done = 0
        while done < count:
            epoch, offset = divmod(start + done, self.samples_per_epoch)
            take = min(count - done, self.samples_per_epoch - offset)
            out[done:done + take] = self.permutation(epoch)[offset:offset + take]
            done += take
        return out

    def micro_batch(self, step: int, chunk: int, batch_sequences: int, micro_batch: int) -> np.ndarray:
        """Tokens of chunk `chunk` of optimizer step `step`: (micro_batch, seq_len + 1) int64."""
        start = step * batch_sequences + chunk * micro_batch
        return gather_samples(self.tokens, self.sample_ids(start, micro_batch), self.seq_len)

    def epoch_at(self, samples_consumed: int) -> float:
        return samples_consumed / self.samples_per_epoch


class ValidationSet:
    """The validation array cut into non-overlapping samples the same way, in fixed order."""

    def __init__(self, tokens: np.ndarray, seq_len: int) -> None:
        self.tokens, self.seq_len = tokens, seq_len
        self.num_samples = samples_in(tokens, seq_len)
        if self.num_samples < 1:
            raise ValueError(f"the validation set holds {len(tokens)} tokens, fewer than one sample "
                             f"of seq_len + 1 = {seq_len + 1}: supply a longer validation set")

    def batches(self, batch: int, rank: int, world_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(sample ids (b,), tokens (b, seq_len + 1)) for this process's share, batch by batch."""
        starts = range(0, self.num_samples, batch)
        for j, start in enumerate(starts):
            if j % world_size == rank:
                ids = np.arange(start, min(start + batch, self.num_samples))
                yield ids, gather_samples(self.tokens, ids, self.seq_len)


def to_device(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)  # overlaps the copy with compute
    return t
