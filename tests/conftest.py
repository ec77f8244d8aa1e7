"""Shared helpers: write a spec into a temporary folder, run the CLI in-process."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sweeper.cli import main

REPO = Path(__file__).resolve().parent.parent
SMOKE_SPEC = REPO / "tests" / "specs" / "smoke.yaml"
LOCAL_PROFILE = REPO / "backends" / "local.yaml"

# `make test` runs two test files at a time (pytest-xdist, --dist loadfile) and hands them out in
# collection order; these hold the longest end-to-end tests, so they go first: the quickstart's
# ten minutes then run beside the other files instead of alone at the end.
LONGEST_FIRST = ("test_quickstart.py", "test_run.py", "test_faults.py", "test_cluster.py",
                 "test_fault_injection.py", "test_multiprocess_trials.py", "test_share_prefix_run.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.path.relative_to(REPO / "tests").as_posix()
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)  # stable: every file keeps its own order, the others theirs

# Trials of a tiny model on a structured synthetic source that run long enough (about a minute on
# one core) to be killed, stopped or lose their node in the middle, checkpointing every 3 s.
LONG = """\
version: 1
name: NAME
data:
  train: {kind: synthetic, states: 16, symbols: 64, branching: 2, emissions: 2, document_length: 256, seed: 0}
  tokenizer: {kind: symbols, vocab_size: 65}
  seq_len: 16
  validation_tokens: 1024
train: {batch_sequences: 8, lr_peak: 3e-3, lr_min: 3e-4, dropout: 0.0, precision: fp32, eval_points: 4,
        mdm_eval_samples: 2, compile: false, checkpoint_every_minutes: 0.05}
models:
  smoke-1L: {d_model: 32, layers: 1, heads: 2, h_f: 64}
grid: {family: FAMILY, model: smoke-1L, unique_tokens: 4k, epochs: EPOCHS}
tracking: {experiment: EXPERIMENT}
"""


def descendants(root: int) -> set[int]:
    """Processes below `root` (a test's own `sweeper run` and the Ray it started), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def long_spec_text(*, name: str, family: str, epochs: int, experiment: str) -> str:
    return (LONG.replace("NAME", name).replace("FAMILY", family).replace("EPOCHS", str(epochs))
            .replace("EXPERIMENT", experiment))


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


@pytest.fixture(autouse=True)
def _run_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """sweeper's local cache of ended MLflow runs goes to the test run's temporary folder, not ~/.cache."""
    monkeypatch.setenv("SWEEPER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "sweeper-run-cache"))
