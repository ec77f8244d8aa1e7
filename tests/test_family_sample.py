"""`sweeper train` and `sweeper sample` with the dual and bd3lm families (tests/specs/ablations.yaml):
a 2-step checkpoint of each samples text, a dual model either way; --as on another family, and a
length over one window, are one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO
from sweeper.cli import main
from test_train_options import one_error, profile_in

SPEC = REPO / "tests" / "specs" / "ablations.yaml"
TRIALS = {"dual": "d92fd842385d", "bd3lm": "9603919b8df7"}  # ar_fraction 0.25; block_size 8, seq_len 16


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("families")
    profile = profile_in(folder)
    found = {"profile": profile}
    for family, trial in TRIALS.items():
        assert main(["train", str(SPEC), "--trial", trial, "--backend", str(profile), "--device", "cpu",
                     "--checkpoint-dir", str(folder / family), "--max-steps", "2"]) == 0
        found[family] = folder / family / "step_00000002"
    return found


def sample(trained: dict[str, Path], family: str, *options: str) -> int:
    return main(["sample", str(trained[family]), "--spec", str(SPEC), "--backend", str(trained["profile"]),
                 *options])


def test_dual_samples_either_way(capsys, trained) -> None:
    for read_as in ("ar", "mdm"):
        assert sample(trained, "dual", "--as", read_as, "--num-samples", "2", "--length", "8") == 0
        assert capsys.readouterr().out.strip()


def test_bd3lm_samples_block_by_block(capsys, trained) -> None:
    assert sample(trained, "bd3lm", "--steps", "3", "--order", "random") == 0
    assert capsys.readouterr().out.strip()
    assert one_error(capsys, sample(trained, "bd3lm", "--as", "ar")) == (
        "--as ar: only a dual model samples either way; this one is bd3lm")
    assert one_error(capsys, sample(trained, "bd3lm", "--length", "17")) == (
        "--length 17: this bd3lm model has seq_len 16, and a bd3lm sample is one window of seq_len (at most 16)")
