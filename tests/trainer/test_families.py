"""The dual and bd3lm families on fixed inputs: each objective against a direct computation of its
formula, and the limits that tie them to ar and mdm (sweeper.trainer.objectives)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from .helpers import Recorder, random_tokens, tiny_config
from sweeper.trainer import train
from sweeper.trainer.model import ModelConfig, Transformer
from sweeper.trainer.objectives import (
    block_diffusion_mask,
    block_loss_sums,
    dual_choice,
    dual_loss_sums,
    eval_noise,
    family_loss_sums,
    masked_loss_sums,
    train_noise,
)
from sweeper.trainer.sample import block_causal_mask, sample_ar, sample_bd3lm, sample_mdm

VOCAB, SEQ = 32, 16


@pytest.fixture(scope="module")
def model() -> Transformer:
    m = Transformer(ModelConfig(vocab_size=VOCAB, d_model=32, h_f=64, heads=2, head_dim=16, layers=2,
                                seq_len=SEQ, dropout=0.0, causal=False))
    m.init_weights(std=0.5, seed=3)  # large weights: a far-from-uniform predictor
    return m.eval()


def _tokens(batch: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, SEQ + 1), generator=torch.Generator().manual_seed(seed))


def test_block_diffusion_mask_is_the_three_parts() -> None:
    mask = block_diffusion_mask(4, 2)
    expected = torch.tensor([[1, 1, 0, 0, 0, 0, 0, 0],   # noisy block 0: itself only
                             [1, 1, 0, 0, 0, 0, 0, 0],
                             [0, 0, 1, 1, 1, 1, 0, 0],   # noisy block 1: itself and clean block 0
                             [0, 0, 1, 1, 1, 1, 0, 0],
                             [0, 0, 0, 0, 1, 1, 0, 0],   # clean block 0: clean block 0
                             [0, 0, 0, 0, 1, 1, 0, 0],
                             [0, 0, 0, 0, 1, 1, 1, 1],   # clean block 1: clean blocks 0 and 1
                             [0, 0, 0, 0, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("block_size", [1, 4, 8])
def test_bd3lm_loss_is_the_sum_of_block_elbos(model: Transformer, block_size: int) -> None:
    """Σ_b Σ_{masked i in b} CE(x_i | x_t^b, x^{<b}) / p_b over B·L, each block scored by its own pass
    over the clean blocks before it and the noisy block (block-causal attention)."""
    tokens = _tokens(3, 0)
    p, masked = train_noise(seed=5, step=2, batch_sequences=3, seq_len=SEQ, block_size=block_size)
    masked[:, 0] = True
    x0 = tokens[:, :SEQ]
    with torch.no_grad():
        loss = block_loss_sums(model, x0, masked, p, VOCAB, block_size).sum() / (3 * SEQ)
        direct = 0.0
        for b in range(3):
            for start in range(0, SEQ, block_size):
                end = start + block_size
                seen = torch.cat((x0[b, :start], torch.where(masked[b, start:end], VOCAB, x0[b, start:end])))
                logits = model(seen[None], attention_mask=block_causal_mask(end, block_size))[0]
                for i in range(start, end):
                    if masked[b, i]:
                        direct += float(F.cross_entropy(logits[i], x0[b, i])) / float(p[b, i])
    assert float(loss) == pytest.approx(direct / (3 * SEQ), rel=1e-5)


def test_bd3lm_draws_one_t_per_block() -> None:
    p, _ = train_noise(seed=1, step=0, batch_sequences=4, seq_len=SEQ, block_size=4)
    assert p.shape == (4, SEQ)
    blocks = p.view(4, SEQ // 4, 4)
    assert torch.equal(blocks, blocks[..., :1].expand_as(blocks))  # constant inside a block
    assert len(torch.unique(p)) == 4 * SEQ // 4  # independent across blocks and sequences
    pe, me = eval_noise(7, 4, SEQ, block_size=4)
    assert pe.shape == me.shape == (4, SEQ)
    strata = pe[:, ::4]  # draw j of every block lies in stratum j
    assert ((strata >= torch.arange(4)[:, None] / 4 - 1e-6) & (strata <= (torch.arange(4)[:, None] + 1) / 4)).all()


def test_bd3lm_with_one_block_is_mdm(model: Transformer) -> None:
    """block_size = seq_len: the same noise as mdm's, and the same loss (the clean half is never read)."""
    p, masked = train_noise(seed=5, step=3, batch_sequences=3, seq_len=SEQ, block_size=SEQ)
    p_mdm, masked_mdm = train_noise(seed=5, step=3, batch_sequences=3, seq_len=SEQ)
    assert torch.equal(p, p_mdm) and torch.equal(masked, masked_mdm)
    for j, (pe, me) in enumerate([eval_noise(9, 4, SEQ, block_size=SEQ)]):
        p9, m9 = eval_noise(9, 4, SEQ)
        assert torch.equal(pe, p9) and torch.equal(me, m9), j
    x0 = _tokens(3, 1)[:, :SEQ]
    with torch.no_grad():
        bd = block_loss_sums(model, x0, masked, p, VOCAB, SEQ)
        mdm = masked_loss_sums(model, x0, masked, p, VOCAB)
    torch.testing.assert_close(bd, mdm, rtol=1e-5, atol=1e-5)


