"""The eval tests need lm-evaluation-harness (the `evals` extra, which `make test` installs), and run
with one intra-op thread on a small shared CPU, as the trainer tests do."""

import importlib.util

import pytest

if importlib.util.find_spec("lm_eval") is None:
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(autouse=True, scope="session")
def _torch_threads() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: datasets and the Hub read local files only; the task files name their data
    relative to the repository root, the working folder here."""
    from .helpers import REPO

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(REPO)
