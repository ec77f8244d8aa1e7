"""The shared transformer: parameter count, head, attention direction per family, untrained loss."""

from __future__ import annotations

import math

import pytest
import torch

from sweeper.trainer import padded_vocab_size, train
from sweeper.trainer.model import ModelConfig, Transformer, apply_rotary, rotary_tables

from .helpers import Recorder, random_tokens, tiny_config


def build(causal: bool, **changes: object) -> Transformer:
    shape = dict(vocab_size=64, d_model=48, h_f=96, heads=3, head_dim=8, layers=2, seq_len=32,
                 dropout=0.0, causal=causal)
    model = Transformer(ModelConfig(**{**shape, **changes}))  # type: ignore[arg-type]
    model.init_weights(std=0.02, seed=0)
    return model.eval()


def test_parameter_count_matches_the_architecture() -> None:
    # attention width 3 * 8 = 24 differs from d_model 48, as in the small presets
    d, width, h_f, layers, vocab = 48, 24, 96, 2, 64
    per_layer = 4 * d * width + 3 * d * h_f + 2 * d  # q, k, v, out; SwiGLU; two RMSNorm gains
    expected = layers * per_layer + d + padded_vocab_size(vocab) * d  # final norm; tied embedding
    assert build(causal=True).num_params() == expected


def test_head_scores_tokens_only_never_the_mask_id() -> None:
    model = build(causal=False)
    idx = torch.full((2, 5), 64)  # all mask ids
    assert model(idx).shape == (2, 5, 64)


def test_same_seed_same_weights_on_every_build() -> None:
    a, b = build(causal=True), build(causal=True)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    c = Transformer(a.config)
    c.init_weights(std=0.02, seed=1)
    assert not torch.equal(a.embed.weight, c.embed.weight)
    assert float(a.embed.weight.detach().std()) == pytest.approx(0.02, rel=0.05)


def test_residual_outputs_are_initialised_scaled_as_megatron_on_the_140M_preset() -> None:
    from sweeper.spec.presets import PAPER_VOCAB_SIZE, PRESETS

    preset = PRESETS["140M"]  # 15 layers: 0.02 / sqrt(2 * 15) = 0.00365
    model = Transformer(ModelConfig(vocab_size=PAPER_VOCAB_SIZE, d_model=preset.d_model, h_f=preset.h_f,
                                    heads=preset.heads, head_dim=preset.head_dim, layers=preset.layers,
                                    seq_len=64, dropout=0.0, causal=True))
    model.init_weights(std=0.02, seed=0)
    scaled = 0.02 / math.sqrt(2 * preset.layers)
    for name, p in model.named_parameters():
        if p.dim() < 2:
            continue
        expected = scaled if name.endswith(("attn.out.weight", "mlp.down.weight")) else 0.02
        assert float(p.detach().std()) == pytest.approx(expected, rel=0.01), name
    assert float(model.blocks[0].attn.out.weight.detach().std()) == pytest.approx(0.00365, abs=5e-5)


@pytest.mark.parametrize("family", ["ar", "mdm"])
def test_attention_direction(family: str) -> None:
    """ar predictions at position i ignore later tokens; mdm predictions see the whole sequence."""
    model = build(causal=family == "ar")
    idx = torch.randint(0, 64, (1, 32), generator=torch.Generator().manual_seed(0))
    changed = idx.clone()
    changed[0, 20:] = (changed[0, 20:] + 1) % 64
    with torch.no_grad():
        before, after = model(idx), model(changed)
    earlier_differ = not torch.allclose(before[0, :20], after[0, :20], atol=1e-6)
    assert earlier_differ == (family == "mdm")
    assert not torch.allclose(before[0, 20:], after[0, 20:], atol=1e-6)


@pytest.mark.parametrize("family", ["ar", "mdm"])
def test_untrained_model_scores_ln_vocab(family: str) -> None:
    """PAPER.md's sanity check: a near-uniform predictor scores ln V per token under both
    objectives (mdm: Σ_masked CE / p over B·L is unbiased for it)."""
    vocab = 512
    config = tiny_config(family=family, vocab_size=vocab, mdm_eval_samples=32, micro_batch=16)
    recorder = Recorder()
    val_samples = 256  # the mdm estimate's standard deviation here is about 0.03 nats
    train(config, random_tokens(4096, vocab, 0), random_tokens(val_samples * 32 + 1, vocab, 1),
          recorder, max_steps=0)
    first = recorder.metrics[0]
    assert first["tokens"] == 0
    assert first["val/loss"] == pytest.approx(math.log(vocab), abs=0.1)


def test_rotary_embedding_rotates_each_pair_by_position_times_frequency() -> None:
    head_dim, seq_len = 8, 5
    cos, sin = rotary_tables(head_dim, seq_len, base=10_000.0)
    x = torch.randn(1, 1, seq_len, head_dim, generator=torch.Generator().manual_seed(0))
    out = apply_rotary(x, cos, sin)
    half = head_dim // 2
    for t in range(seq_len):
        for i in range(half):  # pair (i, i + half) turns by angle t / base^(2i / head_dim)
            angle = t / 10_000.0 ** (2 * i / head_dim)
            a, b = float(x[0, 0, t, i]), float(x[0, 0, t, i + half])
            assert float(out[0, 0, t, i]) == pytest.approx(a * math.cos(angle) - b * math.sin(angle), abs=1e-5)
            assert float(out[0, 0, t, i + half]) == pytest.approx(b * math.cos(angle) + a * math.sin(angle), abs=1e-5)
    # rotations keep norms, and relative position alone decides q·k
    assert torch.allclose(out.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    q, k = torch.randn(head_dim), torch.randn(head_dim)

    def at(v: torch.Tensor, t: int) -> torch.Tensor:
        return apply_rotary(v.view(1, 1, 1, -1), cos[t:t + 1], sin[t:t + 1]).flatten()

    assert float(at(q, 3) @ at(k, 1)) == pytest.approx(float(at(q, 4) @ at(k, 2)), abs=1e-5)
