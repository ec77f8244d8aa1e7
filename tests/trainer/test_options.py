"""The train options (sweeper.trial.OPTION_DEFAULTS) on fixed inputs, each against a direct
computation of its formula; at their defaults the trainer is what it was before they existed."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sweeper.trainer import train
from sweeper.trainer.loader import ValidationSet
from sweeper.trainer.model import ModelConfig, Transformer
from sweeper.trainer.objectives import family_loss_sums, input_mask, keyed_generator, train_noise
from sweeper.trainer.orderings import ordering_table, training_orders

from .helpers import Recorder, random_tokens, tiny_config

VOCAB, SEQ = 32, 8


def model(orderings: int = 1, causal: bool = True, **changes: float) -> Transformer:
    config = ModelConfig(vocab_size=VOCAB, d_model=32, h_f=64, heads=2, head_dim=16, layers=1, seq_len=SEQ,
                         dropout=0.0, causal=causal, orderings=orderings, **changes)
    m = Transformer(config)
    m.init_weights(std=0.5, seed=3)  # large weights: a far-from-uniform predictor
    return m.eval()


def tokens(batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, SEQ + 1), generator=torch.Generator().manual_seed(seed))


# --- attention dropout --------------------------------------------------------------------------

def test_attention_dropout_defaults_to_dropout() -> None:
    assert tiny_config(dropout=0.3).attention_dropout_rate == 0.3
    assert tiny_config(dropout=0.3, attention_dropout=0.5).attention_dropout_rate == 0.5
    assert ModelConfig.from_trial(tiny_config(dropout=0.3)).attention_dropout == 0.3
    assert model(attention_dropout=0.5).blocks[0].attn.dropout == 0.5


def test_attention_dropout_is_separate_from_hidden_dropout() -> None:
    """Hidden dropout 0 and attention dropout 0.5: training-mode attention is random, each block's
    residual branches are not; attention dropout 0 and hidden 0.5: the reverse."""
    x = torch.randn(2, SEQ, 32, generator=torch.Generator().manual_seed(1))
    cos, sin = model().rope_cos[:SEQ], model().rope_sin[:SEQ]
    attn_only = model(attention_dropout=0.5).train()
    torch.manual_seed(0)
    a = attn_only.blocks[0].attn(x, cos, sin)
    b = attn_only.blocks[0].attn(x, cos, sin)
    assert not torch.equal(a, b)
    hidden_only = Transformer(dataclasses.replace(attn_only.config, dropout=0.5, attention_dropout=0.0)).train()
    hidden_only.load_state_dict(attn_only.state_dict())
    assert torch.equal(hidden_only.blocks[0].attn(x, cos, sin), hidden_only.blocks[0].attn(x, cos, sin))
    assert hidden_only.blocks[0].drop.p == 0.5 and attn_only.blocks[0].drop.p == 0.0


# --- ar input masking -----------------------------------------------------------------------------

def test_input_masking_replaces_inputs_not_targets() -> None:
    m, x = model(), tokens()
    masked = input_mask(seed=1, step=2, batch_sequences=3, seq_len=SEQ, rate=0.5)
    with torch.no_grad():
        sums = family_loss_sums(m, x, masked, None, VOCAB)
        logits = m(torch.where(masked, VOCAB, x[:, :-1]))
    direct = [sum(-float(F.log_softmax(logits[b, i], -1)[x[b, i + 1]]) for i in range(SEQ)) for b in range(3)]
    assert sums.tolist() == pytest.approx(direct, rel=1e-5)
    assert masked.any() and not masked.all()


def test_input_mask_rate_and_keying() -> None:
    rate, seq_len = 0.25, 20_000
    masked = input_mask(seed=0, step=3, batch_sequences=4, seq_len=seq_len, rate=rate)
    realised = masked.float().mean(dim=1)
    assert torch.all((realised - rate).abs() <= 5 * math.sqrt(rate * (1 - rate) / seq_len))
    again = input_mask(seed=0, step=3, batch_sequences=4, seq_len=seq_len, rate=rate)
    assert torch.equal(masked, again)
    assert not torch.equal(masked, input_mask(seed=0, step=4, batch_sequences=4, seq_len=seq_len, rate=rate))


# --- ar on N orderings ----------------------------------------------------------------------------

def test_ordering_table_identity_first_then_fixed_permutations() -> None:
    table = ordering_table(seed=5, orderings=4, length=SEQ + 1)
    assert table.shape == (4, SEQ + 1) and torch.equal(table[0], torch.arange(SEQ + 1))
    for row in table:
        assert sorted(row.tolist()) == list(range(SEQ + 1))
    assert len({tuple(row.tolist()) for row in table}) == 4
    assert torch.equal(table, ordering_table(seed=5, orderings=4, length=SEQ + 1))
    assert not torch.equal(table, ordering_table(seed=6, orderings=4, length=SEQ + 1))
    orders = training_orders(seed=5, step=7, batch_sequences=64, length=SEQ + 1, orderings=4)
    rows = {tuple(row.tolist()) for row in table}
    assert all(tuple(row.tolist()) in rows for row in orders) and len({tuple(r.tolist()) for r in orders}) == 4


def test_rope_reads_original_positions() -> None:
    """A bidirectional model given each token's original index is permutation-equivariant:
    reading x in order o with positions o gives the logits of x, in order o."""
    m, x = model(causal=False), tokens()[:, :SEQ]
    order = torch.randperm(SEQ, generator=torch.Generator().manual_seed(2)).expand(3, -1)
    with torch.no_grad():
        natural = m(x)
        permuted = m(x.gather(1, order), positions=order)
    torch.testing.assert_close(permuted, natural.gather(1, order[..., None].expand(-1, -1, VOCAB)),
                               rtol=1e-5, atol=1e-5)


def test_queries_rotate_by_the_position_to_predict() -> None:
    """Several orderings: attention with keys rotated by their tokens' original positions o_j and
    queries by the position each step predicts, o_{i+1}; computed here directly."""
    m = model(orderings=4)
    attn = m.blocks[0].attn
    x = torch.randn(1, SEQ, 32, generator=torch.Generator().manual_seed(4))
    order = ordering_table(seed=1, orderings=4, length=SEQ + 1)[2]
    positions, targets = order[:-1], order[1:]
    with torch.no_grad():
        q, k, v = attn.qkv(x).view(1, SEQ, 3, 2, 16).permute(2, 0, 3, 1, 4)
        q = torch.cat([q[..., :8] * m.rope_cos[targets, :8] - q[..., 8:] * m.rope_sin[targets, 8:],
                       q[..., 8:] * m.rope_cos[targets, 8:] + q[..., :8] * m.rope_sin[targets, 8:]], dim=-1)
        k = torch.cat([k[..., :8] * m.rope_cos[positions, :8] - k[..., 8:] * m.rope_sin[positions, 8:],
                       k[..., 8:] * m.rope_cos[positions, 8:] + k[..., :8] * m.rope_sin[positions, 8:]], dim=-1)
        scores = (q @ k.transpose(-1, -2)) / 4.0 + torch.full((SEQ, SEQ), -math.inf).triu(1)
        direct = attn.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(1, SEQ, 32))
        module = attn(x, *m._rotary(positions[None]), m._rotary(targets[None]))
    torch.testing.assert_close(module, direct, rtol=1e-5, atol=1e-6)
    # only offsets count: shifting every position by the same amount changes nothing
    x_tokens = tokens(1)[:, :SEQ]
    with torch.no_grad():
        a = m(x_tokens, positions=torch.arange(SEQ)[None], next_positions=torch.arange(1, SEQ + 1)[None])
        b = m(x_tokens)
    assert torch.equal(a, b)


def test_a_sequence_read_in_another_order() -> None:
    """Loss in order o: Σ_i CE(model(x[o_0..o_{L-1}], positions o_0.., next positions o_1..), x[o_{i+1}])."""
    m, x = model(orderings=4), tokens()
    order = ordering_table(seed=1, orderings=4, length=SEQ + 1)[1:4]  # three non-identity orders
    with torch.no_grad():
        sums = family_loss_sums(m, x, None, None, VOCAB, order)
        direct = []
        for b in range(3):
            o = order[b]
            logits = m(x[b, o[:-1]][None], positions=o[None, :-1], next_positions=o[None, 1:])[0]
            direct.append(sum(-float(F.log_softmax(logits[i], -1)[x[b, o[i + 1]]]) for i in range(SEQ)))
    assert sums.tolist() == pytest.approx(direct, rel=1e-5)


def test_one_ordering_is_plain_ar_exactly() -> None:
    """N = 1 reads the identity order as plain ar does, bit for bit (queries rotated by their own
    positions); N > 1 has the same parameters, drawn alike, and differs in the queries' rotation."""
    plain, x = model(), tokens()
    identity = torch.arange(SEQ + 1).expand(3, -1)
    with torch.no_grad():
        assert torch.equal(family_loss_sums(plain, x, None, None, VOCAB, identity),
                           family_loss_sums(plain, x, None, None, VOCAB))
        several = model(orderings=4)
        assert all(torch.equal(a, b) for a, b in zip(several.state_dict().values(), plain.state_dict().values()))
        assert not torch.allclose(several(x[:, :-1]), plain(x[:, :-1]))
    train_tokens, val_tokens = random_tokens(4096, 64, 1), random_tokens(1024, 64, 2)
    curves = []
    for config in (tiny_config(steps=4, eval_steps=(0, 4)), tiny_config(steps=4, eval_steps=(0, 4), orderings=1)):
        recorder = Recorder()
        train(config, train_tokens, val_tokens, recorder)
        curves.append(recorder.curve())
    assert curves[0] == curves[1]


