"""Uncertainty of a fit: the seeded bootstrap over configurations and cross-validated R².

Both take any refit function of a weight vector (row multiplicities), so they know nothing of
the law being fitted. The bootstrap resamples configurations (seeds already averaged) with
replacement within strata: single-epoch and repeated rows are resampled separately, so every
resample keeps the mix the two-step procedure needs (Efron & Tibshirani 1993, sec. 6.4 on
stratified resampling). Intervals are percentile intervals of the refitted values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sweeper.fit import parallel
from sweeper.fit.multistart import single_threaded_blas

Refit = Callable[[np.ndarray], np.ndarray]  # weights per row -> parameter vector
Predict = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (vector, row indices) -> predicted loss


def resample_weights(strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Multiplicities of one stratified bootstrap resample: each stratum keeps its size."""
    weights = np.zeros(len(strata))
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        weights[members] = rng.multinomial(len(members), np.full(len(members), 1.0 / len(members)))
    return weights


def _refit_rows(refit: Refit, weights: np.ndarray, num_parameters: int) -> np.ndarray:
    """refit(row) for every row of weights, with one BLAS thread: (rows, num_parameters)."""
    with single_threaded_blas(), np.errstate(all="ignore"):
        return np.array([refit(row) for row in weights]).reshape(len(weights), num_parameters)


def bootstrap(refit: Refit, strata: np.ndarray, resamples: int, seed: int,
              num_parameters: int, processes: int = 1) -> np.ndarray:
    """(resamples, num_parameters) refitted vectors.

    Every resample's weights are drawn first, in order, from the one seeded generator; the
    refits then run in chunks on `processes` forked processes, 0 for one per core
    (`parallel.map_rows`). Each refit depends only on its weights, so the draws are the same
    however many.
    """
    rng = np.random.default_rng(seed)
    weights = np.array([resample_weights(strata, rng) for _ in range(resamples)]).reshape(resamples, len(strata))
    return parallel.map_rows(lambda rows: _refit_rows(refit, rows, num_parameters), weights,
                             processes)


@dataclass(frozen=True, slots=True, kw_only=True)
class Interval:
    lo: float
    hi: float


def percentile_interval(draws: np.ndarray, confidence: float) -> Interval | None:
    """The central `confidence` interval of finite draws; None when there are fewer than 10."""
    finite = draws[np.isfinite(draws)]
    if len(finite) < 10:
        return None
    tail = 0.5 * (1.0 - confidence)
    lo, hi = np.quantile(finite, [tail, 1.0 - tail])
    return Interval(lo=float(lo), hi=float(hi))


def r_squared(observed: np.ndarray, predicted: np.ndarray) -> float | None:
    """1 − SS_res/SS_tot on the loss itself (nats), the R² PAPER.md reports."""
    spread = ((observed - observed.mean()) ** 2).sum()
    if len(observed) < 2 or spread == 0:
        return None
    return float(1.0 - ((observed - predicted) ** 2).sum() / spread)


def cross_validated_predictions(refit: Refit, predict: Predict, num_rows: int, folds: int,
                                seed: int) -> np.ndarray:
    """Each row's loss predicted by a fit that did not see it.

    folds = 0 is leave-one-out; otherwise rows are shuffled (seeded) into `folds` folds.
    """
    if folds == 0 or folds >= num_rows:
        assignment = np.arange(num_rows)
    else:
        assignment = np.random.default_rng(seed).permutation(num_rows) % folds
    predicted = np.full(num_rows, np.nan)
    for fold in np.unique(assignment):
        held_out = np.flatnonzero(assignment == fold)
        weights = np.ones(num_rows)
        weights[held_out] = 0.0
        with np.errstate(all="ignore"):
            predicted[held_out] = predict(refit(weights), held_out)
    return predicted


ROLLOUT_FRACTION = 0.2  # the largest-compute fifth of the configurations is held out


def rollout_rows(flops: np.ndarray, fraction: float = ROLLOUT_FRACTION) -> np.ndarray:
    """The largest-compute configurations: at least one, ties at the cut included."""
    count = max(1, int(round(fraction * len(flops))))
    cut = np.sort(flops)[-count]
    return np.flatnonzero(flops >= cut)


def rollout_predictions(refit: Refit, predict: Predict, held_out: np.ndarray,
                        num_rows: int) -> np.ndarray:
    """The held-out rows' loss predicted by a fit of the others: the extrapolation check of
    scaling-ladder practice, which rewards a law that predicts larger runs rather than one that
    memorises its points."""
    weights = np.ones(num_rows)
    weights[held_out] = 0.0
    with np.errstate(all="ignore"):
        return predict(refit(weights), held_out)
