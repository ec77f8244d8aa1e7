"""Bootstrap intervals that cover the truth as often as they claim, and cross-validated R²."""

from __future__ import annotations

import numpy as np
import pytest

from sweeper.fit import bootstrap, fitter, laws
from sweeper.fit.fitter import FitPlan
from sweeper.fit.laws import PARAMETER_NAMES

from .synthetic import AR_TRUTH, draw

TRUTH = np.array([AR_TRUTH.base.E, AR_TRUTH.base.A, AR_TRUTH.base.B, AR_TRUTH.base.alpha,
                  AR_TRUTH.base.beta, AR_TRUTH.R_D_star, AR_TRUTH.R_N_star])


def test_resamples_keep_each_stratum_size() -> None:
    strata = np.array([0] * 7 + [1] * 13)
    weights = bootstrap.resample_weights(strata, np.random.default_rng(0))
    assert weights[:7].sum() == 7 and weights[7:].sum() == 13
    assert set(np.unique(weights)) - set(range(14)) == set()


def test_bootstrap_is_seeded() -> None:
    def refit(weights: np.ndarray) -> np.ndarray:
        return np.array([weights @ np.arange(len(weights))])
    strata = np.zeros(30, dtype=int)
    first = bootstrap.bootstrap(refit, strata, 20, seed=5, num_parameters=1)
    assert np.array_equal(first, bootstrap.bootstrap(refit, strata, 20, seed=5, num_parameters=1))
    assert not np.array_equal(first, bootstrap.bootstrap(refit, strata, 20, seed=6,
                                                         num_parameters=1))


def test_percentile_interval() -> None:
    draws = np.arange(1001.0)
    interval = bootstrap.percentile_interval(draws, 0.9)
    assert (interval.lo, interval.hi) == pytest.approx((50.0, 950.0))
    assert bootstrap.percentile_interval(np.array([1.0, np.nan]), 0.9) is None


def test_r_squared() -> None:
    observed = np.array([1.0, 2.0, 3.0, 4.0])
    assert bootstrap.r_squared(observed, observed) == 1.0
    assert bootstrap.r_squared(observed, np.full(4, 2.5)) == 0.0
    assert bootstrap.r_squared(np.array([2.0, 2.0]), np.array([2.0, 2.0])) is None