def test_validation_reads_the_natural_order() -> None:
    """ar on several orderings validates as plain ar: mean CE of x[i+1] given x[..i], each query
    rotated by the position it predicts, i+1."""
    config = tiny_config(orderings=4, steps=4, eval_steps=(0, 4))
    val_tokens = random_tokens(1024, 64, 2)
    recorder = Recorder()
    train(config, random_tokens(4096, 64, 1), val_tokens, recorder, max_steps=0)
    m = Transformer(ModelConfig.from_trial(config))
    m.init_weights(config.init_std, config.seed)
    m.eval()
    val = ValidationSet(val_tokens, config.seq_len)
    _, samples = next(val.batches(val.num_samples, 0, 1))
    x = torch.from_numpy(samples)
    with torch.no_grad():
        logits = m(x[:, :-1], next_positions=torch.arange(1, config.seq_len + 1))
        direct = F.cross_entropy(logits.reshape(-1, 64), x[:, 1:].reshape(-1)).item()
    assert recorder.metrics[0]["val/loss"] == pytest.approx(direct, rel=1e-5)


# --- mdm options ----------------------------------------------------------------------------------

def test_min_mask_rate_and_iid_t() -> None:
    """iid: t ~ U(0,1) from the step's generator, p = (1 - m)·t + m, as before the option."""
    p, _ = train_noise(seed=3, step=4, batch_sequences=6, seq_len=SEQ, min_mask_rate=0.1)
    t = torch.rand((6,), generator=keyed_generator(3, 1, 4))
    assert p.tolist() == pytest.approx(((1 - 0.1) * t + 0.1).tolist())
    default, _ = train_noise(seed=3, step=4, batch_sequences=6, seq_len=SEQ)
    assert default.tolist() == pytest.approx(((1 - 1e-3) * t + 1e-3).tolist())


