"""Profile likelihood: what the data pin down and what they leave in a flat valley.

For one parameter at a time, the objective is minimised over the others on a grid of its values
(the profile). Each parameter is profiled on the objective of the step that estimates it: E, A,
B, α, β on step 1's (single-epoch rows), R*_D and R*_N on step 2's (all rows, step 1 frozen).

The threshold is one rule, fixed beforehand and the same for every parameter and data set:
Wilks' theorem (Wilks 1938) for a profile likelihood-ratio interval (Venzon & Moolgavkar 1988),
deviance ≤ χ²₁ quantile at the fit's confidence (2.71 at 90%). The objective is Huber's loss
with δ = 1e-3 on log loss, which is the absolute error wherever residuals exceed δ (every real
data set here), i.e. the negative log-likelihood of Laplace errors; with their scale profiled out
that gives deviance = 2·n·log(H(θ)/H_min), n the rows the step fits, H its mean Huber loss.
A parameter whose interval spans more than a decade (hi/lo > 10), or runs to the end of its
grid, is weakly identified: the data leave it in a flat valley, and a point estimate alone says
little.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import chi2

from sweeper.fit import laws
from sweeper.fit.fitter import FitPlan, fit_step1, fit_step2
from sweeper.fit.laws import STEP1_NAMES, STEP2_NAMES
from sweeper.fit.multistart import bounds_of, to_internal, to_natural
from sweeper.fit.table import Observations

WEAK_RATIO = 10.0  # an interval wider than a decade
# Grid half-widths around the estimate, internal units (log for E, A, B, R*); R* spans its
# whole search range, since a flat valley in R* typically runs for decades.
_HALF_WIDTH = {"E": math.log(10.0), "A": math.log(1e3), "B": math.log(1e3), "alpha": 0.3,
               "beta": 0.3}
_POINTS_PER_SIDE = 12
_R_STAR_POINTS = 37  # 1e-2 … 1e7 epochs: four per decade
_STOP_FACTOR = 8.0  # a walk stops once the deviance is this many thresholds above the minimum


def deviance_threshold(confidence: float) -> float:
    return float(chi2.ppf(confidence, 1))


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    name: str
    values: np.ndarray  # natural units, ascending
    deviance: np.ndarray  # 2·n·log(H/H_min) at each value
    threshold: float
    lo: float | None  # None: the interval runs to the low end of the grid (or a bound)
    hi: float | None
    lower_minimum: float | None  # a value with a lower objective than the estimate's, if found

    @property
    def weak(self) -> bool:
        if self.lo is None or self.hi is None:
            return True
        return self.lo > 0 and self.hi / self.lo > WEAK_RATIO


def _grid(name: str, estimate: float) -> tuple[np.ndarray, np.ndarray]:
    """(values below the estimate, descending; values above, ascending), internal units."""
    lo, hi = bounds_of(name)
    if name in STEP2_NAMES:
        full = np.linspace(lo, hi, _R_STAR_POINTS)
        centre = min(max(to_internal(name, estimate), lo), hi)
        return full[full < centre][::-1], full[full > centre]
    centre = to_internal(name, estimate)
    width = _HALF_WIDTH[name]
    steps = np.arange(1, _POINTS_PER_SIDE + 1) * width / _POINTS_PER_SIDE
    below, above = centre - steps, centre + steps
    return below[below >= lo], above[above <= hi]


def _walk(objective: Callable[[float, dict[str, float]], tuple[float, dict[str, float]]],
          points: np.ndarray, start: dict[str, float], scale: float, stop: float,
          best: float) -> list[tuple[float, float]]:
    """Objective along `points`, each fit warm-started from the previous one."""
    out = []
    warm = start
    for point in points:
        value, warm = objective(float(point), warm)
        out.append((float(point), value))
        if math.isfinite(value) and scale * math.log(max(value, 1e-300) / best) > stop:
            break
    return out


def _interval(values: np.ndarray, deviance: np.ndarray, centre: int,
              threshold: float) -> tuple[float | None, float | None]:
    """Where the deviance stays under the threshold around `centre`, interpolated between grid
    points (internal units); None where it reaches the end of the grid."""
    def edge(step: int) -> float | None:
        i = centre
        while 0 <= i + step < len(values):
            j = i + step
            if not deviance[j] <= threshold:
                if not math.isfinite(deviance[j]):
                    return float(values[i])
                share = (threshold - deviance[i]) / (deviance[j] - deviance[i])
                return float(values[i] + share * (values[j] - values[i]))
            i = j
        return None
    return edge(-1), edge(+1)


def _profile(name: str, estimate: float, best_objective: float, rows: float, confidence: float,
             start: dict[str, float],
             objective: Callable[[float, dict[str, float]], tuple[float, dict[str, float]]]
             ) -> Profile:
    threshold = deviance_threshold(confidence)
    scale = 2.0 * rows
    floor = max(best_objective, 1e-12)  # a noise-free fit has H = 0: keep the log finite
    below, above = _grid(name, estimate)
    stop = _STOP_FACTOR * threshold
    walked = _walk(objective, below, start, scale, stop, floor)[::-1]
    centre = len(walked)
    walked.append((to_internal(name, estimate), best_objective))
    walked += _walk(objective, above, start, scale, stop, floor)
    internal = np.array([point for point, _ in walked])
    objectives = np.array([value for _, value in walked])
    lowest = float(np.nanmin(objectives))
    lower_minimum = None
    if lowest < best_objective * (1 - 1e-6) - 1e-12:
        lower_minimum = to_natural(name, float(internal[int(np.nanargmin(objectives))]))
    reference = max(min(lowest, best_objective), 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        deviance = scale * np.log(np.maximum(objectives, 1e-300) / reference)
    deviance = np.where(np.isfinite(deviance), np.maximum(deviance, 0.0), np.inf)
    lo, hi = _interval(internal, deviance, centre, threshold)
    return Profile(name=name, values=np.array([to_natural(name, v) for v in internal]),
                   deviance=deviance, threshold=threshold,
                   lo=None if lo is None else to_natural(name, lo),
                   hi=None if hi is None else to_natural(name, hi), lower_minimum=lower_minimum)


def profile_step1(single: Observations, plan: FitPlan, values: dict[str, float],
                  nuisance: float | None, confidence: float) -> dict[str, Profile]:
    """Profiles of step 1's free parameters on the single-epoch rows. `values` is the estimate
    (step-1 names); `nuisance` step 1's own R*_N where it fitted one."""
    free = plan.step1_free
    if not free:
        return {}
    start = dict(values) | ({} if nuisance is None else {"R_N_star": nuisance})
    held_all = tuple((name, values[name]) for name in STEP1_NAMES)
    if nuisance is not None:
        held_all += (("R_N_star", nuisance),)
    best = fit_step1(single, replace(plan, step1_free=(), fixed=plan.fixed + held_all)).objective
    profiles = {}
    tied = plan.tie_exponents and {"alpha", "beta"} <= set(free)
    for name in free:
        if tied and name == "beta":
            continue  # one exponent: α's profile is β's

        def objective(point: float, warm: dict[str, float], name: str = name
                      ) -> tuple[float, dict[str, float]]:
            held = {name: to_natural(name, point)}
            if tied and name == "alpha":
                held["beta"] = held["alpha"]
            sub = replace(plan, fixed=plan.fixed + tuple(held.items()),
                          step1_free=tuple(n for n in free if n not in held))
            fit = fit_step1(single, sub, start={**warm, **held})
            nxt = {**fit.values}
            if fit.nuisance is not None:
                nxt["R_N_star"] = fit.nuisance
            elif "R_N_star" in warm:
                nxt["R_N_star"] = warm["R_N_star"]
            return fit.objective, nxt

        profiles[name] = _profile(name, values[name], best, len(single), confidence, start,
                                  objective)
    return profiles


def profile_step2(observations: Observations, base: laws.ChinchillaLaw, plan: FitPlan,
                  values: dict[str, float], confidence: float) -> dict[str, Profile]:
    """Profiles of step 2's free parameters on all rows with the step-1 law `base` frozen."""
    free = plan.step2_free
    if not free:
        return {}
    held_all = replace(plan, step2_free=(), fixed=plan.fixed + tuple(
        (name, values[name]) for name in free))
    best = fit_step2(observations, base, held_all).objective
    profiles = {}
    for name in free:
        def objective(point: float, warm: dict[str, float], name: str = name
                      ) -> tuple[float, dict[str, float]]:
            held = {name: to_natural(name, point)}
            sub = replace(plan, fixed=plan.fixed + tuple(held.items()),
                          step2_free=tuple(n for n in free if n != name))
            fit = fit_step2(observations, base, sub, start={**warm, **held})
            return fit.objective, {**fit.values}

        profiles[name] = _profile(name, values[name], best, len(observations), confidence,
                                  dict(values), objective)
    return profiles
