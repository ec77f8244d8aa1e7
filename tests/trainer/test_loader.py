"""Sample order: exact epochs, one fresh permutation each, the same global batch at any scale."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sweeper.trainer.loader import SampleStream, ValidationSet, check_token_ids, gather_samples


def test_a_sample_is_seq_len_plus_one_consecutive_tokens() -> None:
    tokens = np.arange(100, dtype=np.uint16)
    samples = gather_samples(tokens, np.array([0, 3]), seq_len=8)
    assert samples.dtype == np.int64
    assert samples[0].tolist() == list(range(0, 9))
    assert samples[1].tolist() == list(range(24, 33))  # sample i starts at i * seq_len


def test_samples_per_epoch_uses_every_token_as_a_target_once() -> None:
    stream = SampleStream(np.zeros(8 * 10 + 1, dtype=np.uint16), seq_len=8, seed=0)
    assert stream.samples_per_epoch == 10
    assert SampleStream(np.zeros(8 * 10, dtype=np.uint16), seq_len=8, seed=0).samples_per_epoch == 9


def test_each_epoch_is_a_fresh_permutation_of_all_samples() -> None:
    stream = SampleStream(np.zeros(1001, dtype=np.uint32), seq_len=10, seed=3)
    n = stream.samples_per_epoch
    ids = stream.sample_ids(0, 3 * n)
    epochs = ids.reshape(3, n)
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(n))  # no sample twice within an epoch
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    again = SampleStream(np.zeros(1001, dtype=np.uint32), seq_len=10, seed=3)
    assert np.array_equal(again.sample_ids(0, 3 * n), ids)  # seeded: the same every run
    other_seed = SampleStream(np.zeros(1001, dtype=np.uint32), seq_len=10, seed=4)
    assert not np.array_equal(other_seed.sample_ids(0, n), ids[:n])


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 40), start=st.integers(0, 200), count=st.integers(0, 120))
def test_any_window_of_the_stream_is_a_slice_of_the_epoch_concatenation(n: int, start: int,
                                                                        count: int) -> None:
    stream = SampleStream(np.zeros(n * 4 + 1, dtype=np.uint16), seq_len=4, seed=1)
    epochs = (start + count) // n + 1
    whole = np.concatenate([stream.permutation(e) for e in range(epochs)])
    assert np.array_equal(stream.sample_ids(start, count), whole[start:start + count])


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_any_number_of_processes_sees_the_same_global_batch(world_size: int) -> None:
    batch, micro = 16, 2
    stream = SampleStream(np.arange(64 * 8 + 1, dtype=np.uint32), seq_len=8, seed=0)
    step = 5
    chunks = batch // micro
    seen = {}
    for rank in range(world_size):
        for a in range(chunks // world_size):
            chunk = a * world_size + rank  # the loop's assignment of chunks to processes
            seen[chunk] = stream.micro_batch(step, chunk, batch, micro)
    together = np.concatenate([seen[k] for k in range(chunks)])
    expected = gather_samples(stream.tokens, stream.sample_ids(step * batch, batch), 8)
    assert np.array_equal(together, expected)


def test_fractional_epoch_accounting() -> None:
    stream = SampleStream(np.zeros(10 * 4 + 1, dtype=np.uint16), seq_len=4, seed=0)
    assert stream.epoch_at(25) == 2.5


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_validation_covers_every_sample_once_in_fixed_order(world_size: int) -> None:
    val = ValidationSet(np.arange(10 * 8 + 5, dtype=np.uint16), seq_len=8)
    assert val.num_samples == 10
    ids = np.concatenate([i for r in range(world_size) for i, _ in val.batches(3, r, world_size)])
    assert sorted(ids.tolist()) == list(range(10))
    first_ids, first_tokens = next(val.batches(3, 0, 1))
    assert first_ids.tolist() == [0, 1, 2] and first_tokens[1, 0] == 8


def test_rejects_token_ids_the_model_cannot_embed() -> None:
    with pytest.raises(ValueError, match="fix vocab_size in the spec or re-tokenize"):
        check_token_ids(np.array([1, 2, 64], dtype=np.uint16), vocab_size=64, what="the pool")
    with pytest.raises(ValueError, match="fewer than one sample"):
        SampleStream(np.zeros(8, dtype=np.uint16), seq_len=8, seed=0)
