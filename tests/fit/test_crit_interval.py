"""C_crit's bootstrap interval counts the resamples whose laws never cross, instead of dropping them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweeper.fit import bootstrap, render
from sweeper.fit.critical_compute import _open_interval, crossed
from sweeper.fit.results import CritPoint, Estimate


def draws_of(crossing: int, never: int = 0, before: int = 0, missing: int = 0) -> np.ndarray:
    rng = np.random.default_rng(0)
    values = np.concatenate([10.0 ** rng.uniform(11, 14, crossing), np.full(never, math.inf),
                             np.zeros(before), np.full(missing, np.nan)])
    return rng.permutation(values)


def test_when_every_resample_crosses_the_interval_is_the_percentile_interval() -> None:
    draws = draws_of(1000, missing=30)
    lo, hi = _open_interval(draws, 0.9)
    expected = bootstrap.percentile_interval(np.log(draws), 0.9)
    assert (lo, hi) == (math.exp(expected.lo), math.exp(expected.hi))


def test_resamples_that_never_cross_open_the_upper_end() -> None:
    draws = draws_of(700, never=300)
    lo, hi = _open_interval(draws, 0.9)
    assert hi is None  # dropping the 300 would have claimed a finite upper end
    stand_in = np.log(np.where(np.isinf(draws), 1e300, draws))
    assert lo == pytest.approx(math.exp(np.quantile(stand_in, 0.05)), rel=1e-12)  # 5% of all 1000


def test_a_few_resamples_that_never_cross_leave_both_ends_closed() -> None:
    lo, hi = _open_interval(draws_of(980, never=20), 0.9)  # 2% beyond the searched compute
    assert lo is not None and hi is not None and lo < hi


def test_resamples_with_the_other_family_ahead_throughout_open_the_lower_end() -> None:
    lo, hi = _open_interval(draws_of(800, before=200), 0.9)
    assert lo is None and hi is not None


@pytest.mark.parametrize("draws", [draws_of(5, missing=100), draws_of(0, never=1000), draws_of(0)])
def test_too_few_complete_resamples_or_no_crossing_give_no_interval(draws: np.ndarray) -> None:
    assert _open_interval(draws, 0.9) == (None, None)


def test_only_finite_positive_draws_are_crossings() -> None:
    assert crossed(np.array([1e12, math.inf, 0.0, np.nan])).tolist() == [True, False, False, False]


def test_the_table_note_and_the_json_say_how_many_resamples_cross() -> None:
    point = CritPoint(unique_tokens=8000.0,
                      law=Estimate(value=4.4e11, lo=1.9e10, hi=None, status="fitted"),
                      empirical=None, extrapolated=False, reasons=("observed: AR stays ahead",),
                      crossings=(769, 1000))
    assert render.interval(point.law) == "≥ 1.9e+10"
    note = render.point_note(point)
    assert note.startswith("the laws of 769 of 1000 resamples cross here;")
    assert note.endswith("so an end is open; observed: AR stays ahead")
    every = CritPoint(unique_tokens=8000.0, law=Estimate(value=4.4e11, lo=1e11, hi=1e12, status="fitted"),
                      empirical=None, extrapolated=True, reasons=(), crossings=(1000, 1000))
    assert render.point_note(every) == "extrapolated beyond the runs' compute"
    (row,) = render._points_json((point,))
    assert (row["lo"], row["hi"], row["resamples_crossing"], row["resamples_complete"]) == (1.9e10, None, 769, 1000)
