"""The two objectives, checked against the formulas of PAPER.md computed directly."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from sweeper.trainer.model import ModelConfig, Transformer
from sweeper.trainer.objectives import (
    MIN_MASK_RATE,
    eval_noise,
    family_loss_sums,
    mask_rate,
    train_noise,
)

VOCAB, SEQ = 32, 16


@pytest.fixture(scope="module")
def model() -> Transformer:
    m = Transformer(ModelConfig(vocab_size=VOCAB, d_model=32, h_f=64, heads=2, head_dim=16, layers=1,
                                seq_len=SEQ, dropout=0.0, causal=False))
    m.init_weights(std=0.5, seed=3)  # large weights: a far-from-uniform predictor
    return m.eval()


def test_mdm_loss_equals_the_formula(model: Transformer) -> None:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (3, SEQ + 1), generator=g)
    p = torch.tensor([0.1, 0.5, 0.9])
    masked = torch.rand(3, SEQ, generator=g) < p[:, None]
    masked[0, 0] = True  # at least one masked token in every row
    with torch.no_grad():
        loss = family_loss_sums(model, tokens, masked, p, VOCAB).sum() / (3 * SEQ)

    x0 = tokens[:, :SEQ]
    with torch.no_grad():
        log_probs = F.log_softmax(model(torch.where(masked, VOCAB, x0)), dim=-1)
    direct = 0.0
    for b in range(3):
        for i in range(SEQ):
            if masked[b, i]:
                direct += -float(log_probs[b, i, x0[b, i]]) / float(p[b])
    direct /= 3 * SEQ  # all positions, not the masked count
    assert float(loss) == pytest.approx(direct, rel=1e-5)
    by_masked_count = direct * 3 * SEQ / int(masked.sum())
    assert float(loss) != pytest.approx(by_masked_count, rel=1e-3)


def test_mdm_scores_only_masked_positions(model: Transformer) -> None:
    """The selected logits are the full logits' masked rows; an unmasked sequence sums to 0."""
    g = torch.Generator().manual_seed(4)
    tokens = torch.randint(0, VOCAB, (3, SEQ + 1), generator=g)
    masked = torch.rand(3, SEQ, generator=g) < 0.5
    masked[1] = False
    p = torch.tensor([0.5, 0.5, 0.5])
    inputs = torch.where(masked, VOCAB, tokens[:, :SEQ])
    with torch.no_grad():
        full = model(inputs)  # (3, SEQ, V)
        selected = model(inputs, select=masked)  # (M, V)
        sums = family_loss_sums(model, tokens, masked, p, VOCAB)
    assert selected.shape == (int(masked.sum()), VOCAB)
    torch.testing.assert_close(selected, full[masked], rtol=1e-5, atol=1e-5)
    assert float(sums[1]) == 0.0 and float(sums[0]) > 0.0


def test_ar_loss_is_mean_next_token_cross_entropy(model: Transformer) -> None:
    causal = Transformer(dataclasses.replace(model.config, causal=True))
    causal.load_state_dict(model.state_dict())
    tokens = torch.randint(0, VOCAB, (2, SEQ + 1), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        loss = family_loss_sums(causal, tokens, None, None, VOCAB).sum() / (2 * SEQ)
        expected = F.cross_entropy(causal(tokens[:, :-1]).reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


def test_mask_rate_formula() -> None:
    t = torch.tensor([0.0, 0.5, 1.0])
    assert mask_rate(t).tolist() == pytest.approx([MIN_MASK_RATE, 0.5 * (1 - 1e-3) + 1e-3, 1.0])


def test_realised_mask_rate_tracks_p() -> None:
    seq_len = 20_000
    p, masked = train_noise(seed=0, step=3, batch_sequences=32, seq_len=seq_len)
    assert p.min() >= MIN_MASK_RATE and p.max() <= 1.0
    realised = masked.float().mean(dim=1)
    tolerance = 5 * torch.sqrt(p * (1 - p) / seq_len) + 1e-4  # 5 binomial standard deviations
    assert torch.all((realised - p).abs() <= tolerance)
    assert float(torch.corrcoef(torch.stack([p, realised]))[0, 1]) > 0.999


def test_training_noise_is_a_function_of_seed_and_step() -> None:
    a = train_noise(seed=0, step=5, batch_sequences=4, seq_len=8)
    b = train_noise(seed=0, step=5, batch_sequences=4, seq_len=8)
    c = train_noise(seed=0, step=6, batch_sequences=4, seq_len=8)
    d = train_noise(seed=1, step=5, batch_sequences=4, seq_len=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], d[0])


def test_evaluation_draws_are_stratified_and_repeatable() -> None:
    num_mc = 8
    p, masked = eval_noise(sample_index=11, num_mc=num_mc, seq_len=SEQ)
    t = (p - MIN_MASK_RATE) / (1 - MIN_MASK_RATE)
    for j in range(num_mc):  # one draw in each stratum [j/n, (j+1)/n)
        assert j / num_mc - 1e-6 <= float(t[j]) < (j + 1) / num_mc + 1e-6
    again = eval_noise(sample_index=11, num_mc=num_mc, seq_len=SEQ)
    assert torch.equal(p, again[0]) and torch.equal(masked, again[1])
    assert not torch.equal(p, eval_noise(sample_index=12, num_mc=num_mc, seq_len=SEQ)[0])


def test_uniform_predictor_scores_ln_vocab_under_mdm() -> None:
    """Σ_masked CE / p over all positions is unbiased: a uniform predictor averages ln V.
    (1/p makes single draws heavy-tailed at small t, hence many long sequences here.)"""
    seq_len, num_mc, samples = 256, 32, 1000

    def uniform(inputs: torch.Tensor, select: torch.Tensor) -> torch.Tensor:  # the paper's sanity check
        return torch.zeros(int(select.sum()), VOCAB)

    tokens = torch.randint(0, VOCAB, (1, seq_len + 1)).expand(num_mc, -1)
    total = 0.0
    for sample in range(samples):
        p, masked = eval_noise(sample_index=sample, num_mc=num_mc, seq_len=seq_len)
        total += float(family_loss_sums(uniform, tokens, masked, p, VOCAB).sum()) / (num_mc * seq_len)
    assert total / samples == pytest.approx(math.log(VOCAB), rel=0.01)  # ~10 standard deviations
