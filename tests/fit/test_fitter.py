"""Fitting data drawn from known laws gives those laws back."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweeper.fit import fitter, laws
from sweeper.fit.fitter import FitPlan
from sweeper.fit.laws import STEP1_NAMES
from sweeper.fit.table import Observations

from .synthetic import AR_TRUTH, PARAMS, SINGLE_TOKENS, draw, observations

NOISE = 0.003  # multiplicative, on the loss: about what seed-to-seed spread gives


def chinchilla_draw(law: laws.ChinchillaLaw, seed: int) -> Observations:
    rng = np.random.default_rng(seed)
    n, d = (grid.ravel() for grid in np.meshgrid(PARAMS, SINGLE_TOKENS))
    loss = laws.chinchilla_loss(law, n, d) * np.exp(NOISE * rng.standard_normal(len(n)))
    return observations("all", n, d, d, loss)


@pytest.mark.parametrize("law", [
    laws.ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28),  # Hoffmann et al. 2022
    laws.ChinchillaLaw(E=1.869, A=520.96, B=1488.2, alpha=0.3527, beta=0.3527),
])
def test_chinchilla_law_is_fitted_back(law: laws.ChinchillaLaw) -> None:
    fit = fitter.fit_step1(chinchilla_draw(law, seed=0), FitPlan(step2_free=()))
    assert fit.values["alpha"] == pytest.approx(law.alpha, rel=0.05)
    assert fit.values["beta"] == pytest.approx(law.beta, rel=0.05)
    assert fit.values["E"] == pytest.approx(law.E, rel=0.05)
    assert fit.at_bound == ()


def test_tie_fits_one_exponent() -> None:
    fit = fitter.fit_step1(chinchilla_draw(AR_TRUTH.base, seed=1),
                           FitPlan(tie_exponents=True, step2_free=()))
    assert fit.values["alpha"] == fit.values["beta"]
    assert fit.values["alpha"] == pytest.approx(0.3527, rel=0.05)


def test_two_steps_fit_the_data_constrained_law_back() -> None:
    data = draw("ar", AR_TRUTH, np.random.default_rng(2), single=60, repeated=80, noise=NOISE)
    vector = fitter.fit_two_step(data, FitPlan()).vector
    values = dict(zip(laws.PARAMETER_NAMES, vector, strict=True))
    assert values["alpha"] == pytest.approx(AR_TRUTH.base.alpha, rel=0.05)
    assert values["beta"] == pytest.approx(AR_TRUTH.base.beta, rel=0.05)
    assert values["R_D_star"] == pytest.approx(AR_TRUTH.R_D_star, rel=0.10)
    # R*_N rests on the few oversized models only; it is recovered to its scale.
    assert values["R_N_star"] == pytest.approx(AR_TRUTH.R_N_star, rel=0.5)


def test_step_two_uses_step_one_frozen() -> None:
    """Step 2 changes R*_D and R*_N only: the step-1 values are those of the single-epoch fit."""
    data = draw("ar", AR_TRUTH, np.random.default_rng(3), single=60, repeated=80, noise=NOISE)
    step1 = fitter.fit_step1(data.select(data.single_epoch), FitPlan())
    both = fitter.fit_two_step(data, FitPlan()).vector
    assert both[:5] == pytest.approx([step1.values[name] for name in STEP1_NAMES], rel=1e-6)


def test_fixing_step_one_fits_step_two_alone() -> None:
    """--fix with a published step-1 fit: only R*_D and R*_N are estimated."""
    base = AR_TRUTH.base
    fixed = tuple((name, getattr(base, name)) for name in STEP1_NAMES)
    data = draw("ar", AR_TRUTH, np.random.default_rng(4), single=0, repeated=80, noise=NOISE)
    vector = fitter.fit_two_step(data, FitPlan(fixed=fixed, step1_free=())).vector
    assert vector[:5].tolist() == [getattr(base, name) for name in STEP1_NAMES]
    assert vector[5] == pytest.approx(AR_TRUTH.R_D_star, rel=0.10)


def test_a_fixed_step_two_parameter_is_held() -> None:
    base = AR_TRUTH.base
    fixed = tuple((name, getattr(base, name)) for name in STEP1_NAMES) + (("R_N_star", 5.31),)
    data = draw("ar", AR_TRUTH, np.random.default_rng(5), single=20, repeated=80, noise=NOISE)
    vector = fitter.fit_two_step(data, FitPlan(fixed=fixed, step1_free=(),
                                               step2_free=("R_D_star",))).vector
    assert vector[6] == 5.31
    assert vector[5] == pytest.approx(AR_TRUTH.R_D_star, rel=0.10)


def test_grid_start_beats_a_poor_single_start() -> None:
    """The multi-start grid is what finds the optimum from nowhere near it."""
    data = chinchilla_draw(AR_TRUTH.base, seed=6)
    from_grid = fitter.fit_step1(data, FitPlan(step2_free=()))
    far = {"E": 0.5, "A": 1e6, "B": 3.0, "alpha": 2.5, "beta": 0.02}
    from_far = fitter.fit_step1(data, FitPlan(step2_free=()), start=far)
    assert from_grid.objective <= from_far.objective + 1e-12


def central_difference(function, at: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """(f(x + h) − f(x − h)) / 2h per coordinate: second-order accurate, unlike forward steps."""
    grad = np.empty(len(at))
    for i in range(len(at)):
        shift = np.zeros(len(at))
        shift[i] = step
        grad[i] = (function(at + shift) - function(at - shift)) / (2 * step)
    return grad


@pytest.mark.parametrize("residual_scale", [1e-4, 1e-2])  # inside and beyond Huber's δ
def test_step_one_gradient_matches_finite_differences(residual_scale: float) -> None:
    rng = np.random.default_rng(7)
    log_params, log_tokens = np.log(rng.uniform(1e7, 1e9, 30)), np.log(rng.uniform(1e8, 1e10, 30))
    theta = np.array([math.log(1.8), 6.0, 7.5, 0.35, 0.33])
    exact = fitter._logsumexp3(6.0 - 0.35 * log_params, 7.5 - 0.33 * log_tokens,
                               np.full(30, math.log(1.8)))[0]
    # Targets off the law by residuals of the wanted size.
    shifted = fitter._Step1Data(log_params, log_tokens,
                                exact + residual_scale * rng.standard_normal(30))
    weights = rng.integers(0, 3, 30).astype(float)
    _, grad = fitter._step1_value_and_grad(theta, shifted, weights)
    numeric = central_difference(lambda t: fitter._step1_value_and_grad(t, shifted, weights)[0],
                                 theta)
    assert grad == pytest.approx(numeric, rel=1e-4, abs=1e-8)


def test_step_two_gradient_matches_finite_differences() -> None:
    data = draw("ar", AR_TRUTH, np.random.default_rng(8), single=10, repeated=40, noise=0.02)
    prepared = fitter._step2_data(AR_TRUTH.base, data)
    weights = np.ones(len(data))
    theta = np.array([math.log(10.0), math.log(8.0)])
    _, grad = fitter._step2_value_and_grad(theta, prepared, weights)
    numeric = central_difference(
        lambda t: fitter._step2_value_and_grad(t, prepared, weights)[0], theta)
    assert grad == pytest.approx(numeric, rel=1e-4, abs=1e-8)


def test_weights_are_row_multiplicities() -> None:
    """Weight 2 on a row is the same fit as that row listed twice (what the bootstrap relies on)."""
    data = chinchilla_draw(AR_TRUTH.base, seed=9)
    weights = np.ones(len(data))
    weights[:5] = 2.0
    weighted = fitter.fit_step1(data, FitPlan(step2_free=()), weights)
    rows = np.r_[np.arange(len(data)), np.arange(5)]
    doubled = fitter.fit_step1(data.select(rows), FitPlan(step2_free=()))
    for name in STEP1_NAMES:
        assert weighted.values[name] == pytest.approx(doubled.values[name], rel=1e-4)