def test_cross_validation_predicts_each_row_without_it() -> None:
    """A 'fit' that returns the mean of the rows it saw: LOO predicts each row from the others."""
    values = np.array([1.0, 2.0, 4.0, 8.0])

    def refit(weights: np.ndarray) -> np.ndarray:
        return np.array([weights @ values / weights.sum()])

    def predict(vector: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return np.full(len(rows), vector[0])

    loo = bootstrap.cross_validated_predictions(refit, predict, 4, folds=0, seed=0)
    assert loo == pytest.approx([(15 - v) / 3 for v in values])
    two_fold = bootstrap.cross_validated_predictions(refit, predict, 4, folds=2, seed=0)
    assert np.isfinite(two_fold).all()


def test_cross_validated_r2_exposes_a_law_that_memorises() -> None:
    """Predicting each row by its nearest neighbour fits in-sample perfectly but not held out."""
    rng = np.random.default_rng(1)
    x = np.sort(rng.uniform(0, 1, 40))
    y = x + 0.3 * rng.standard_normal(40)

    def refit(weights: np.ndarray) -> np.ndarray:
        return weights

    def predict(weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
        seen = np.flatnonzero(weights > 0)
        return np.array([y[seen[np.argmin(np.abs(x[seen] - x[row]))]] for row in rows])

    in_sample = bootstrap.r_squared(y, predict(np.ones(40), np.arange(40)))
    held_out = bootstrap.r_squared(y, bootstrap.cross_validated_predictions(refit, predict, 40,
                                                                           0, 0))
    assert in_sample == 1.0
    assert held_out < 0.5


@pytest.mark.slow
def test_ninety_percent_intervals_cover_the_truth_about_ninety_percent_of_the_time() -> None:
    """50 synthetic data sets; each gets its own point fit and 100 warm-started resamples.

    100 resamples put the 5% and 95% quantiles within a few percent of their limits, enough
    for a coverage check; Binomial(50, 0.9) makes 0.76 the 3σ lower limit per parameter.
    """
    draws, resamples = 50, 100
    covered = np.zeros(len(PARAMETER_NAMES))
    for index in range(draws):
        data = draw("ar", AR_TRUTH, np.random.default_rng(1000 + index), single=40, repeated=60,
                    noise=0.005)
        plan = FitPlan()
        step1 = fitter.fit_step1(data.select(data.single_epoch), plan)
        step2 = fitter.fit_step2(data, laws.ChinchillaLaw(**step1.values), plan)
        point = np.array([*step1.values.values(), *(step2.values[n] for n in laws.STEP2_NAMES)])

        def refit(weights: np.ndarray, data=data, plan=plan, point=point) -> np.ndarray:
            return fitter.fit_two_step(data, plan, weights, start=point).vector

        samples = bootstrap.bootstrap(refit, data.single_epoch.astype(int), resamples, index,
                                      len(PARAMETER_NAMES), processes=0)
        lo, hi = np.quantile(samples, [0.05, 0.95], axis=0)
        covered += (lo <= TRUTH) & (TRUTH <= hi)
    coverage = covered / draws
    report = dict(zip(PARAMETER_NAMES, coverage.round(2), strict=True))
    assert 0.84 <= coverage.mean() <= 0.97, report
    assert coverage.min() >= 0.76, report


def test_rollout_holds_out_the_largest_compute_fifth() -> None:
    flops = np.array([1.0, 5.0, 2.0, 9.0, 3.0, 9.0, 4.0, 7.0, 6.0, 8.0])
    assert sorted(bootstrap.rollout_rows(flops).tolist()) == [3, 5]  # the two at 9
    assert bootstrap.rollout_rows(np.array([1.0, 2.0])).tolist() == [1]

    values = np.arange(10.0)

    def refit(weights: np.ndarray) -> np.ndarray:
        return np.array([weights @ values / weights.sum()])

    def predict(vector: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return np.full(len(rows), vector[0])

    held = bootstrap.rollout_rows(flops)
    assert bootstrap.rollout_predictions(refit, predict, held, 10) == pytest.approx(
        [np.delete(values, held).mean()] * 2)


def test_a_law_fitted_on_smaller_runs_predicts_the_largest() -> None:
    from sweeper.fit import analysis

    data = draw("ar", AR_TRUTH, np.random.default_rng(3), single=40, repeated=60, noise=0.005)
    fit = analysis.fit_family(data, len(data), analysis.FitOptions(resamples=0, cv_folds=4,
                                                                   profiles=False), 0)
    rollout = fit.rollout
    assert len(rollout.rows) == 20
    assert rollout.min_flops == np.sort(data.flops)[-20]
    assert rollout.mean_abs_relative_error < 0.02  # 0.5% noise, extrapolated


def test_refits_spread_over_processes_give_the_draws_of_one_process() -> None:
    values = np.arange(12.0)
    strata = np.r_[np.zeros(5, int), np.ones(7, int)]

    def refit(weights: np.ndarray) -> np.ndarray:  # a closure, as analysis passes: forked, not pickled
        return np.array([weights @ values / weights.sum(), weights[strata == 1].sum()])

    one = bootstrap.bootstrap(refit, strata, 37, 5, 2)
    spread = bootstrap.bootstrap(refit, strata, 37, 5, 2, processes=2)
    np.testing.assert_array_equal(one, spread)
    assert (one[:, 1] == 7).all()  # each stratum keeps its size
    assert bootstrap.bootstrap(refit, strata, 0, 5, 2, processes=2).shape == (0, 2)
