"""Profile likelihood says what the data do not pin down (the datablations C4 runs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fit.test_command import main
from sweeper.fit import fitter, laws, profile
from sweeper.fit.analysis import _profile_notes
from sweeper.fit.fitter import FitPlan
from sweeper.fit.table import average_seeds, read_csv

DATABLATIONS = Path(__file__).parent / "data" / "datablations_fit_182_c4_val_loss.csv"
# The published step-1 values (Muennighoff et al. 2023, C4), held fixed as the issue does.
PUBLISHED = laws.ChinchillaLaw(E=1.8691437, A=520.82495, B=1487.7161, alpha=0.3526596,
                               beta=0.3526596)
FIX = [f"--fix={name}={getattr(PUBLISHED, name)}" for name in laws.STEP1_NAMES]


@pytest.fixture(scope="module")
def runs():
    return average_seeds(read_csv(DATABLATIONS))


def huber_sum(objective: float, rows: int) -> float:
    """The fitter's objective is mean Huber/δ; datablations reports Σ Huber_δ."""
    return objective * rows * fitter.HUBER_DELTA


def test_step_two_finds_a_lower_minimum_than_the_published_fit(runs) -> None:
    plan = FitPlan(fixed=tuple((n, getattr(PUBLISHED, n)) for n in laws.STEP1_NAMES),
                   step1_free=())
    fit = fitter.fit_step2(runs, PUBLISHED, plan)
    assert fit.values["R_D_star"] == pytest.approx(95.4, rel=0.01)
    assert fit.values["R_N_star"] == pytest.approx(1.71, rel=0.01)
    assert huber_sum(fit.objective, len(runs)) == pytest.approx(0.0158047, abs=2e-7)
    published = fitter.fit_step2(runs, PUBLISHED, FitPlan(
        fixed=plan.fixed + (("R_D_star", 15.387756), ("R_N_star", 5.309743)), step1_free=(),
        step2_free=()))
    assert huber_sum(published.objective, len(runs)) == pytest.approx(0.0158259, abs=2e-7)


def test_the_profile_flags_r_d_star_as_a_flat_valley(runs) -> None:
    plan = FitPlan(fixed=tuple((n, getattr(PUBLISHED, n)) for n in laws.STEP1_NAMES),
                   step1_free=())
    values = fitter.fit_step2(runs, PUBLISHED, plan).values
    profiles = profile.profile_step2(runs, PUBLISHED, plan, values, confidence=0.9)
    r_d = profiles["R_D_star"]
    assert r_d.threshold == pytest.approx(2.7055, abs=1e-4)  # χ²₁ at 90%
    assert r_d.weak
    assert r_d.lo == pytest.approx(9.6, rel=0.05)  # the published 15.39 lies inside
    assert r_d.hi > 1e3 * r_d.lo / 10
    # the objective moves by under 1% for R*_D anywhere from 15 to 10^4
    inside = (r_d.values >= 15) & (r_d.values <= 1e4)
    assert r_d.deviance[inside].max() < 2 * len(runs) * np.log(1.01)


def test_a_restart_from_the_grid_leaves_a_wrong_valley(runs) -> None:
    """Warm-started from R*_D far out on the plateau, a restart from the start grid finds the
    minimum (what bootstrap refits do in step 2), never a worse point than the warm run alone."""
    plan = FitPlan(fixed=tuple((n, getattr(PUBLISHED, n)) for n in laws.STEP1_NAMES),
                   step1_free=())
    far = {"R_D_star": 1e6, "R_N_star": 300.0}
    warm = fitter.fit_step2(runs, PUBLISHED, plan, start=far)
    restarted = fitter.fit_step2(runs, PUBLISHED, plan, start=far, restarts=1)
    assert restarted.objective <= warm.objective
    assert restarted.values["R_D_star"] == pytest.approx(95.4, rel=0.02)


def test_the_report_on_the_published_file_draws_and_flags_the_profile(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main(["report", "--from-csv", str(DATABLATIONS), *FIX, "--bootstrap", "20",
                 "--cv-folds", "4", "--out", str(out)]) == 0
    assert (out / "figures" / "profiles.png").stat().st_size > 10_000
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "figures/profiles.png" in markdown
    assert "R\\*\\_D weakly identified" in markdown
    capsys.readouterr()
    assert main(["fit", "--from-csv", str(DATABLATIONS), *FIX, "--bootstrap", "0",
                 "--cv-folds", "4", "--format", "json"]) == 0
    r_d = json.loads(capsys.readouterr().out)["families"]["all"]["R_D_star"]
    assert r_d["value"] == pytest.approx(95.4, rel=0.01)
    assert r_d["profile"]["weak"] is True


def test_a_profile_flat_over_its_whole_grid_says_so_in_its_note() -> None:
    flat = profile.Profile(name="alpha", values=np.array([0.05, 2.0]), deviance=np.zeros(2), threshold=2.71,
                   lo=None, hi=None, lower_minimum=None)
    (note,) = _profile_notes("alpha", 0.9, flat)
    assert "stays within the threshold (deviance 2.71) over its whole grid, more than a decade" in note