def _chain_rule_sums(model: Transformer, x0: torch.Tensor) -> torch.Tensor:
    """ar's loss read off a mask token: Σ_i CE(x_i | x_{<i}), the model reading x_{<i} and a mask id at
    position i causally, one pass per position; (B,)."""
    sums = torch.zeros(x0.shape[0])
    for i in range(x0.shape[1]):
        inputs = torch.cat((x0[:, :i], torch.full((x0.shape[0], 1), VOCAB)), dim=1)
        logits = model(inputs, causal=True)[:, -1]
        sums += F.cross_entropy(logits, x0[:, i], reduction="none")
    return sums


def test_bd3lm_with_unit_blocks_is_ar_when_every_position_is_masked(model: Transformer) -> None:
    x0 = _tokens(2, 2)[:, :SEQ]
    every = torch.ones(2, SEQ, dtype=torch.bool)
    with torch.no_grad():
        bd = block_loss_sums(model, x0, every, torch.ones(2, SEQ), VOCAB, 1)
        chain = _chain_rule_sums(model, x0)
    torch.testing.assert_close(bd, chain, rtol=1e-5, atol=1e-5)


def test_bd3lm_with_unit_blocks_matches_ar_in_expectation_over_t(model: Transformer) -> None:
    """Each masked token's CE is the p = 1 one, weighted 1/p: every draw is Σ_{masked} CE_i / p_i
    exactly, and over many draws of t its mean is ar's chain rule."""
    draws = 4000
    x0 = _tokens(1, 3)[:, :SEQ].expand(draws, SEQ)
    p, masked = train_noise(seed=11, step=0, batch_sequences=draws, seq_len=SEQ, block_size=1)
    with torch.no_grad():
        per_token = F.cross_entropy(  # CE_i with every position masked, (SEQ,)
            block_loss_sums_per_token(model, x0[:1]), x0[0], reduction="none")
        bd = block_loss_sums(model, x0, masked, p, VOCAB, 1)
    exact = (masked.float() * per_token / p).sum(dim=1)
    torch.testing.assert_close(bd, exact, rtol=1e-4, atol=1e-4)
    assert float(bd.mean()) == pytest.approx(float(per_token.sum()), rel=0.06)


def block_loss_sums_per_token(model: Transformer, x0: torch.Tensor) -> torch.Tensor:
    """The logits of every position of one sequence with all of them masked, block size 1: (L, V)."""
    L = x0.shape[1]
    inputs = torch.cat((torch.full_like(x0, VOCAB), x0), dim=1)
    return model(inputs, positions=torch.arange(L).repeat(2), attention_mask=block_diffusion_mask(L, 1))[0, :L]


