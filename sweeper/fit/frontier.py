"""Where masked diffusion overtakes autoregression: ΔL(C, U) and the critical compute C_crit(U).

PAPER.md: ΔL(C, U) = L_mdm − L_ar, each the best loss over model size and epochs at compute
C = 6ND with U unique tokens; C_crit(U) solves ΔL = 0 (AR ahead below it, MDM above); a
log-log line over U gives C_crit = coefficient · U^exponent (the paper: 191.6 · U^2.174,
U in tokens). Both the fitted laws and the observed runs give a frontier; this module computes
both and leaves the choosing to `analysis`. Any family compares with ar the same way (dual,
bd3lm: `critical_compute` names it); `cost_factor` puts it on the compute it really spends, where
its passes process more tokens than it trains on (bd3lm: 2, so its best loss at compute C is the
one its law gives at C/2 in 6ND).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import brentq

from sweeper.fit import laws

# Search ranges, log10 units. Parameters from 1e3 to 1e15 cover any model anyone trains; the
# compute range reaches well past today's largest runs, so a crossing far out is still found
# (and reported as extrapolated).
_LOG10_PARAMS = np.linspace(3.0, 15.0, 241)
_LOG10_FLOPS = np.arange(8.0, 30.0 + 1e-9, 0.1)


def best_loss(law: laws.DataConstrainedLaw, flops: np.ndarray | float,
              unique_tokens: float) -> tuple[np.ndarray, np.ndarray]:
    """(min over N of L(N, C/(6N), U), the minimising N) at each compute C.

    Epochs follow from N at fixed C (D = C/6N, epochs = D/U), so minimising over N is minimising
    over model size and epochs together. A grid in log N brackets the minimum and a parabola
    through the three grid points around it refines it.
    """
    log_flops = np.log10(np.atleast_1d(np.asarray(flops, dtype=float)))
    log_params = _LOG10_PARAMS[None, :]
    params = 10.0**log_params
    tokens = 10.0 ** (log_flops[:, None] - log_params) / 6.0
    # Extreme corners of the grid (a law at a search bound) can overflow: they are never the minimum.
    with np.errstate(over="ignore", invalid="ignore"):
        loss = laws.data_constrained_loss(law, params, tokens, unique_tokens)
        loss = np.where(np.isfinite(loss), loss, np.inf)
        i = np.clip(np.argmin(loss, axis=1), 1, len(_LOG10_PARAMS) - 2)
        rows = np.arange(len(log_flops))
        left, mid, right = loss[rows, i - 1], loss[rows, i], loss[rows, i + 1]
        curvature = left - 2.0 * mid + right
        step = _LOG10_PARAMS[1] - _LOG10_PARAMS[0]
        usable = np.isfinite(curvature) & (curvature > 0)
        shift = np.where(usable, 0.5 * (left - right) / np.where(usable, curvature, 1.0), 0.0)
        shift = np.clip(shift, -1.0, 1.0)
        best_log_params = _LOG10_PARAMS[i] + shift * step
        best = np.where(usable, mid - 0.25 * (left - right) * shift, mid)
    return best, 10.0**best_log_params


def loss_gap(law_mdm: laws.DataConstrainedLaw, law_ar: laws.DataConstrainedLaw,
             flops: np.ndarray | float, unique_tokens: float, cost_factor: float = 1.0) -> np.ndarray:
    """ΔL(C, U) = L*_mdm(C, U) − L*_ar(C, U); negative where masked diffusion (or the family in its
    place) is ahead. cost_factor: compute that family spends per unit of 6ND (bd3lm: 2)."""
    other = best_loss(law_mdm, np.asarray(flops, dtype=float) / cost_factor, unique_tokens)[0]
    return other - best_loss(law_ar, flops, unique_tokens)[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class Crossing:
    flops: float | None  # C_crit, None when the frontiers do not cross from AR-ahead to MDM-ahead
    reason: str  # why there is no crossing; "" when there is one
    # No crossing, and AR still ahead at the largest compute searched (1e30 FLOPs): C_crit, if
    # there is one, lies beyond the range. False where there is a crossing or MDM is ahead there.
    ar_ahead_at_end: bool = False


def critical_compute(law_mdm: laws.DataConstrainedLaw, law_ar: laws.DataConstrainedLaw,
                     unique_tokens: float, near: float | None = None, *, other: str = "MDM",
                     cost_factor: float = 1.0) -> Crossing:
    """The first compute at which ΔL turns from positive (AR ahead) to non-positive.

    `near` (FLOPs), e.g. the point estimate when refitting bootstrap resamples, searches two
    decades either side first and the whole range only if the crossing is not there. `other`
    names the family compared with AR in the reasons; `cost_factor` as in `loss_gap`.
    """
    if near is not None:
        window = _LOG10_FLOPS[np.abs(_LOG10_FLOPS - math.log10(near)) <= 2.0]
        if len(window) >= 2:
            crossing = _first_crossing(law_mdm, law_ar, unique_tokens, window, other, cost_factor)
            if crossing.flops is not None:
                return crossing
    return _first_crossing(law_mdm, law_ar, unique_tokens, _LOG10_FLOPS, other, cost_factor)


def _first_crossing(law_mdm: laws.DataConstrainedLaw, law_ar: laws.DataConstrainedLaw,
                    unique_tokens: float, log_flops: np.ndarray, other: str = "MDM",
                    cost_factor: float = 1.0) -> Crossing:
    gap = loss_gap(law_mdm, law_ar, 10.0**log_flops, unique_tokens, cost_factor)
    ahead = gap > 0
    turns = np.flatnonzero(ahead[:-1] & ~ahead[1:])
    if len(turns) == 0:
        span = f"from {10**log_flops[0]:.0e} to {10**log_flops[-1]:.0e} FLOPs"
        at_end = bool(ahead[-1])
        if ahead.all():
            return Crossing(flops=None, reason=f"AR is ahead at every compute {span}",
                            ar_ahead_at_end=at_end)
        if (gap < 0).all():
            return Crossing(flops=None, reason=f"{other} is ahead at every compute {span}")
        return Crossing(flops=None, reason=f"the laws never go from AR ahead to {other} ahead {span}",
                        ar_ahead_at_end=at_end)
    i = turns[0]

    def gap_at(log10_flops: float) -> float:
        return float(loss_gap(law_mdm, law_ar, 10.0**log10_flops, unique_tokens, cost_factor)[0])

    lo, hi = log_flops[i], log_flops[i + 1]
    if gap_at(hi) > 0 or gap_at(lo) <= 0:  # the grid's minimisation and the refined one disagree
        return Crossing(flops=float(10.0 ** (0.5 * (lo + hi))), reason="")
    return Crossing(flops=float(10.0 ** brentq(gap_at, lo, hi, xtol=1e-5)), reason="")


def pareto_frontier(flops: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The runs no cheaper run beats: compute ascending, loss strictly descending."""
    order = np.argsort(flops, kind="stable")
    best = np.minimum.accumulate(loss[order])
    keep = np.r_[True, best[1:] < best[:-1]]
    return flops[order][keep], best[keep]


