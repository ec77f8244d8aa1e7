"""Everything `sweeper fit` computes, per family and across families, and what it had to skip.

The fitter and the frontier are pure numerics; this module decides what the data can support.
Degenerate input (one family, no repeated-epoch rows, too few rows, a parameter no row
depends on, an estimate that runs to a search bound) never raises: the affected parameter is
reported as skipped or unidentified and a note says why, and everything else is still fitted.
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import os
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from sweeper.fit import bootstrap, frontier, laws
from sweeper.fit.profile import Profile, profile_step1, profile_step2
from sweeper.fit.fitter import (
    FitPlan,
    at_upper_bound,
    fit_step1,
    fit_step2,
    fit_two_step,
    law_from_vector,
    single_threaded_blas,
)
from sweeper.fit.laws import PARAMETER_NAMES, STEP1_NAMES, STEP2_NAMES
from sweeper.fit.table import Observations

Status = Literal["fitted", "fixed", "skipped", "unidentified"]
SYMBOLS = {"E": "E", "A": "A", "B": "B", "alpha": "α", "beta": "β",
           "R_D_star": "R*_D", "R_N_star": "R*_N"}


@dataclass(frozen=True, slots=True, kw_only=True)
class FitOptions:
    fixed: tuple[tuple[str, float], ...] = ()  # JSON names, natural units
    tie_exponents: bool = False
    resamples: int = 1000
    seed: int = 0
    confidence: float = 0.9
    cv_folds: int = 0  # 0: leave-one-out
    restarts: int = 1  # bootstrap refits also start from this many start-grid points per step
    profiles: bool = True  # profile likelihood of every fitted parameter
    processes: int = 0  # families fitted in parallel processes; 0: one per core, up to one each

    def __post_init__(self) -> None:
        for name, value in self.fixed:
            if name not in PARAMETER_NAMES:
                raise ValueError(f"cannot fix '{name}': the parameters are "
                                 f"{', '.join(PARAMETER_NAMES)}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"cannot fix {name}={value}: expected a positive number")
        fixed = dict(self.fixed)
        if self.tie_exponents and {"alpha", "beta"} <= fixed.keys() \
                and fixed["alpha"] != fixed["beta"]:
            raise ValueError("--tie needs alpha = beta, but they are fixed to different values")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must lie between 0 and 1, got {self.confidence}")
        if self.resamples < 0 or self.cv_folds < 0 or self.cv_folds == 1:
            raise ValueError("resamples must be ≥ 0 and cv folds 0 (leave-one-out) or ≥ 2")

    def fixed_with_tie(self) -> dict[str, float]:
        """The fixed values, with a tie extending a fixed exponent to the other one."""
        fixed = dict(self.fixed)
        if self.tie_exponents:
            for one, other in (("alpha", "beta"), ("beta", "alpha")):
                if one in fixed:
                    fixed.setdefault(other, fixed[one])
        return fixed


@dataclass(frozen=True, slots=True, kw_only=True)
class Estimate:
    value: float | None
    lo: float | None  # bootstrap percentile interval
    hi: float | None
    status: Status
    profile: Profile | None = None  # the profile likelihood, where one was computed

    @property
    def weak(self) -> bool:
        """Weakly identified: the profile interval spans more than a decade (or is open)."""
        return self.profile is not None and self.profile.weak


@dataclass(frozen=True, slots=True, kw_only=True)
class Rollout:
    """The largest-compute configurations predicted by a fit (from the start grid) without them."""

    rows: np.ndarray  # indices into the family's observations
    predicted: np.ndarray  # loss, nats per token
    observed: np.ndarray
    min_flops: float  # the held-out configurations use this much compute or more

    @property
    def mean_abs_error(self) -> float:
        return float(np.mean(np.abs(self.predicted - self.observed)))

    @property
    def mean_abs_relative_error(self) -> float:
        return float(np.mean(np.abs(self.predicted / self.observed - 1.0)))


@dataclass(frozen=True, slots=True, kw_only=True)
class FamilyFit:
    family: str
    observations: Observations
    n_trials: int  # rows as read, repeated seeds included
    estimates: dict[str, Estimate]
    vector: np.ndarray | None  # point estimate in PARAMETER_NAMES order; None: nothing fitted
    draws: np.ndarray  # (resamples, parameters) bootstrap refits
    r2_in_sample: float | None
    r2_cv: float | None
    notes: tuple[str, ...]
    # single-epoch rows with N > U_N, where step 1 used the law's N' and fitted R*_N alongside
    oversized_single: int = 0
    rollout: Rollout | None = None

    @property
    def law(self) -> laws.DataConstrainedLaw | None:
        return None if self.vector is None else law_from_vector(self.vector)

    @property
    def has_data_constrained_law(self) -> bool:
        return self.vector is not None and bool(np.isfinite(self.vector[len(STEP1_NAMES):]).all())

    def seed_spread(self) -> tuple[int, float] | None:
        """(configurations with several seeds, their mean loss standard deviation)."""
        repeated = self.observations.num_seeds > 1
        if not repeated.any():
            return None
        return int(repeated.sum()), float(np.mean(self.observations.loss_std[repeated]))


@dataclass(frozen=True, slots=True, kw_only=True)
class CritPoint:
    unique_tokens: float
    law: Estimate  # C_crit from the fitted laws (FLOPs), with its bootstrap interval
    empirical: float | None  # from the observed Pareto frontiers
    extrapolated: bool  # the law's C_crit lies outside the compute the runs used
    reasons: tuple[str, ...]  # why a value is missing


@dataclass(frozen=True, slots=True, kw_only=True)
class CritLaw:
    """C_crit = coefficient · U^exponent from log U regressed on log C (the paper's direction);
    `c_on_u` is the same data regressed the other way, shown beside it."""

    coefficient: Estimate
    exponent: Estimate
    source: Literal["laws", "empirical"]
    c_on_u: tuple[Estimate, Estimate] | None = None  # (coefficient, exponent)


@dataclass(frozen=True, slots=True, kw_only=True)
class Analysis:
    families: dict[str, FamilyFit]
    points: tuple[CritPoint, ...]
    c_crit: CritLaw | None
    crit_draws: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))  # (resamples, U)
    notes: tuple[str, ...] = field(default=())
    options: FitOptions = field(default_factory=FitOptions)
    # The validation source's entropy rate per token where it is known exactly (a synthetic
    # source under the `symbols` tokenizer): the floor under every loss, beside the fitted E.
    entropy_rate: float | None = None


def _step1_blockers(single: Observations, free: tuple[str, ...], tie: bool) -> list[str]:
    """Why step 1 cannot run on these single-epoch rows (empty list: it can)."""
    if not free:
        return []
    if len(single) == 0:
        return ["no single-epoch rows (tokens ≤ unique_tokens) for step 1, so E, A, B, α, β "
                "were not fitted; fix them all with --fix to fit R*_D and R*_N"]
    blockers = []
    count = len(free) - (tie and {"alpha", "beta"} <= set(free))
    if len(single) <= count:
        blockers.append(f"step 1 has {count} free parameters but only {len(single)} single-epoch "
                        f"configurations (needs at least {count + 1})")
    for axis, values, names in (("model sizes", single.num_params, ("A", "alpha")),
                                ("token counts", single.tokens, ("B", "beta"))):
        distinct = len(np.unique(values))
        if set(names) & set(free) and distinct < 3:
            blockers.append(f"{' and '.join(SYMBOLS[n] for n in names)} cannot be identified: the "
                            f"single-epoch rows have {distinct} distinct {axis} (needs 3, or fix "
                            f"{' and '.join(names)} with --fix)")
    return blockers


def _step2_free(observations: Observations, base: laws.ChinchillaLaw, fixed: dict[str, float],
                notes: list[str]) -> tuple[str, ...]:
    """Which of R*_D, R*_N these rows can identify; notes say why one is left out."""
    free = []
    repeated = int((~observations.single_epoch).sum())
    if "R_D_star" not in fixed:
        if repeated >= 2:
            free.append("R_D_star")
        else:
            notes.append(f"R*_D not fitted: {repeated} repeated-epoch row(s) (tokens > "
                         "unique_tokens); it needs at least 2")
    if "R_N_star" not in fixed:
        _, excess = laws.excess_params_split(base, observations.num_params, observations.tokens,
                                             observations.unique_tokens)
        oversized = int((excess > 1e-6).sum())
        if repeated < 2:
            notes.append(f"R*_N not fitted: {repeated} repeated-epoch row(s); on single-epoch rows "
                         "alone the decay of excess parameters cannot be told apart from the "
                         "Chinchilla terms, so R*_N stays ∞ (N' = N) and the law is Chinchilla's")
        elif oversized >= 2:
            free.append("R_N_star")
        else:
            notes.append(f"R*_N not fitted: {oversized} row(s) have more parameters than are "
                         "compute-optimal for their unique data (U_N under the step-1 fit), "
                         "and R*_N only affects such rows; it needs at least 2")
    return tuple(free)


def _bound_is_the_models(profile: Profile | None, value: float) -> bool:
    """Whether the profile rises within a decade inward of an estimate on a search bound: the
    data then want the parameter at or beyond the bound, and the limit is the search range's."""
    if profile is None:
        return False
    inner = profile.lo if profile.hi is None else profile.hi
    if inner is None or inner <= 0 or value <= 0:
        return False
    return max(inner, value) / min(inner, value) <= 10.0


def _unidentified(name: str, value: float, lo: float | None, hi: float | None,
                  notes: list[str], profile: Profile | None = None) -> Estimate:
    """An estimate on a search bound: no value; for R*, the one-sided bound the data do give."""
    text = f"{SYMBOLS[name]} not identified: its estimate ran to the search bound ({value:.4g})"
    if name not in STEP2_NAMES:
        if _bound_is_the_models(profile, value):
            notes.append(text + "; that is the limit of the fitter's search range, not of the "
                                "data: the objective keeps falling toward the bound, so the "
                                "law's form does not suit these rows (check their units)")
        else:
            notes.append(text + "; the data do not pin it down")
        return Estimate(value=None, lo=None, hi=None, status="unidentified", profile=profile)
    if at_upper_bound(name, value):
        notes.append(text + ": the rows show no measurable decay, so only a lower bound is known "
                            "(the interval's lower end)")
        return Estimate(value=None, lo=lo, hi=None, status="unidentified", profile=profile)
    notes.append(text + ": repeats are worth almost nothing in these rows, so only an upper "
                        "bound is known (the interval's upper end)")
    return Estimate(value=None, lo=None, hi=hi, status="unidentified", profile=profile)


def _profile_notes(name: str, value: float, profile: Profile | None) -> list[str]:
    if profile is None:
        return []
    notes = []
    if profile.weak:
        span = (f"from {'the end of its grid' if profile.lo is None else f'{profile.lo:.4g}'} "
                f"to {'the end of its grid' if profile.hi is None else f'{profile.hi:.4g}'}")
        notes.append(f"{SYMBOLS[name]} weakly identified: its profile likelihood stays within "
                     f"the threshold (deviance {profile.threshold:.2f}) {span}, more than a "
                     f"decade; the estimate {value:.4g} is one point of a flat valley")
    if profile.lower_minimum is not None:
        notes.append(f"{SYMBOLS[name]}: its profile reached a lower objective at "
                     f"{profile.lower_minimum:.4g} than the fit's estimate {value:.4g}; the "
                     "objective has more than one valley")
    return notes


def _predict(observations: Observations) -> bootstrap.Predict:
    def predict(vector: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return laws.data_constrained_loss(law_from_vector(vector), observations.num_params[rows],
                                          observations.tokens[rows],
                                          observations.unique_tokens[rows])
    return predict


def fit_family(observations: Observations, n_trials: int, options: FitOptions,
               seed: int) -> FamilyFit:
    family = str(observations.family[0])
    fixed = options.fixed_with_tie()
    notes: list[str] = []
    single = observations.single_epoch
    step1_free = tuple(name for name in STEP1_NAMES if name not in fixed)
    blockers = _step1_blockers(observations.select(single), step1_free, options.tie_exponents)
    if blockers:
        notes.extend(blockers + ["nothing fitted for this family: step 2 needs the step-1 values"])
        skipped = {name: Estimate(value=fixed.get(name), lo=None, hi=None,
                                  status="fixed" if name in fixed else "skipped")
                   for name in PARAMETER_NAMES}
        return FamilyFit(family=family, observations=observations, n_trials=n_trials,
                         estimates=skipped, vector=None, draws=np.empty((0, len(PARAMETER_NAMES))),
                         r2_in_sample=None, r2_cv=None, notes=tuple(notes))

    plan1 = FitPlan(fixed=tuple(fixed.items()), tie_exponents=options.tie_exponents,
                    step1_free=step1_free, step2_free=())
    single_rows = observations.select(single)
    step1 = fit_step1(single_rows, plan1)
    base = laws.ChinchillaLaw(**step1.values)
    plan = FitPlan(fixed=plan1.fixed, tie_exponents=options.tie_exponents, step1_free=step1_free,
                   step2_free=_step2_free(observations, base, fixed, notes))
    _, excess = laws.excess_params_split(base, single_rows.num_params, single_rows.tokens,
                                         single_rows.unique_tokens)
    oversized = int((excess > 1e-6).sum())
    if "R_N_star" in plan.step2_free and oversized and step1_free:
        # The law gives N' < N on these rows, so step 1 cannot assume N' = N there.
        plan = replace(plan, step1_joint=True)
        step1 = fit_step1(single_rows, plan, start=step1.values)
        base = laws.ChinchillaLaw(**step1.values)
    step2 = fit_step2(observations, base, plan)
    vector = np.array([step1.values[name] for name in STEP1_NAMES]
                      + [step2.values[name] if name in plan.step2_free or name in fixed
                         else math.nan for name in STEP2_NAMES])
    at_bound = set(step1.at_bound + step2.at_bound)
    profiles: dict[str, Profile] = {}
    if options.profiles:
        profiles.update(profile_step1(single_rows, plan, step1.values, step1.nuisance,
                                      options.confidence))
        profiles.update(profile_step2(observations, base, plan, step2.values, options.confidence))
        if "alpha" in profiles and options.tie_exponents and "beta" not in profiles:
            profiles["beta"] = profiles["alpha"]

    def refit(weights: np.ndarray) -> np.ndarray:
        return fit_two_step(observations, plan, weights, start=vector).vector

    def restarted(weights: np.ndarray) -> np.ndarray:
        return fit_two_step(observations, plan, weights, start=vector,
                            restarts=options.restarts).vector

    draws = bootstrap.bootstrap(restarted, single.astype(int), options.resamples, seed,
                                len(PARAMETER_NAMES))
    estimates = {}
    for i, name in enumerate(PARAMETER_NAMES):
        if name in fixed:
            estimates[name] = Estimate(value=fixed[name], lo=fixed[name], hi=fixed[name],
                                       status="fixed")
        elif math.isnan(vector[i]):
            estimates[name] = Estimate(value=None, lo=None, hi=None, status="skipped")
        else:
            interval = bootstrap.percentile_interval(draws[:, i], options.confidence)
            lo = None if interval is None else interval.lo
            hi = None if interval is None else interval.hi
            if name in at_bound:
                estimates[name] = _unidentified(name, float(vector[i]), lo, hi, notes,
                                                profiles.get(name))
            else:
                estimates[name] = Estimate(value=float(vector[i]), lo=lo, hi=hi, status="fitted",
                                           profile=profiles.get(name))
                notes += _profile_notes(name, float(vector[i]), profiles.get(name))

    # R² of the final law over the rows it claims to describe.
    rows = np.arange(len(observations))
    if math.isnan(vector[PARAMETER_NAMES.index("R_D_star")]) and not single.all():
        rows = np.flatnonzero(single)
        notes.append("R² covers the single-epoch rows only: without R*_D the law does not "
                     "describe repeated-epoch rows")
    predict = _predict(observations)
    r2_in = bootstrap.r_squared(observations.loss[rows], predict(vector, rows))
    r2_cv = None
    if len(observations) >= 3:
        predicted = bootstrap.cross_validated_predictions(refit, predict, len(observations),
                                                          options.cv_folds, seed)
        r2_cv = bootstrap.r_squared(observations.loss[rows], predicted[rows])
    rollout = _rollout(observations, plan, step1_free, options, notes)
    if options.resamples == 0:
        notes.append("no bootstrap resamples requested, so no intervals")
    return FamilyFit(family=family, observations=observations, n_trials=n_trials,
                     estimates=estimates, vector=vector, draws=draws, r2_in_sample=r2_in,
                     r2_cv=r2_cv, notes=tuple(notes),
                     oversized_single=oversized if plan.step1_joint else 0, rollout=rollout)


def _rollout(observations: Observations, plan: FitPlan, step1_free: tuple[str, ...],
             options: FitOptions, notes: list[str]) -> Rollout | None:
    """Fit without the largest-compute configurations, from the start grid (a warm start from
    the full fit would carry what it saw of them), and predict them."""
    held = bootstrap.rollout_rows(observations.flops)
    kept = np.ones(len(observations), bool)
    kept[held] = False
    remaining = observations.select(kept)
    blockers = _step1_blockers(remaining.select(remaining.single_epoch), step1_free,
                               options.tie_exponents)
    if len(held) == len(observations) or blockers:
        notes.append("no rollout error: without its largest-compute configurations the family "
                     "cannot be fitted (" + (blockers[0] if blockers else "too few rows") + ")")
        return None
    if "R_D_star" in plan.step2_free and int((~remaining.single_epoch).sum()) < 2:
        plan = replace(plan, step2_free=tuple(n for n in plan.step2_free if n != "R_D_star"))

    def refit(weights: np.ndarray) -> np.ndarray:
        return fit_two_step(observations, plan, weights).vector

    predicted = bootstrap.rollout_predictions(refit, _predict(observations), held,
                                              len(observations))
    return Rollout(rows=held, predicted=predicted, observed=observations.loss[held],
                   min_flops=float(observations.flops[held].min()))


def _family_rows_at(fit: FamilyFit, unique_tokens: float) -> Observations:
    return fit.observations.select(fit.observations.unique_tokens == unique_tokens)


def _crit_points(ar: FamilyFit, mdm: FamilyFit, budgets: tuple[float, ...], use_laws: bool,
                 options: FitOptions) -> tuple[tuple[CritPoint, ...], np.ndarray]:
    """C_crit at each U from the laws (with bootstrap draws) and from the observed frontiers."""
    resamples = min(len(ar.draws), len(mdm.draws)) if use_laws else 0
    draws = np.full((resamples, len(budgets)), np.nan)
    points = []
    for j, unique_tokens in enumerate(budgets):
        reasons = []
        rows_ar, rows_mdm = _family_rows_at(ar, unique_tokens), _family_rows_at(mdm, unique_tokens)
        observed = frontier.empirical_critical_compute(rows_mdm.flops, rows_mdm.loss,
                                                       rows_ar.flops, rows_ar.loss)
        if observed.reason:
            reasons.append(f"observed: {observed.reason}")
        law_value, extrapolated, interval = None, False, None
        if use_laws:
            crossing = frontier.critical_compute(mdm.law, ar.law, unique_tokens)
            law_value = crossing.flops
            if crossing.reason:
                reasons.append(f"laws: {crossing.reason}")
            else:
                used = np.concatenate([rows_ar.flops, rows_mdm.flops])
                extrapolated = not (len(used) and used.min() <= law_value <= used.max())
            for b in range(resamples):
                if np.isfinite(ar.draws[b]).all() and np.isfinite(mdm.draws[b]).all():
                    draws[b, j] = frontier.critical_compute(
                        law_from_vector(mdm.draws[b]), law_from_vector(ar.draws[b]),
                        unique_tokens, near=law_value).flops or np.nan
            interval = bootstrap.percentile_interval(np.log(draws[:, j]), options.confidence)
        points.append(CritPoint(
            unique_tokens=unique_tokens,
            law=Estimate(value=law_value,
                         lo=None if interval is None else math.exp(interval.lo),
                         hi=None if interval is None else math.exp(interval.hi),
                         status="fitted" if law_value is not None else "skipped"),
            empirical=observed.flops, extrapolated=extrapolated, reasons=tuple(reasons)))
    return tuple(points), draws


def _power_law(budgets: np.ndarray, values: np.ndarray, draws: np.ndarray,
               options: FitOptions, regress: frontier.Regression) -> tuple[Estimate, Estimate]:
    """A C_crit power law in one regression direction, with bootstrap intervals from `draws`
    (rows of C_crit per U; rows with a missing U are left out)."""
    line = frontier.fit_power_law(budgets, values, regress)
    assert line is not None
    used = np.isfinite(values)
    complete = np.isfinite(draws[:, used]).all(axis=1) if draws.size else np.zeros(0, bool)
    lines = [frontier.fit_power_law(budgets[used], row, regress)
             for row in draws[complete][:, used]] if draws.size else []
    coefficients = np.array([np.log(fit.coefficient) for fit in lines if fit is not None])
    exponents = np.array([fit.exponent for fit in lines if fit is not None])
    log_coefficient = bootstrap.percentile_interval(coefficients, options.confidence)
    exponent = bootstrap.percentile_interval(exponents, options.confidence)
    return (Estimate(value=line.coefficient,
                     lo=None if log_coefficient is None else math.exp(log_coefficient.lo),
                     hi=None if log_coefficient is None else math.exp(log_coefficient.hi),
                     status="fitted"),
            Estimate(value=line.exponent, lo=None if exponent is None else exponent.lo,
                     hi=None if exponent is None else exponent.hi, status="fitted"))


def _crit_law(points: tuple[CritPoint, ...], draws: np.ndarray, options: FitOptions,
              notes: list[str]) -> CritLaw | None:
    """The log-log line C_crit = coefficient · U^exponent, with bootstrap intervals: log U on
    log C as the paper regresses it, and log C on log U beside it."""
    budgets = np.array([p.unique_tokens for p in points])
    from_laws = np.array([np.nan if p.law.value is None else p.law.value for p in points])
    observed = np.array([np.nan if p.empirical is None else p.empirical for p in points])
    if frontier.fit_power_law(budgets, from_laws) is not None:
        used = np.isfinite(from_laws)
        complete = np.isfinite(draws[:, used]).all(axis=1)
        if len(draws) and complete.mean() < 0.9:
            notes.append(f"C_crit law intervals use the {int(complete.sum())} of {len(draws)} "
                         "resamples whose laws cross at every U")
        coefficient, exponent = _power_law(budgets, from_laws, draws, options, "u_on_c")
        return CritLaw(coefficient=coefficient, exponent=exponent, source="laws",
                       c_on_u=_power_law(budgets, from_laws, draws, options, "c_on_u"))
    if frontier.fit_power_law(budgets, observed) is None:
        notes.append("no C_crit law: it needs a crossing at 2 or more unique-data budgets U")
        return None
    notes.append("C_crit law fitted to the observed frontiers (the fitted laws did not give "
                 "crossings at 2 or more U); no interval")
    empty = np.empty((0, len(budgets)))
    coefficient, exponent = _power_law(budgets, observed, empty, options, "u_on_c")
    return CritLaw(coefficient=coefficient, exponent=exponent, source="empirical",
                   c_on_u=_power_law(budgets, observed, empty, options, "c_on_u"))


def analyse(observations: Observations, trials_per_family: dict[str, int],
            options: FitOptions) -> Analysis:
    """Fit every family, then compare 'ar' with 'mdm' where both exist."""
    with single_threaded_blas():
        return _analyse(observations, trials_per_family, options)


def _fit_one(job: tuple[Observations, int, FitOptions, int]) -> FamilyFit:
    with single_threaded_blas():
        return fit_family(*job)


def _fit_families(jobs: list[tuple[Observations, int, FitOptions, int]],
                  processes: int) -> list[FamilyFit]:
    """Fit the families, in parallel processes where there are several and the cores to run
    them: families are independent and each fit is single-threaded Python, so two families on
    two cores take the time of one. Seeds are fixed per family, so the result is the same."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = min(len(jobs), processes or cores or 1)
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [fit_family(*job) for job in jobs]
    context = multiprocessing.get_context("fork")  # the children inherit the imported modules
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(_fit_one, jobs))


def _analyse(observations: Observations, trials_per_family: dict[str, int],
             options: FitOptions) -> Analysis:
    notes: list[str] = []
    seeds = np.random.SeedSequence(options.seed).spawn(len(observations.families()))
    jobs = [(observations.of_family(name), trials_per_family[name], options,
             int(seed.generate_state(1)[0]))
            for name, seed in zip(observations.families(), seeds, strict=True)]
    families = {str(fit.family): fit for fit in _fit_families(jobs, options.processes)}
    if not {"ar", "mdm"} <= families.keys():
        notes.append("C_crit not computed: it compares families 'ar' and 'mdm'; found "
                     + ", ".join(f"'{name}'" for name in families))
        return Analysis(families=families, points=(), c_crit=None, notes=tuple(notes),
                        options=options)
    ar, mdm = families["ar"], families["mdm"]
    budgets = tuple(sorted(set(ar.observations.repeated_unique_tokens())
                           | set(mdm.observations.repeated_unique_tokens())))
    if not budgets:
        notes.append("C_crit not computed: no repeated-epoch rows, so no unique-data budget U "
                     "to compare the families at")
        return Analysis(families=families, points=(), c_crit=None, notes=tuple(notes),
                        options=options)
    use_laws = ar.has_data_constrained_law and mdm.has_data_constrained_law
    if not use_laws:
        lacking = [fit.family for fit in (ar, mdm) if not fit.has_data_constrained_law]
        notes.append(f"C_crit from the laws skipped: {', '.join(lacking)} has no full "
                     "data-constrained law (E, A, B, α, β, R*_D and R*_N); observed frontiers only")
    if use_laws:
        vague = [f"{fit.family}'s {SYMBOLS[name]}" for fit in (ar, mdm)
                 for name in STEP2_NAMES if fit.estimates[name].status == "unidentified"]
        if vague:
            notes.append(f"C_crit from the laws uses {', '.join(vague)} at its search bound "
                         "(no decay seen), so it assumes repeats keep their full value")
    points, draws = _crit_points(ar, mdm, budgets, use_laws, options)
    c_crit = _crit_law(points, draws, options, notes)
    return Analysis(families=families, points=points, c_crit=c_crit, crit_draws=draws,
                    notes=tuple(notes), options=options)
