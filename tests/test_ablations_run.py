"""The ablations end to end at smoke scale (tests/specs/ablations.yaml): `sweeper run` trains one
value of every train option beside plain ar and mdm, and a dual and a bd3lm trial; `sweeper results`
names each trial's options, and `sweeper report` fits the plain trials and shows every option against
them."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from conftest import REPO
from test_run import sweeper, write_profile

pytestmark = pytest.mark.slow

SPEC = REPO / "tests" / "specs" / "ablations.yaml"
AXES = {"attention_dropout": "ar", "input_mask_rate": "ar", "orderings": "ar", "mdm_loss_weight": "mdm",
        "mdm_min_mask_rate": "mdm", "mdm_t_sampling": "mdm", "ar_fraction": "dual", "block_size": "bd3lm"}


def test_ablations_train_and_report(tmp_path: Path) -> None:
    profile = write_profile(tmp_path)
    result = sweeper("run", SPEC, "--backend", profile)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10 trials: 0 finished, 10 to run" in result.stdout

    results = sweeper("results", SPEC, "--backend", profile, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(results.stdout)))
    assert sorted(r["options"] for r in rows) == [
        "", "", "ar_fraction=0.25", "attention_dropout=0.5", "block_size=8", "input_mask_rate=0.25",
        "mdm_loss_weight=unweighted", "mdm_min_mask_rate=0.1", "mdm_t_sampling=stratified", "orderings=4"]

    out = tmp_path / "report"
    report = sweeper("report", SPEC, "--backend", profile, "--out", out, "--bootstrap", "0", "--no-log")
    assert report.returncode == 0, report.stdout + report.stderr
    text = (out / "report.md").read_text()
    assert "## Ablations" in text
    for axis, family in AXES.items():
        assert f"### {family}: {axis.replace('_', chr(92) + '_')}" in text, axis
    assert text.count("| not a likelihood bound |") == 1  # unweighted mdm only
    assert (out / "figures" / "ablations.png").stat().st_size > 10_000
    assert (out / "figures" / "ablation_curves.png").stat().st_size > 10_000
