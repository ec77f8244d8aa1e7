"""The critical compute is found where the synthetic data put it."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy.optimize import brentq, minimize_scalar

from sweeper.fit import frontier, laws
from sweeper.fit.analysis import analyse
from sweeper.fit.results import FitOptions

from .synthetic import AR_TRUTH, BUDGETS, EPOCHS, MDM_TRUTH, PARAMS, draw, join


def brute_best_loss(law: laws.DataConstrainedLaw, flops: float, unique_tokens: float) -> float:
    """min over N of the law at compute C, by a bounded scalar search instead of a grid."""
    def loss(log_params: float) -> float:
        params = math.exp(log_params)
        return float(laws.data_constrained_loss(law, params, flops / (6 * params), unique_tokens))
    # A coarse scan first: the law has a kink at U_N, so a local search needs a good bracket.
    scan = np.linspace(math.log(1e3), math.log(1e15), 2000)
    start = scan[int(np.argmin([loss(x) for x in scan]))]
    return minimize_scalar(loss, bounds=(start - 0.02, start + 0.02), method="bounded",
                           options={"xatol": 1e-10}).fun


def brute_critical_compute(unique_tokens: float) -> float:
    gap = lambda log_flops: (brute_best_loss(MDM_TRUTH, 10**log_flops, unique_tokens)  # noqa: E731
                             - brute_best_loss(AR_TRUTH, 10**log_flops, unique_tokens))
    return 10 ** brentq(gap, 14, 24, xtol=1e-6)


@pytest.mark.parametrize("flops", [1e16, 1e18, 1e20])
def test_best_loss_matches_a_direct_search(flops: float) -> None:
    best, _ = frontier.best_loss(AR_TRUTH, flops, 1e8)
    assert best[0] == pytest.approx(brute_best_loss(AR_TRUTH, flops, 1e8), abs=2e-4)


@pytest.mark.parametrize("unique_tokens", BUDGETS)
def test_critical_compute_of_known_laws(unique_tokens: float) -> None:
    crossing = frontier.critical_compute(MDM_TRUTH, AR_TRUTH, unique_tokens)
    assert crossing.reason == ""
    assert crossing.flops == pytest.approx(brute_critical_compute(unique_tokens), rel=0.02)
    below, above = crossing.flops / 3, crossing.flops * 3
    assert frontier.loss_gap(MDM_TRUTH, AR_TRUTH, below, unique_tokens)[0] > 0  # AR ahead
    assert frontier.loss_gap(MDM_TRUTH, AR_TRUTH, above, unique_tokens)[0] < 0  # MDM ahead


def test_laws_that_never_cross_say_who_is_ahead() -> None:
    worse = replace(AR_TRUTH, base=replace(AR_TRUTH.base, E=AR_TRUTH.base.E + 0.1))
    crossing = frontier.critical_compute(worse, AR_TRUTH, 1e8)
    assert crossing.flops is None and crossing.ar_ahead_at_end
    assert crossing.reason.startswith("AR is ahead at every compute")
    crossing = frontier.critical_compute(AR_TRUTH, worse, 1e8)
    assert crossing.reason.startswith("MDM is ahead at every compute")
    assert not crossing.ar_ahead_at_end


def test_pareto_frontier_keeps_runs_no_cheaper_run_beats() -> None:
    flops = np.array([4.0, 1.0, 2.0, 3.0, 5.0])
    loss = np.array([2.5, 4.0, 3.0, 3.5, 2.0])
    front_flops, front_loss = frontier.pareto_frontier(flops, loss)
    assert front_flops.tolist() == [1.0, 2.0, 4.0, 5.0]
    assert front_loss.tolist() == [4.0, 3.0, 2.5, 2.0]


def test_empirical_crossing_is_the_first_compute_where_mdm_matches_ar() -> None:
    ar_flops, ar_loss = np.array([1e17, 1e18, 1e19, 1e20]), np.array([4.0, 3.6, 3.5, 3.5])
    mdm_flops, mdm_loss = np.array([1e17, 1e18, 3e18, 1e19]), np.array([5.0, 3.9, 3.55, 3.4])
    crossing = frontier.empirical_critical_compute(mdm_flops, mdm_loss, ar_flops, ar_loss)
    # At 3e18 AR's best so far is 3.6 (its 1e18 run) and MDM's 3.55.
    assert crossing.flops == 3e18


@pytest.mark.parametrize(("mdm_loss", "reason"), [
    ([3.0, 2.9], "already ahead"),
    ([5.0, 4.9], "AR stays ahead"),
])
def test_empirical_frontiers_that_do_not_cross_say_why(mdm_loss: list[float], reason: str) -> None:
    crossing = frontier.empirical_critical_compute(np.array([1e17, 1e18]), np.array(mdm_loss),
                                                   np.array([1e17, 1e18]), np.array([4.0, 3.5]))
    assert crossing.flops is None
    assert reason in crossing.reason


@pytest.mark.parametrize("unique_tokens", BUDGETS)
def test_observed_crossing_of_a_dense_grid_of_runs_is_near_the_truth(unique_tokens: float) -> None:
    """Every size × epoch run at one U: the observed frontiers cross near the laws' C_crit.

    Runs lie a factor ~2 apart in compute and MDM must actually beat AR's best run so far, so the
    observed crossing sits at or somewhat above the true one.
    """
    rng = np.random.default_rng(12)
    params, epochs = (grid.ravel() for grid in np.meshgrid(PARAMS, (1.0, *EPOCHS)))
    tokens = epochs * unique_tokens
    noisy = {law: laws.data_constrained_loss(law, params, tokens, unique_tokens)
             * np.exp(0.002 * rng.standard_normal(len(params))) for law in (AR_TRUTH, MDM_TRUTH)}
    flops = laws.training_flops(params, tokens)
    crossing = frontier.empirical_critical_compute(flops, noisy[MDM_TRUTH], flops, noisy[AR_TRUTH])
    ratio = crossing.flops / brute_critical_compute(unique_tokens)
    assert 0.7 < ratio < 3.0


def test_empirical_frontiers_are_compared_only_where_both_have_runs() -> None:
    """MDM's 1e18 run beats AR's best, but AR never ran that far: no crossing is claimed."""
    crossing = frontier.empirical_critical_compute(np.array([1e16, 1e18]), np.array([6.0, 3.0]),
                                                   np.array([1e16, 1e17]), np.array([5.0, 4.5]))
    assert crossing.flops is None
    assert "AR stays ahead up to the largest compute both families reached" in crossing.reason
    crossing = frontier.empirical_critical_compute(np.array([1e16, 1e17]), np.array([6.0, 3.0]),
                                                   np.array([1e15]), np.array([5.0]))
    assert crossing.reason == "the two families' runs at this U do not overlap in compute"


def test_power_law_of_exact_points_is_recovered() -> None:
    budgets = np.array([25e6, 50e6, 100e6])
    line = frontier.fit_power_law(budgets, 191.6 * budgets**2.174)
    assert line.coefficient == pytest.approx(191.6, rel=1e-9)
    assert line.exponent == pytest.approx(2.174, rel=1e-12)
    assert frontier.fit_power_law(budgets[:1], np.array([1e18])) is None


def test_the_papers_regression_direction_is_primary() -> None:
    """The paper regresses log10 U = 0.460 log10 C − 1.050, i.e. C ∝ U^(1/0.460) = U^2.174.

    Exact points on that line give it back either way; scattered points differ, and the
    primary (default) direction is the paper's: slope of log U on log C, inverted.
    """
    flops = np.array([2.3e18, 1.05e19, 4.7e19])
    budgets = 10 ** (0.460 * np.log10(flops) - 1.050)
    line = frontier.fit_power_law(budgets, flops)
    assert line.exponent == pytest.approx(1 / 0.460, rel=1e-9)  # 2.174
    assert line.coefficient == pytest.approx(10 ** (1.050 / 0.460), rel=1e-9)  # 191.7
    scattered = flops * np.array([1.6, 0.6, 1.4])
    u_on_c = frontier.fit_power_law(budgets, scattered)
    c_on_u = frontier.fit_power_law(budgets, scattered, "c_on_u")
    slope_u, _ = np.polyfit(np.log(scattered), np.log(budgets), 1)
    slope_c, _ = np.polyfit(np.log(budgets), np.log(scattered), 1)
    assert u_on_c.exponent == pytest.approx(1 / slope_u, rel=1e-12)
    assert c_on_u.exponent == pytest.approx(slope_c, rel=1e-12)
    assert u_on_c.exponent > c_on_u.exponent  # 1/r² times the other: they agree only if r² = 1
    assert u_on_c.exponent * slope_u == pytest.approx(1.0)


def test_frontier_fitted_from_noisy_runs_is_where_the_truth_put_it() -> None:
    rng = np.random.default_rng(11)
    data = join(draw("ar", AR_TRUTH, rng, single=60, repeated=80, noise=0.003),
                draw("mdm", MDM_TRUTH, rng, single=60, repeated=80, noise=0.003))
    analysis = analyse(data, {"ar": len(data) // 2, "mdm": len(data) // 2},
                       FitOptions(resamples=15, cv_folds=4))
    truth = {u: brute_critical_compute(u) for u in BUDGETS}
    assert [point.unique_tokens for point in analysis.points] == list(BUDGETS)
    for point in analysis.points:
        assert point.law.value == pytest.approx(truth[point.unique_tokens], rel=0.25)
        assert point.law.lo <= point.law.value <= point.law.hi
    true_line = frontier.fit_power_law(np.array(BUDGETS), np.array([truth[u] for u in BUDGETS]))
    assert analysis.c_crit is not None and analysis.c_crit.source == "laws"
    assert analysis.c_crit.exponent.value == pytest.approx(true_line.exponent, abs=0.15)


def test_a_search_near_a_guess_finds_the_same_crossing() -> None:
    everywhere = frontier.critical_compute(MDM_TRUTH, AR_TRUTH, 5e7)
    assert frontier.critical_compute(MDM_TRUTH, AR_TRUTH, 5e7, near=everywhere.flops * 20).flops \
        == pytest.approx(everywhere.flops, rel=1e-4)
    # A guess far off falls back to the whole range.
    assert frontier.critical_compute(MDM_TRUTH, AR_TRUTH, 5e7, near=1e28).flops \
        == pytest.approx(everywhere.flops, rel=1e-4)
