"""Data made by the law sweeper uses fits back to that law, over-parameterised rows included."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweeper.fit import analysis, laws

from .synthetic import observations

# Muennighoff et al. 2023's C4 fit as the datablations README prints it (log a, log b, log e).
C4 = laws.DataConstrainedLaw(
    base=laws.ChinchillaLaw(E=math.exp(0.6254804), A=math.exp(6.255414), B=math.exp(7.3049974),
                            alpha=0.3526596, beta=0.3526596),
    R_D_star=15.387756, R_N_star=5.309743)
TRUTH = [C4.base.E, C4.base.A, C4.base.B, C4.base.alpha, C4.base.beta, C4.R_D_star, C4.R_N_star]


def rows_of_issue() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N ∈ {1e7 … 1e9} × D = U ∈ {1e8 … 1e11}, plus three sizes × two U × five epoch counts."""
    rows = [(n, u, u) for n in (1e7, 3e7, 1e8, 3e8, 1e9) for u in (1e8, 1e9, 1e10, 1e11)]
    rows += [(n, u * e, u) for n in (1e7, 1e8, 1e9) for u in (1e8, 1e9)
             for e in (2, 4, 10, 30, 100)]
    return tuple(np.array(column, dtype=float) for column in zip(*rows, strict=True))


def fit(law: laws.DataConstrainedLaw, n: np.ndarray, d: np.ndarray,
        u: np.ndarray) -> analysis.FamilyFit:
    data = observations("ar", n, d, u, laws.data_constrained_loss(law, n, d, u))
    return analysis.fit_family(data, len(data), analysis.FitOptions(resamples=0, cv_folds=5), 0)


def test_the_issue_rows_fit_back_within_half_a_percent() -> None:
    n, d, u = rows_of_issue()
    _, excess = laws.excess_params_split(C4.base, n, d, u)
    assert int(((excess > 0) & (d <= u)).sum()) == 9  # over-parameterised single-epoch rows
    result = fit(C4, n, d, u)
    assert result.vector == pytest.approx(TRUTH, rel=5e-3)
    assert result.oversized_single == 9
    assert result.r2_in_sample == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_law_with_over_parameterised_single_epoch_rows_fits_back(seed: int) -> None:
    rng = np.random.default_rng(seed)
    law = laws.DataConstrainedLaw(
        base=laws.ChinchillaLaw(E=rng.uniform(1.5, 2.5), A=rng.uniform(200, 900),
                                B=rng.uniform(800, 4000), alpha=rng.uniform(0.28, 0.4),
                                beta=rng.uniform(0.28, 0.4)),
        R_D_star=rng.uniform(5, 60), R_N_star=rng.uniform(2, 30))
    n, d, u = rows_of_issue()
    _, excess = laws.excess_params_split(law.base, n, d, u)
    assert ((excess > 0) & (d <= u)).any()
    truth = [law.base.E, law.base.A, law.base.B, law.base.alpha, law.base.beta, law.R_D_star,
             law.R_N_star]
    assert fit(law, n, d, u).vector == pytest.approx(truth, rel=5e-3)


def test_without_repeated_rows_r_n_star_is_not_fitted() -> None:
    """Single-epoch rows alone cannot tell R*_N from the Chinchilla terms (Epoch's file repeats
    no data): R*_N is skipped with a note, not 'fitted'."""
    n, d = (grid.ravel() for grid in np.meshgrid(np.geomspace(1e7, 3e9, 6),
                                                 np.geomspace(1e8, 1e11, 6)))
    result = fit(C4, n, d, d)
    assert result.estimates["R_N_star"].status == "skipped"
    assert any("R*_N not fitted: 0 repeated-epoch row(s)" in note for note in result.notes)