def test_dual_loss_mixes_ar_and_mdm_sequences(model: Transformer) -> None:
    """ar sequences: next-token CE under causal attention; mdm ones: Σ_masked CE / p, bidirectional."""
    tokens = _tokens(4, 4)
    p, masked = train_noise(seed=2, step=1, batch_sequences=4, seq_len=SEQ)
    is_ar = torch.tensor([True, False, True, False])
    causal = Transformer(dataclasses.replace(model.config, causal=True))
    causal.load_state_dict(model.state_dict())
    causal.eval()
    with torch.no_grad():
        sums = dual_loss_sums(model, tokens, masked, p, is_ar, VOCAB)
        ar = family_loss_sums(causal, tokens, None, None, VOCAB)
        mdm = family_loss_sums(model, tokens, masked, p, VOCAB)
    torch.testing.assert_close(sums, torch.where(is_ar, ar, mdm), rtol=1e-5, atol=1e-5)


def test_dual_choice_follows_the_fraction() -> None:
    assert not dual_choice(1, 2, 64, 0.0).any() and dual_choice(1, 2, 64, 1.0).all()
    assert 0.15 < float(dual_choice(1, 2, 4096, 0.25).float().mean()) < 0.35
    assert torch.equal(dual_choice(1, 2, 64, 0.5), dual_choice(1, 2, 64, 0.5))


def _curve(config, tokens: np.ndarray, val: np.ndarray, *keys: str) -> list[tuple[float | None, ...]]:
    recorder = Recorder()
    train(config, tokens, val, recorder)
    return recorder.curve(*keys)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return random_tokens(8_192, 64, seed=1), random_tokens(1_024, 64, seed=2)


KEYS = ("tokens", "train/loss", "val/loss", "grad_norm")


def test_dual_at_the_ends_trains_as_ar_and_as_mdm(data: tuple[np.ndarray, np.ndarray]) -> None:
    short = dict(steps=6, eval_steps=(0, 3, 6), warmup_steps=1, log_every_steps=3)
    ar = _curve(tiny_config(family="ar", **short), *data, *KEYS)
    assert _curve(tiny_config(family="dual", ar_fraction=1.0, **short), *data, *KEYS) == ar
    mdm = _curve(tiny_config(family="mdm", **short), *data, *KEYS)
    assert _curve(tiny_config(family="dual", ar_fraction=0.0, dual_val_loss="mdm", **short), *data, *KEYS) == mdm


def test_dual_reports_both_validation_losses(data: tuple[np.ndarray, np.ndarray]) -> None:
    short = dict(steps=4, eval_steps=(0, 4), warmup_steps=1, log_every_steps=2)
    for named in ("ar", "mdm"):
        curve = _curve(tiny_config(family="dual", dual_val_loss=named, **short), *data,
                       "val/loss", "val/loss_ar", "val/loss_mdm")
        evaluated = [point for point in curve if point[0] is not None]
        assert len(evaluated) == 2
        for loss, loss_ar, loss_mdm in evaluated:
            assert loss == (loss_ar if named == "ar" else loss_mdm) and loss_ar != loss_mdm


def test_bd3lm_with_one_block_trains_as_mdm(data: tuple[np.ndarray, np.ndarray]) -> None:
    short = dict(steps=4, eval_steps=(0, 2, 4), warmup_steps=1, log_every_steps=2)
    mdm = _curve(tiny_config(family="mdm", **short), *data, *KEYS)
    bd = _curve(tiny_config(family="bd3lm", block_size=32, **short), *data, *KEYS, "flops_processed")
    for a, b in zip(mdm, bd, strict=True):
        assert a[0] == b[0]
        assert b[-1] == 2 * 6 * 100_000 * b[0]  # 2L tokens a sequence: twice the paper's 6ND
        for x, y in zip(a[1:], b[1:-1], strict=True):
            assert (x is None) == (y is None) and (x is None or y == pytest.approx(x, rel=1e-4))


def test_samples_hold_no_mask_token(model: Transformer) -> None:
    for block_size in (1, 4, 5, SEQ):
        ids = sample_bd3lm(model, block_size, [3, 4], num_samples=2, length=SEQ, steps=3, seed=1)
        assert ids.shape == (2, SEQ) and not (ids == VOCAB).any() and ids[:, :2].tolist() == [[3, 4]] * 2
    for order in ("confident", "random"):
        assert not (sample_mdm(model, None, num_samples=2, steps=5, order=order) == VOCAB).any()
    ids = sample_ar(model, [1], num_samples=2, max_new_tokens=SEQ)  # a dual model, read causally
    assert ids.shape == (2, SEQ + 1) and not (ids == VOCAB).any()
