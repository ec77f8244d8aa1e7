"""Shared helpers: write a spec into a temporary folder, run the CLI in-process."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sweeper.cli import main

REPO = Path(__file__).resolve().parent.parent
SMOKE_SPEC = REPO / "tests" / "specs" / "smoke.yaml"
LOCAL_PROFILE = REPO / "backends" / "local.yaml"

MINIMAL = """\
version: 1
name: t
data:
  train: {kind: synthetic, symbols: 64}
  tokenizer: {kind: symbols, vocab_size: 65}
  seq_len: 16
  validation_tokens: 1024
train:
  batch_sequences: 8
models:
  tiny: {d_model: 32, layers: 1, heads: 2, h_f: 64}
grid:
  family: [ar, mdm]
  model: tiny
  unique_tokens: 4k
  epochs: [1, 2]
"""


@pytest.fixture
def write_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """write_spec(text, name="spec.yaml") -> path; the working folder is the temporary folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "backends").mkdir()
    (tmp_path / "backends" / "local.yaml").write_text(LOCAL_PROFILE.read_text())

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """cli(*args) -> (exit code, stdout, stderr), running `sweeper` in this process."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run
