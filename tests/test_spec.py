"""Reading specs: sources, tokenizers, defaults, units, extends."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from conftest import MINIMAL
from sweeper.spec import FilesSource, HFSource, SyntheticSource, TrainSpec, load_spec
from sweeper.spec.nodes import parse_bytes, parse_number

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("text, value", [
    ("25M", 25_000_000), ("1.5B", 1_500_000_000), ("100k", 100_000), ("2e18", 2 * 10**18), ("2e-4", Decimal("2e-4")),
    ("1e18", 10**18), ("1_000", 1000), ("0.004M", 4000), ("3T", 3 * 10**12), (7, 7), (2.5, Decimal("2.5")),
])
def test_numbers_with_units(text, value) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["ten", "25 MB", "M", "1e", "", None, True, [1]])
def test_not_numbers(text) -> None:
    assert parse_number(text) is None


@pytest.mark.parametrize("text, value", [("80GB", 80 * 10**9), ("24GiB", 24 * 2**30), ("2MB", 2 * 10**6),
                                         ("512", 512), ("1.5KiB", 1536)])
def test_sizes_in_bytes(text, value) -> None:
    assert parse_bytes(text) == value


def test_paper_defaults() -> None:
    train = TrainSpec()
    assert (train.betas, train.eps, train.weight_decay, train.grad_clip) == ((0.9, 0.95), 1e-8, 0.1, 1.0)
    assert (train.lr_peak, train.lr_min, train.warmup_fraction, train.schedule) == (2e-4, 2e-5, 0.01, "cosine")
    assert (train.dropout, train.init_std, train.precision, train.batch_sequences) == (0.1, 0.02, "bf16", 256)
    assert (train.mdm_eval_samples, train.seed) == (32, 1234)


def test_yaml_exponents_without_a_dot_are_numbers(write_spec) -> None:
    spec = load_spec(write_spec(MINIMAL.replace("batch_sequences: 8", "batch_sequences: 8\n  lr_peak: 3e-4\n  eps: 1e-9")))
    assert (spec.train.lr_peak, spec.train.eps) == (3e-4, 1e-9)


def test_every_source_kind(write_spec) -> None:
    hf = MINIMAL.replace("{kind: synthetic, symbols: 64}",
                         "{kind: hf, dataset: allenai/c4, config: en, split: train, text_field: text}\n"
                         "  validation: {kind: files, paths: ['data/*.jsonl', 's3://b/v.parquet'], format: jsonl}")
    hf = hf.replace("{kind: symbols, vocab_size: 65}", "{kind: pretrained, file: gpt2/tokenizer.json, vocab_size: 50257}")
    spec = load_spec(write_spec(hf))
    assert spec.data.train == HFSource(kind="hf", dataset="allenai/c4", config="en")
    assert spec.data.validation == FilesSource(kind="files", paths=("data/*.jsonl", "s3://b/v.parquet"), format="jsonl")
    assert spec.data.tokenizer.file == "gpt2/tokenizer.json"
    bpe = MINIMAL.replace("{kind: synthetic, symbols: 64}", "{kind: bundled}").replace(
        "{kind: symbols, vocab_size: 65}", "{kind: train_bpe, vocab_size: 2048}")
    spec = load_spec(write_spec(bpe))
    assert spec.data.train.kind == "bundled" and spec.data.tokenizer.train_text_bytes == 64_000_000
    spec = load_spec(write_spec(MINIMAL))
    assert isinstance(spec.data.train, SyntheticSource) and spec.data.validation is None


@pytest.mark.parametrize("tokenizer, message", [
    ("{kind: pretrained, vocab_size: 50257}", "a pretrained tokenizer needs exactly one of `name` (a Hub name) or `file`"),
    ("{kind: train_bpe, vocab_size: 100}", "a byte-level BPE needs vocab_size > 256, got 100"),
    ("{kind: train_bpe, vocab_size: 1000, name: gpt2}", "`name` applies to pretrained tokenizers, not kind train_bpe"),
])
def test_tokenizer_contradictions(write_spec, cli, tokenizer: str, message: str) -> None:
    text = MINIMAL.replace("{kind: synthetic, symbols: 64}", "{kind: bundled}").replace(
        "{kind: symbols, vocab_size: 65}", tokenizer)
    code, _, err = cli("validate", write_spec(text))
    assert code == 2 and err.strip().endswith(message)


def test_extends_shares_data_and_train_blocks() -> None:
    grid, chinchilla = load_spec(REPO / "sweeps" / "grid.yaml"), load_spec(REPO / "sweeps" / "chinchilla.yaml")
    assert chinchilla.data == grid.data and chinchilla.train == grid.train
    assert chinchilla.name == "chinchilla"
    assert [Path(f).name for f in chinchilla.files] == ["chinchilla.yaml", "grid.yaml"]
    assert chinchilla.grid != grid.grid


def test_extends_merges_mappings_and_replaces_lists(write_spec) -> None:
    write_spec(MINIMAL, "base.yaml")
    child = write_spec("extends: base.yaml\nname: child\ntrain: {lr_peak: 1e-3}\ngrid:\n"
                       "  family: ar\n  model: tiny\n  unique_tokens: 8k\n")
    spec = load_spec(child)
    assert (spec.name, spec.train.batch_sequences, spec.train.lr_peak) == ("child", 8, 1e-3)
    assert "tiny" in spec.models and len(spec.grid.blocks) == 1
    assert dict(spec.grid.blocks[0].axes)["family"] == ("ar",)


def test_experiment_defaults_to_the_name(write_spec) -> None:
    assert load_spec(write_spec(MINIMAL)).experiment == "t"
    assert load_spec(write_spec(MINIMAL + "tracking: {experiment: mine}\n")).experiment == "mine"
