"""Both families learn context, and sampling from their checkpoints follows what they learned.

The source is a Markov chain over 32 tokens where each token is followed by a fixed successor
(a random permutation) with probability 0.9 and by a uniform token otherwise: its unigram
distribution is uniform (ln 32 nats), so a model that learned only token frequencies scores about
ln 32, while one that uses its neighbours scores far less.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sweeper.trainer import TrainResult, latest_checkpoint, load_model, sample_ar, sample_mdm, train

from .helpers import Recorder, tiny_config

pytestmark = pytest.mark.slow

VOCAB = 32
SUCCESSOR = np.random.default_rng(123).permutation(VOCAB)


def chain(n: int, seed: int, follow: float = 0.9) -> np.ndarray:
    rng = np.random.default_rng(seed)
    follows, jumps = rng.random(n) < follow, rng.integers(0, VOCAB, n)
    x = np.empty(n, dtype=np.uint16)
    x[0] = 0
    for i in range(1, n):
        x[i] = SUCCESSOR[x[i - 1]] if follows[i] else jumps[i]
    return x


def unigram_entropy(tokens: np.ndarray) -> float:
    freq = np.bincount(tokens, minlength=VOCAB) / len(tokens)
    return float(-(freq[freq > 0] * np.log(freq[freq > 0])).sum())


def follows_successor(x: torch.Tensor) -> float:
    """Fraction of neighbouring pairs (a, b) with b the chain's successor of a."""
    successor = torch.as_tensor(SUCCESSOR)[x[:, :-1]]
    return float((successor == x[:, 1:]).float().mean())


def fit(family: str, steps: int, ckpt: Path) -> tuple[TrainResult, Recorder, np.ndarray]:
    val = chain(8 * 64 + 1, seed=1)
    config = tiny_config(family=family, vocab_size=VOCAB, seq_len=64, steps=steps, warmup_steps=20,
                         eval_steps=(0, steps), lr_peak=5e-3, lr_min=1e-4, batch_sequences=32,
                         micro_batch=32, log_every_steps=100, mdm_eval_samples=8,
                         checkpoint_every_steps=steps)
    rec = Recorder()
    return train(config, chain(200_000, seed=0), val, rec, checkpoint_dir=str(ckpt)), rec, val


@pytest.fixture(scope="module")
def mdm_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, Recorder, np.ndarray, Path]:
    ckpt = tmp_path_factory.mktemp("mdm")
    return (*fit("mdm", 400, ckpt), ckpt)


def test_mdm_learns_context_far_below_the_unigram_entropy(mdm_run) -> None:  # type: ignore[no-untyped-def]
    result, rec, val, _ = mdm_run
    entropy = unigram_entropy(val)
    assert entropy == pytest.approx(math.log(VOCAB), abs=0.1)
    assert rec.metrics[0]["val/loss"] == pytest.approx(math.log(VOCAB), abs=0.2)
    assert result.final_val_loss < 0.45 * entropy  # about 1.1 nats reached here vs 3.4


@pytest.mark.parametrize("order", ["confident", "random"])
def test_mdm_samples_follow_the_learned_chain(mdm_run, order: str) -> None:  # type: ignore[no-untyped-def]
    model, config = load_model(latest_checkpoint(mdm_run[3]))
    assert config.family == "mdm"
    x = sample_mdm(model, [5], num_samples=8, length=48, steps=48, order=order, temperature=0.5, seed=0)
    assert x.shape == (8, 48) and bool((x[:, 0] == 5).all())
    assert bool((x < VOCAB).all())  # every position unmasked, the mask id never emitted
    assert follows_successor(x) > 0.6  # chance: 1/32
    again = sample_mdm(model, [5], num_samples=8, length=48, steps=48, order=order, temperature=0.5, seed=0)
    assert torch.equal(x, again)


def test_ar_greedy_samples_continue_the_chain(tmp_path: Path) -> None:
    result, _, val = fit("ar", 150, tmp_path)
    assert result.final_val_loss < 0.45 * unigram_entropy(val)
    model, _ = load_model(latest_checkpoint(tmp_path))
    x = sample_ar(model, [3, int(SUCCESSOR[3])], num_samples=2, max_new_tokens=80, temperature=0)
    assert x.shape == (2, 82) and follows_successor(x) == 1.0  # 80 > seq_len: the context slides
    sampled = sample_ar(model, [3], num_samples=4, max_new_tokens=20, temperature=1.0, top_k=4, seed=1)
    assert follows_successor(sampled) > 0.6
