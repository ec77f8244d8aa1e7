"""The two-step fit of PAPER.md's data-constrained law (Muennighoff et al. 2023, sec. 3 and App. C).

Objective (Hoffmann et al. 2022, App. D.2; kept by Muennighoff et al.): minimise
Σ_i w_i·Huber_δ(log L̂_i − log L_i), δ = 1e-3, with log L̂ = logsumexp(a − α log N', b − β log D', e)
and A = e^a, B = e^b, E = e^e, by L-BFGS from a grid of starting points, keeping the best
(the search, its coordinates and its start grids are `multistart`'s).
Step 1 fits E, A, B, α, β on single-epoch rows; step 2 fits R*_D, R*_N on all rows with the
step-1 values frozen. Fitting in log R* keeps both positive and makes their wide range
(1 … 10⁵ epochs) one scale for the optimizer.

The convention, against Muennighoff et al.'s code (huggingface/datablations: the README's
`scaling_law` and utils/parametric_fit.ipynb). Their law, like `laws.data_constrained_loss`, sets
U_N = min(N, N_opt(D_to_C(U))) on every row, single-epoch ones included, so a model larger than
compute-optimal for its data has N' < N even at one epoch. The two-step procedure as PAPER.md
states it (and this fitter did before) fits step 1 as a Chinchilla law, N' = N, on the
single-epoch runs, which biases E, A, B, α, β (and through them R*_N) whenever such rows exist:
law-generated rows do not fit back. Here step 1 evaluates the
same law: where single-epoch rows hold N > U_N (`FitPlan.step1_joint`, decided by `analysis`
from a first N' = N fit), R*_N is fitted there alongside E, A, B, α, β, and step 2 then refits
R*_D and R*_N on all rows with E, A, B, α, β frozen; a fixed R*_N enters N' as fixed. Where no
such rows exist both procedures are the same. Departures kept from theirs: D' uses
U_D = min(D, U), so a run that saw only part of a larger pool counts as single-epoch (their code
asserts U ≤ D), and R*_N is fitted only when some rows repeat data (`analysis`): on single-epoch
rows alone the decay of excess parameters cannot be told from A and α.

Weights are row multiplicities: a bootstrap resample or a cross-validation fold is a weight
vector, so neither copies the data. Values travel as one vector in the order of
`laws.PARAMETER_NAMES`, natural units; NaN marks a parameter that was not fitted.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from sweeper.fit import laws
from sweeper.fit.laws import PARAMETER_NAMES, STEP1_NAMES, STEP2_NAMES, ChinchillaLaw
from sweeper.fit.multistart import (
    STEP1_GRID,
    STEP1_R_N_STARTS,
    STEP2_GRID,
    StepFit,
    finish,
    grid_starts,
    layout_for,
    minimise,
    single_threaded_blas,
    to_internal,
)
from sweeper.fit.table import Observations

HUBER_DELTA = 1e-3  # Hoffmann et al. 2022, App. D.2
STEP1_JOINT_NAMES = STEP1_NAMES + ("R_N_star",)


@dataclass(frozen=True, slots=True, kw_only=True)
class FitPlan:
    """What one family's fit estimates, holds fixed, and skips (decided by `analysis`)."""

    fixed: tuple[tuple[str, float], ...] = ()  # natural units, JSON names
    tie_exponents: bool = False
    step1_free: tuple[str, ...] = STEP1_NAMES  # empty: every step-1 value is fixed
    step2_free: tuple[str, ...] = STEP2_NAMES  # empty: step 2 does not run
    step1_joint: bool = False  # step 1 fits R*_N too: single-epoch rows hold N > U_N

    @property
    def fixed_values(self) -> Mapping[str, float]:
        return dict(self.fixed)


