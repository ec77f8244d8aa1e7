"""The model presets reproduce PAPER.md's parameter counts."""

from __future__ import annotations

import pytest

from sweeper.spec.presets import PRESETS, ModelSpec, num_params, num_params_actual, swiglu_hidden
from sweeper.trial import padded_vocab_size as padded_vocab

# PAPER.md "Model presets": name -> N in millions, as published.
PUBLISHED_N_MILLIONS = {
    "7M": 7.0, "14M": 13.6, "20M": 19.5, "35M": 36.6, "44M": 50.7, "57M": 64.8, "74M": 80.5, "90M": 95.0,
    "106M": 109.6, "117M": 123.6, "140M": 144.8, "163M": 166.1, "175M": 179.2, "196M": 198.3, "217M": 217.5,
    "251M": 250.8, "278M": 275.7, "306M": 300.6, "425M": 416.9, "489M": 475.6, "509M": 495.9, "552M": 534.4,
    "587M": 566.7, "632M": 615.3, "664M": 637.6, "724M": 700.3, "816M": 785.2, "893M": 856.4, "1018M": 971.3,
    "1143M": 1086.3, "1266M": 1207.6, "1424M": 1353.6, "1593M": 1508.9, "2007M": 1899.8, "2283M": 2154.7,
    "2639M": 2478.6,
}


def test_every_published_preset_is_built_in() -> None:
    assert list(PRESETS) == list(PUBLISHED_N_MILLIONS)


@pytest.mark.parametrize("name", list(PUBLISHED_N_MILLIONS))
def test_formula_matches_the_paper_within_half_a_percent(name: str) -> None:
    n = num_params(PRESETS[name], 50257) / 1e6
    assert n == pytest.approx(PUBLISHED_N_MILLIONS[name], rel=0.005)


@pytest.mark.parametrize("name", list(PUBLISHED_N_MILLIONS))
def test_swiglu_width_follows_the_papers_rule(name: str) -> None:
    assert PRESETS[name].h_f == swiglu_hidden(PRESETS[name].d_model)


def test_attention_width_can_differ_from_d_model() -> None:
    preset = PRESETS["20M"]
    assert (preset.d_model, preset.attention_width) == (288, 224)
    # q, k, v, o at 224 wide instead of 288 make the real model smaller than the bookkeeping N.
    assert num_params_actual(preset, 50257) < num_params(preset, 50257)


def test_padded_vocab_leaves_room_for_the_mask_token() -> None:
    assert padded_vocab(50257) == 50304
    assert padded_vocab(50303) == 50304
    assert padded_vocab(50304) == 50432  # 50304 itself is the mask id, so one more row is needed
    assert padded_vocab(64) == 128


def test_defaults_for_custom_models() -> None:
    model = ModelSpec(name="x", d_model=96, layers=2, heads=3)
    assert (model.head_dim, model.h_f) == (32, 256)
