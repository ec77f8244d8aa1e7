"""Degenerate input: fit what can be fitted, and say plainly what was skipped and why."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from sweeper.fit import laws
from sweeper.fit.analysis import analyse
from sweeper.fit.laws import STEP1_NAMES
from sweeper.fit.results import FitOptions
from sweeper.fit.table import Observations

from .synthetic import AR_TRUTH, MDM_TRUTH, draw, join, observations

FAST = FitOptions(resamples=12, cv_folds=4)


def counts(data: Observations) -> dict[str, int]:
    return {name: int((data.family == name).sum()) for name in data.families()}


def run(data: Observations, options: FitOptions = FAST):
    return analyse(data, counts(data), options)


def test_both_families_fit_and_compare() -> None:
    rng = np.random.default_rng(0)
    analysis = run(join(draw("ar", AR_TRUTH, rng), draw("mdm", MDM_TRUTH, rng)))
    for fit in analysis.families.values():
        assert all(e.status == "fitted" for e in fit.estimates.values()), fit.notes
        assert fit.r2_in_sample > 0.95 and fit.r2_cv > 0.95
        assert fit.notes == ()
    assert analysis.c_crit is not None
    assert analysis.notes == ()


def test_one_process_and_two_give_the_same_draws_and_c_crit() -> None:
    """Bootstrap refits and C_crit's draws spread over forked processes depend only on their
    inputs: the analysis is the same, bit for bit, on one process or two."""
    rng = np.random.default_rng(0)
    data = join(draw("ar", AR_TRUTH, rng), draw("mdm", MDM_TRUTH, rng))
    one, two = (run(data, replace(FAST, processes=n)) for n in (1, 2))
    for name in one.families:
        np.testing.assert_array_equal(one.families[name].draws, two.families[name].draws)
    assert np.isfinite(one.crit_draws).any()
    np.testing.assert_array_equal(one.crit_draws, two.crit_draws)
    assert one.points == two.points and one.c_crit == two.c_crit


def test_one_family_fits_and_says_c_crit_needs_two() -> None:
    analysis = run(draw("ar", AR_TRUTH, np.random.default_rng(1)))
    assert analysis.families["ar"].estimates["R_D_star"].status == "fitted"
    assert analysis.points == () and analysis.c_crit is None
    assert any("compares families 'ar' and 'mdm'; found 'ar'" in n for n in analysis.notes)


def test_no_repeated_epochs_fits_step_one_and_skips_step_two() -> None:
    data = draw("all", AR_TRUTH, np.random.default_rng(2), single=40, repeated=0)
    analysis = run(data)
    fit = analysis.families["all"]
    assert [fit.estimates[n].status for n in STEP1_NAMES] == ["fitted"] * 5
    assert fit.estimates["R_D_star"].status == "skipped"
    assert fit.estimates["R_D_star"].value is None
    assert any(n.startswith("R*_D not fitted: 0 repeated-epoch row(s)") for n in fit.notes)
    assert fit.r2_in_sample is not None


def test_too_few_points_skips_the_family_and_says_why() -> None:
    data = draw("ar", AR_TRUTH, np.random.default_rng(3), single=4, repeated=3)
    fit = run(data).families["ar"]
    assert fit.vector is None
    assert all(e.status == "skipped" for e in fit.estimates.values())
    assert any("5 free parameters but only 4 single-epoch configurations" in n for n in fit.notes)


def test_one_model_size_cannot_identify_the_parameter_exponent() -> None:
    tokens = np.geomspace(1e8, 1e11, 12)
    loss = laws.chinchilla_loss(AR_TRUTH.base, 1e7, tokens)
    fit = run(observations("ar", np.full(12, 1e7), tokens, tokens, loss)).families["ar"]
    assert fit.vector is None
    assert any("A and α cannot be identified" in n and "1 distinct model sizes" in n
               for n in fit.notes)


def test_fixing_what_one_size_cannot_identify_fits_the_rest() -> None:
    tokens = np.geomspace(1e8, 1e11, 12)
    loss = laws.chinchilla_loss(AR_TRUTH.base, 1e7, tokens)
    data = observations("ar", np.full(12, 1e7), tokens, tokens, loss)
    options = replace(FAST, fixed=(("A", 520.96), ("alpha", 0.3527)))
    fit = run(data, options).families["ar"]
    assert fit.estimates["A"].status == "fixed"
    assert fit.estimates["beta"].value == pytest.approx(0.3527, rel=0.02)


def test_only_repeated_rows_needs_step_one_fixed() -> None:
    data = draw("ar", AR_TRUTH, np.random.default_rng(4), single=0, repeated=60, noise=0.003)
    fit = run(data).families["ar"]
    assert fit.vector is None
    assert any("no single-epoch rows" in n for n in fit.notes)
    fixed = tuple((name, getattr(AR_TRUTH.base, name)) for name in STEP1_NAMES)
    fit = run(data, replace(FAST, fixed=fixed)).families["ar"]
    assert fit.estimates["R_D_star"].value == pytest.approx(15.39, rel=0.1)
    assert fit.estimates["E"].status == "fixed"


def test_no_oversized_models_leave_r_n_star_out() -> None:
    """R*_N acts only on models bigger than compute-optimal for their data; without any, skip it."""
    rng = np.random.default_rng(5)
    single = draw("ar", AR_TRUTH, rng, single=40, repeated=0, noise=0.003)
    # Small models on large pools: U_N ≈ 0.05·U here, so none has excess parameters.
    params, unique, epochs = (grid.ravel() for grid in np.meshgrid(
        [7e6, 1.4e7, 2.5e7], [1e9, 2e9], [2.0, 4.0, 8.0, 16.0, 32.0, 64.0]))
    loss = laws.data_constrained_loss(AR_TRUTH, params, epochs * unique, unique)
    repeated = observations("ar", params, epochs * unique, unique,
                            loss * np.exp(0.003 * rng.standard_normal(len(loss))))
    fit = run(join(single, repeated)).families["ar"]
    assert fit.estimates["R_N_star"].status == "skipped"
    assert any(n.startswith("R*_N not fitted: 0 row(s)") for n in fit.notes)
    assert fit.estimates["R_D_star"].value == pytest.approx(15.39, rel=0.1)


def test_no_decay_of_repeated_data_leaves_r_d_star_unidentified_with_a_lower_bound() -> None:
    """Repeats worth as much as fresh data: R*_D runs to its bound, reported as a lower bound."""
    fresh = replace(AR_TRUTH, R_D_star=math.inf)
    data = draw("ar", fresh, np.random.default_rng(6), single=40, repeated=60, noise=0.003)
    fit = run(data).families["ar"]
    estimate = fit.estimates["R_D_star"]
    assert estimate.status == "unidentified"
    assert estimate.value is None and estimate.hi is None
    assert estimate.lo is not None and estimate.lo > 100
    assert any(n.startswith("R*_D not identified") for n in fit.notes)


def test_families_not_named_ar_and_mdm_are_fitted_but_not_compared() -> None:
    rng = np.random.default_rng(7)
    data = join(draw("small", AR_TRUTH, rng), draw("large", MDM_TRUTH, rng))
    analysis = run(data)
    assert set(analysis.families) == {"small", "large"}
    assert analysis.c_crit is None
    assert any("found 'large', 'small'" in n for n in analysis.notes)


def test_repeated_seeds_are_reported_as_spread_not_extra_points() -> None:
    data = draw("ar", AR_TRUTH, np.random.default_rng(8), single=30, repeated=30)
    spread = np.full(len(data), np.nan)
    spread[:5] = 0.01
    seeds = np.ones(len(data), dtype=int)
    seeds[:5] = 3
    data = replace(data, loss_std=spread, num_seeds=seeds)
    fit = run(data).families["ar"]
    assert fit.seed_spread() == (5, pytest.approx(0.01))
    assert len(fit.observations) == 60


def test_options_reject_what_cannot_be_meant() -> None:
    with pytest.raises(ValueError, match="cannot fix 'gamma'"):
        FitOptions(fixed=(("gamma", 1.0),))
    with pytest.raises(ValueError, match="--tie needs alpha = beta"):
        FitOptions(fixed=(("alpha", 0.3), ("beta", 0.4)), tie_exponents=True)
    with pytest.raises(ValueError, match="confidence"):
        FitOptions(confidence=1.5)
    assert FitOptions(fixed=(("alpha", 0.3),), tie_exponents=True).fixed_with_tie() == {
        "alpha": 0.3, "beta": 0.3}