def _huber(residual: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean of Huber_δ(r)/δ and its derivative per row.

    Dividing by δ and by the total weight changes no minimiser but puts the objective near
    mean |r|, a scale on which L-BFGS's default-style tolerances behave. (Written with bare
    ufuncs: on a few rows each call's overhead, not its arithmetic, is the cost.)
    """
    size = np.abs(residual)
    value = np.where(size <= HUBER_DELTA, 0.5 * residual**2 / HUBER_DELTA, size - 0.5 * HUBER_DELTA)
    total = np.add.reduce(weights)
    clipped = np.minimum(np.maximum(residual, -HUBER_DELTA), HUBER_DELTA)
    return np.add.reduce(value * weights, axis=-1) / total, clipped / HUBER_DELTA * weights / total


def _logsumexp3(t1: np.ndarray, t2: np.ndarray, t3: np.ndarray | float) -> tuple[np.ndarray, ...]:
    """log(e^t1 + e^t2 + e^t3) and the softmax weights of the three terms (t3 may be a scalar)."""
    peak = np.maximum(np.maximum(t1, t2), t3)
    p1, p2, p3 = np.exp(t1 - peak), np.exp(t2 - peak), np.exp(t3 - peak)
    total = p1 + p2 + p3
    return peak + np.log(total), p1 / total, p2 / total, p3 / total


# ----- step 1: Chinchilla law on single-epoch rows ------------------------------------------

@dataclass(frozen=True, slots=True)
class _Step1Data:
    log_params: np.ndarray
    log_tokens: np.ndarray
    log_loss: np.ndarray
    log_unique: np.ndarray | None = None  # log U_D; needed only where N' depends on R*_N


def _step1_data(observations: Observations) -> _Step1Data:
    return _Step1Data(np.log(observations.num_params), np.log(observations.tokens),
                      np.log(observations.loss), np.log(observations.data_unique_tokens))


def _step1_value(theta: np.ndarray, data: _Step1Data, weights: np.ndarray) -> np.ndarray:
    """Objective for a stack of internal vectors theta (..., 5): used to rank the start grid."""
    e, a, b, alpha, beta = (theta[..., i, None] for i in range(5))
    prediction = _logsumexp3(a - alpha * data.log_params, b - beta * data.log_tokens,
                             np.broadcast_to(e, np.broadcast_shapes(e.shape, a.shape)))[0]
    return _huber(prediction - data.log_loss, weights)[0]


def _step1_value_and_grad(theta: np.ndarray, data: _Step1Data,
                          weights: np.ndarray) -> tuple[float, np.ndarray]:
    e, a, b, alpha, beta = theta
    log_n, log_d = data.log_params, data.log_tokens
    prediction, p1, p2, p3 = _logsumexp3(a - alpha * log_n, b - beta * log_d,
                                         np.full_like(log_n, e))
    value, slope = _huber(prediction - data.log_loss, weights)
    grad = np.array([(slope * p3).sum(), (slope * p1).sum(), (slope * p2).sum(),
                     -(slope * p1 * log_n).sum(), -(slope * p2 * log_d).sum()])
    return float(value), grad


def _saturation(repeats: np.ndarray, log_decay: float) -> tuple[np.ndarray, ...]:
    """S = R*(1 − e^(−R/R*)) [Muennighoff eqs. 5-6], dS/d(log R*), and e^(−R/R*) = dS/dR."""
    decay = math.exp(min(log_decay, 50.0))
    ratio = repeats / decay
    decayed = np.exp(-ratio)
    lost = np.expm1(-ratio)  # e^(−R/R*) − 1
    return -decay * lost, decay * (-lost - ratio * decayed), decayed


def _step1_joint_value_and_grad(theta: np.ndarray, data: _Step1Data,
                                weights: np.ndarray) -> tuple[float, np.ndarray]:
    """Step 1 with N' of the law: (e, a, b, α, β, log R*_N) on single-epoch rows.

    U_N = N_opt(D_to_C(U_D)) has the closed form log U_N = K/α with
    K = log α − log β + a − b + β log U_D [Chinchilla App. D.2 composed with its inverse];
    rows with N > U_N have N' = U_N(1 + S(N/U_N − 1)), the rest N' = N.
    """
    e, a, b, alpha, beta, log_decay = theta
    log_n, log_d, log_u = data.log_params, data.log_tokens, data.log_unique
    k = math.log(alpha) - math.log(beta) + a - b + beta * log_u
    log_optimal = k / alpha
    # log(N/U_N) where positive, else 0; every term below then reduces exactly to N' = N
    # (excess 0: S = 0, g = 0, h = 0) on the rows at or under U_N.
    excess = np.where(log_n > log_optimal, np.minimum(log_n - log_optimal, 50.0), 0.0)
    repeats = np.expm1(excess)
    saturating, d_saturating, decayed = _saturation(repeats, log_decay)
    log_eff = log_n - excess + np.log1p(saturating)
    # d log N' / d log U_N and d log N' / d log R*_N
    one_plus = 1.0 + saturating
    g = 1.0 - decayed * (1.0 + repeats) / one_plus
    h = d_saturating / one_plus
    prediction, p1, p2, p3 = _logsumexp3(a - alpha * log_eff, b - beta * log_d, e)
    value, slope = _huber(prediction - data.log_loss, weights)
    t1 = slope * p1
    t2 = slope * p2
    t1g = t1 * g
    sums = np.add.reduce(np.array([
        slope * p3, t1 * (1.0 - g), t2, t1g, t1 * (-log_eff - g * (1.0 - k) / alpha),
        t2 * log_d, t1g * (log_u - 1.0 / beta), t1 * alpha * h]), axis=1)
    grad = np.array([sums[0], sums[1], sums[2] + sums[3], sums[4], -sums[5] - sums[6], -sums[7]])
    return float(value), grad


# ----- step 2: R*_D, R*_N on all rows with the step-1 law frozen -----------------------------

@dataclass(frozen=True, slots=True)
class _Step2Data:
    base: ChinchillaLaw
    data_unique: np.ndarray  # U_D
    repeats: np.ndarray  # R_D
    param_unique: np.ndarray  # U_N
    param_repeats: np.ndarray  # R_N
    log_loss: np.ndarray


def _step2_data(base: ChinchillaLaw, observations: Observations) -> _Step2Data:
    data_unique = observations.data_unique_tokens
    param_unique, param_repeats = laws.excess_params_split(
        base, observations.num_params, observations.tokens, observations.unique_tokens)
    return _Step2Data(base=base, data_unique=data_unique,
                      repeats=observations.tokens / data_unique - 1.0,
                      param_unique=param_unique, param_repeats=param_repeats,
                      log_loss=np.log(observations.loss))


def _effective(unique: np.ndarray, repeats: np.ndarray,
               log_decay: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log of U·(1 + R*(1 − e^(−R/R*))) [Muennighoff eqs. 5-6] and its derivative in log R*."""
    # An unfitted R* is ∞; e^50 ≈ 5e21 epochs behaves the same and keeps the arithmetic finite.
    decay = np.exp(np.minimum(log_decay, 50.0))
    ratio = repeats / decay
    decayed = np.exp(-ratio)
    saturating = -decay * np.expm1(-ratio)
    effective = unique * (1.0 + saturating)
    d_saturating = decay * (-np.expm1(-ratio) - ratio * decayed)  # d/d(log R*)
    return np.log(effective), unique * d_saturating / effective


def _step2_terms(theta: np.ndarray, data: _Step2Data) -> tuple[np.ndarray, ...]:
    base = data.base
    log_n, dlog_n = _effective(data.param_unique, data.param_repeats, theta[..., 1, None])
    log_d, dlog_d = _effective(data.data_unique, data.repeats, theta[..., 0, None])
    prediction, p1, p2, _ = _logsumexp3(math.log(base.A) - base.alpha * log_n,
                                        math.log(base.B) - base.beta * log_d, math.log(base.E))
    return prediction, p1, p2, dlog_n, dlog_d


def _step2_value(theta: np.ndarray, data: _Step2Data, weights: np.ndarray) -> np.ndarray:
    return _huber(_step2_terms(theta, data)[0] - data.log_loss, weights)[0]


def _step2_value_and_grad(theta: np.ndarray, data: _Step2Data,
                          weights: np.ndarray) -> tuple[float, np.ndarray]:
    prediction, p1, p2, dlog_n, dlog_d = _step2_terms(theta, data)
    value, slope = _huber(prediction - data.log_loss, weights)
    sums = np.add.reduce(np.array([slope * p2 * data.base.beta * dlog_d,
                                   slope * p1 * data.base.alpha * dlog_n]), axis=1)
    grad = -sums
    return float(value), grad


# ----- the two steps and the procedure ------------------------------------------------------

def fit_step1(observations: Observations, plan: FitPlan, weights: np.ndarray | None = None,
              start: Mapping[str, float] | None = None, restarts: int = 0) -> StepFit:
    """Fit E, A, B, α, β on single-epoch rows.

    Where the plan says so (`step1_joint`), N' follows the law on these rows and R*_N is
    fitted alongside as a nuisance (step 2 refits it on all rows); a fixed R*_N is used in N'.
    `start` (natural values) replaces the start grid by one warm L-BFGS run, as the bootstrap
    and the cross-validation do from the point estimate; `restarts` > 0 adds that many of the
    best points of a coarse start grid (3 values per parameter). With nothing free it only
    evaluates the objective.
    """
    values = {**(start or {}), **plan.fixed_values}
    w = np.ones(len(observations)) if weights is None else weights
    data = _step1_data(observations)
    uses_n_prime = plan.step1_joint or "R_N_star" in plan.fixed_values
    if not plan.step1_free:
        fixed = {name: plan.fixed_values[name] for name in STEP1_NAMES}
        if not w.sum():  # no single-epoch rows: nothing to evaluate
            return StepFit(values=fixed, objective=math.nan, at_bound=())
        theta = np.array([to_internal(name, fixed[name]) for name in STEP1_NAMES]
                         + [to_internal("R_N_star", values.get("R_N_star", math.exp(50.0)))])
        objective = (_step1_joint_value_and_grad(theta, data, w)[0] if uses_n_prime
                     else float(_step1_value(theta[:5], data, w)))
        return StepFit(values=fixed, objective=objective, at_bound=())
    layout = layout_for(STEP1_NAMES, plan.step1_free, values, plan.tie_exponents)
    warm_decay = None if start is None else start.get("R_N_star")
    warm_joint = uses_n_prime and warm_decay is not None and math.isfinite(warm_decay)
    if start is not None:
        full = np.array([to_internal(name, start[name]) for name in STEP1_NAMES])
        starts = [layout.free_from_full(full)]
        if restarts:
            coarse = list(itertools.product(*(STEP1_GRID[name][::2] for name in STEP1_NAMES)))
            starts += grid_starts(layout, coarse, lambda theta: _step1_value(theta, data, w),
                                   restarts)
    else:
        grid = list(itertools.product(*(STEP1_GRID[name] for name in STEP1_NAMES)))
        starts = grid_starts(layout, grid, lambda theta: _step1_value(theta, data, w))
    with single_threaded_blas() if start is None else nullcontext():  # worth it for 8 runs
        if not uses_n_prime:
            x, objective = minimise(layout, lambda theta: _step1_value_and_grad(theta, data, w),
                                     starts, warm=start is not None)
            return finish(layout, x, objective)
        joint_free = plan.step1_free + (("R_N_star",) if plan.step1_joint else ())
        joint = layout_for(STEP1_JOINT_NAMES, joint_free, values, plan.tie_exponents)
        if not plan.step1_joint:
            decays = [0.0]  # a placeholder: R*_N is fixed, and dropped from the starts below
        elif warm_joint:
            decays = [math.log(warm_decay)]
        else:
            decays = [math.log(decay) for decay in STEP1_R_N_STARTS]
        joint_starts = [np.r_[starts[0], decays[0]]] if warm_joint else []
        if not warm_joint or restarts:
            # The Chinchilla fit (N' = N) from the remaining starts, then the law's N' from there.
            x, _ = minimise(layout, lambda theta: _step1_value_and_grad(theta, data, w),
                             starts[1:] if warm_joint else starts, warm=start is not None)
            joint_starts += [np.r_[x, decay] for decay in decays]
        if not plan.step1_joint:  # R*_N fixed: N' uses it, nothing more to start from
            joint_starts = [point[:-1] for point in joint_starts]
        x, objective = minimise(
            joint, lambda theta: _step1_joint_value_and_grad(theta, data, w), joint_starts,
            warm=warm_joint)
    fit = finish(joint, x, objective)
    return StepFit(values={name: fit.values[name] for name in STEP1_NAMES}, objective=objective,
                   at_bound=tuple(name for name in fit.at_bound if name != "R_N_star"),
                   nuisance=fit.values["R_N_star"] if plan.step1_joint else None)


def fit_step2(observations: Observations, base: ChinchillaLaw, plan: FitPlan,
              weights: np.ndarray | None = None,
              start: Mapping[str, float] | None = None, restarts: int = 0) -> StepFit:
    """Fit R*_D, R*_N on all rows with the step-1 law `base` frozen.

    With `start`, L-BFGS runs from it and, if `restarts` > 0, also from that many of the best
    start-grid points, so a second valley of the objective is found as well as the nearest one.
    With nothing free it only evaluates the objective.

    A step-2 parameter neither fitted nor fixed has no effect on these rows (`analysis` checks
    that before leaving it out); it stays ∞, "counts in full".
    """
    free = plan.step2_free
    values = {name: plan.fixed_values.get(name, math.inf) for name in STEP2_NAMES}
    layout = layout_for(STEP2_NAMES, free, values, tie=False)
    data = _step2_data(base, observations)
    w = np.ones(len(observations)) if weights is None else weights
    if not free:
        full = np.array([to_internal(name, values[name]) for name in STEP2_NAMES])
        return StepFit(values=values, objective=float(_step2_value(full, data, w)), at_bound=())
    grid = list(itertools.product(STEP2_GRID, STEP2_GRID))
    if start is not None:
        starts = [np.array([to_internal(name, start[name]) for name in free])]
        if restarts:
            starts += grid_starts(layout, grid, lambda theta: _step2_value(theta, data, w),
                                   restarts)
    else:
        starts = grid_starts(layout, grid, lambda theta: _step2_value(theta, data, w))
    with single_threaded_blas() if start is None else nullcontext():
        x, objective = minimise(layout, lambda theta: _step2_value_and_grad(theta, data, w),
                                 starts, warm=start is not None)
    return finish(layout, x, objective)


@dataclass(frozen=True, slots=True, kw_only=True)
class TwoStepFit:
    vector: np.ndarray  # natural values in PARAMETER_NAMES order; NaN: R* not fitted nor fixed
    at_bound: tuple[str, ...]  # estimates that sit on a search bound (not identified)


def law_from_vector(vector: np.ndarray) -> laws.DataConstrainedLaw:
    """The law of a parameter vector; an unfitted R* (NaN) counts repeats in full (∞)."""
    values = dict(zip(PARAMETER_NAMES, (float(v) for v in vector), strict=True))
    base = ChinchillaLaw(**{name: values[name] for name in STEP1_NAMES})
    return laws.DataConstrainedLaw(
        base=base, **{name: math.inf if math.isnan(values[name]) else values[name]
                      for name in STEP2_NAMES})


def fit_two_step(observations: Observations, plan: FitPlan, weights: np.ndarray | None = None,
                 start: np.ndarray | None = None, restarts: int = 0) -> TwoStepFit:
    """Step 1 on the single-epoch rows, then step 2 on all rows with step 1 frozen.

    `start`, an earlier vector, replaces each step's start grid by one warm L-BFGS run, plus, in
    step 2 (where R*'s flat valleys lie), `restarts` runs from the best points of its start grid.
    """
    w = np.ones(len(observations)) if weights is None else weights
    single = observations.single_epoch
    warm = None if start is None else dict(zip(PARAMETER_NAMES, start.tolist(), strict=True))
    # Step 1 restarts only warm: its grid restarts cost 4× a refit (measured on the quickstart),
    # and the step-1 profiles show a second valley there instead.
    step1 = fit_step1(observations.select(single), plan, w[single], warm)
    step2 = fit_step2(observations, ChinchillaLaw(**step1.values), plan, w, warm, restarts)
    vector = np.array([step1.values[name] for name in STEP1_NAMES]
                      + [step2.values[name] if name in plan.step2_free
                         or name in plan.fixed_values else math.nan for name in STEP2_NAMES])
    return TwoStepFit(vector=vector, at_bound=step1.at_bound + step2.at_bound)
