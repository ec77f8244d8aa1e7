"""The law formulas against the properties their papers state."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from sweeper.fit import laws

from .synthetic import AR_TRUTH

BASE = AR_TRUTH.base


def test_chinchilla_loss_is_the_sum_of_its_terms() -> None:
    loss = laws.chinchilla_loss(BASE, 1e8, 2e9)
    assert loss == pytest.approx(1.869 + 520.96 / 1e8**0.3527 + 1488.2 / 2e9**0.3527)


@pytest.mark.parametrize("flops", [1e18, 1e20, 1e22])
def test_compute_optimal_allocation_minimises_loss_at_fixed_compute(flops: float) -> None:
    law = laws.ChinchillaLaw(E=1.7, A=400.0, B=1500.0, alpha=0.34, beta=0.28)
    best = minimize_scalar(lambda log_n: float(laws.chinchilla_loss(
        law, math.exp(log_n), flops / (6 * math.exp(log_n)))), bounds=(5, 35), method="bounded",
        options={"xatol": 1e-9})
    assert laws.compute_optimal_params(law, flops) == pytest.approx(math.exp(best.x), rel=1e-4)
    n_opt, d_opt = laws.compute_optimal_params(law, flops), laws.compute_optimal_tokens(law, flops)
    assert 6 * n_opt * d_opt == pytest.approx(flops)
    assert laws.flops_where_tokens_optimal(law, d_opt) == pytest.approx(flops)


def test_effective_tokens_without_repeats_is_the_tokens_seen() -> None:
    tokens = np.array([1e8, 5e8, 1e9])
    assert laws.effective_tokens(tokens, tokens, 15.0) == pytest.approx(tokens)
    # Fewer tokens than the pool holds: nothing repeats (U_D = min(D, U)).
    assert laws.effective_tokens(tokens, 1e10, 15.0) == pytest.approx(tokens)
    assert laws.effective_tokens(tokens, np.nan, 15.0) == pytest.approx(tokens)


def test_effective_tokens_saturate_at_one_plus_r_d_star_unique_epochs() -> None:
    unique = 1e8
    assert laws.effective_tokens(1e6 * unique, unique, 15.39) == pytest.approx(16.39 * unique)


def test_r_d_star_is_where_one_more_epoch_is_worth_one_over_e() -> None:
    """PAPER.md: at R_D = R*_D repeated epochs, one more epoch is worth 1/e of fresh data."""
    unique, decay, step = 1e8, 15.39, 1e-4
    tokens = unique * (1 + decay)
    slope = (laws.effective_tokens(tokens + step * unique, unique, decay)
             - laws.effective_tokens(tokens, unique, decay)) / (step * unique)
    assert slope == pytest.approx(math.exp(-1), rel=1e-3)


def test_infinite_decay_counts_repeats_in_full() -> None:
    assert laws.effective_tokens(4e8, 1e8, math.inf) == pytest.approx(4e8)
    law = laws.chinchilla_as_data_constrained(BASE)
    assert laws.data_constrained_loss(law, 1e10, 4e8, 1e8) == pytest.approx(
        laws.chinchilla_loss(BASE, 1e10, 4e8))


def test_excess_parameters_start_at_the_compute_optimal_size_for_the_unique_data() -> None:
    unique = 1e8
    optimal_flops = laws.flops_where_tokens_optimal(BASE, unique)
    optimal = float(laws.compute_optimal_params(BASE, optimal_flops))
    u_n, r_n = laws.excess_params_split(BASE, np.array([optimal / 2, optimal * 4]), 4 * unique,
                                        unique)
    assert u_n == pytest.approx([optimal / 2, optimal])
    assert r_n == pytest.approx([0.0, 3.0])


def test_data_constrained_law_is_chinchilla_without_repeats_or_excess_parameters() -> None:
    tokens = 1e10
    params = 0.5 * float(laws.compute_optimal_params(
        BASE, laws.flops_where_tokens_optimal(BASE, tokens)))
    assert laws.data_constrained_loss(AR_TRUTH, params, tokens, tokens) == pytest.approx(
        laws.chinchilla_loss(BASE, params, tokens))


def test_repeating_data_never_beats_fresh_data() -> None:
    params, unique = 1e8, 1e8
    epochs = np.array([1.0, 2.0, 4.0, 16.0, 64.0])
    repeated = laws.data_constrained_loss(AR_TRUTH, params, epochs * unique, unique)
    fresh = laws.data_constrained_loss(AR_TRUTH, params, epochs * unique, epochs * unique)
    assert np.all(repeated >= fresh - 1e-12)
    assert np.all(np.diff(repeated) < 0)  # but more epochs still help


def test_training_flops_is_six_n_d() -> None:
    assert laws.training_flops(1e8, 2e9) == pytest.approx(1.2e18)