def test_stratified_t_has_one_draw_per_stratum_of_the_batch() -> None:
    batch = 16
    p, _ = train_noise(seed=3, step=4, batch_sequences=batch, seq_len=SEQ, t_sampling="stratified")
    t = ((p - 1e-3) / (1 - 1e-3)).sort().values
    for k in range(batch):
        assert k / batch - 1e-6 <= float(t[k]) < (k + 1) / batch + 1e-6
    iid, _ = train_noise(seed=3, step=4, batch_sequences=batch, seq_len=SEQ)
    assert np.histogram(((iid - 1e-3) / (1 - 1e-3)).numpy(), bins=batch, range=(0, 1))[0].max() > 1


def test_unweighted_mdm_loss_sums_the_masked_cross_entropy() -> None:
    m, x = model(causal=False), tokens()
    masked = torch.rand(3, SEQ, generator=torch.Generator().manual_seed(5)) < 0.5
    masked[:, 0] = True
    with torch.no_grad():
        sums = family_loss_sums(m, x, masked, torch.ones(3), VOCAB)
        log_probs = F.log_softmax(m(torch.where(masked, VOCAB, x[:, :SEQ])), dim=-1)
    direct = [sum(-float(log_probs[b, i, x[b, i]]) for i in range(SEQ) if masked[b, i]) for b in range(3)]
    assert sums.tolist() == pytest.approx(direct, rel=1e-5)


@pytest.mark.parametrize("option", [{"mdm_loss_weight": "unweighted"}, {"mdm_t_sampling": "stratified"},
                                    {"mdm_min_mask_rate": 0.1}])
def test_mdm_validation_is_the_elbo_whatever_the_training_options(option: dict) -> None:
    """The same weights score the same val/loss: the options change training only."""
    losses = []
    for config in (tiny_config(family="mdm"), tiny_config(family="mdm", **option)):
        recorder = Recorder()
        train(config, random_tokens(4096, 64, 1), random_tokens(1024, 64, 2), recorder, max_steps=0)
        losses.append(recorder.metrics[0]["val/loss"])
    assert losses[0] == losses[1]


def test_options_are_checked_where_the_config_is_made() -> None:
    with pytest.raises(ValueError, match="orderings applies to ar trials only"):
        tiny_config(family="mdm", orderings=2)
    with pytest.raises(ValueError, match="mdm_loss_weight applies to mdm trials only"):
        tiny_config(mdm_loss_weight="unweighted")
    with pytest.raises(ValueError, match=r"input_mask_rate must be in \[0, 1\)"):
        tiny_config(input_mask_rate=1.0)