def empirical_critical_compute(flops_mdm: np.ndarray, loss_mdm: np.ndarray,
                               flops_ar: np.ndarray, loss_ar: np.ndarray, other: str = "MDM") -> Crossing:
    """The least observed compute at which MDM's best run so far matches AR's best so far.

    Both frontiers are step functions: the best loss among runs with compute ≤ C. They are
    compared only where both families have runs on either side (beyond a family's largest run
    its best loss is unknown, not flat). No interpolation: the value is a compute some run used.
    """
    if len(flops_mdm) == 0 or len(flops_ar) == 0:
        return Crossing(flops=None, reason="one family has no runs at this U")
    front_mdm = pareto_frontier(flops_mdm, loss_mdm)
    front_ar = pareto_frontier(flops_ar, loss_ar)
    start = max(front_mdm[0][0], front_ar[0][0])
    end = min(flops_mdm.max(), flops_ar.max())
    grid = np.unique(np.concatenate([flops_mdm, flops_ar]))
    grid = grid[(grid >= start) & (grid <= end)]
    if len(grid) == 0:
        return Crossing(flops=None, reason="the two families' runs at this U do not overlap "
                                           "in compute")

    def best_so_far(front: tuple[np.ndarray, np.ndarray], at: np.ndarray) -> np.ndarray:
        return front[1][np.searchsorted(front[0], at, side="right") - 1]

    gap = best_so_far(front_mdm, grid) - best_so_far(front_ar, grid)
    if gap[0] <= 0:
        return Crossing(flops=None, reason=f"{other} is already ahead at the least compute where both "
                                           "families have runs")
    behind = np.flatnonzero(gap <= 0)
    if len(behind) == 0:
        return Crossing(flops=None, reason=f"AR stays ahead up to the largest compute both "
                                           f"families reached ({end:.2e} FLOPs)")
    return Crossing(flops=float(grid[behind[0]]), reason="")


@dataclass(frozen=True, slots=True, kw_only=True)
class PowerLaw:
    coefficient: float  # FLOPs at U = 1 token
    exponent: float


Regression = Literal["u_on_c", "c_on_u"]
REGRESSIONS: dict[str, str] = {
    "u_on_c": "log U on log C, the paper's direction",
    "c_on_u": "log C on log U",
}


def fit_power_law(unique_tokens: np.ndarray, flops: np.ndarray,
                  regress: Regression = "u_on_c") -> PowerLaw | None:
    """Least squares in log-log, written as C = coefficient · U^exponent either way.

    "u_on_c" is the paper's (Prabhudesai et al. 2025: log10 U = 0.460 log10 C − 1.050, so
    C ∝ U^(1/0.460) = U^2.174): U's residuals are minimised. "c_on_u" minimises C's. Through
    two points both are the same line; with scattered points the first has the larger exponent.
    """
    keep = np.isfinite(flops) & (flops > 0)
    log_u, log_c = np.log(unique_tokens[keep]), np.log(flops[keep])
    if len(np.unique(log_u)) < 2 or len(np.unique(log_c)) < 2:
        return None
    if regress == "c_on_u":
        exponent, intercept = np.polyfit(log_u, log_c, 1)
        return PowerLaw(coefficient=math.exp(intercept), exponent=float(exponent))
    slope, intercept = np.polyfit(log_c, log_u, 1)  # log U = intercept + slope · log C
    return PowerLaw(coefficient=math.exp(-intercept / slope), exponent=float(1.0 / slope))
