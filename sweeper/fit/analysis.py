"""Everything `sweeper fit` computes per family, and what it had to skip.

The fitter and the frontier are pure numerics; this module decides what the data can support.
Degenerate input (one family, no repeated-epoch rows, too few rows, a parameter no row
depends on, an estimate that runs to a search bound) never raises: the affected parameter is
reported as skipped or unidentified and a note says why, and everything else is still fitted.
`analyse` fits every family, then hands 'ar' and 'mdm' to `critical_compute` for C_crit.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from sweeper.fit import bootstrap, critical_compute, laws
from sweeper.fit.fitter import FitPlan, fit_step1, fit_step2, fit_two_step, law_from_vector
from sweeper.fit.laws import PARAMETER_NAMES, STEP1_NAMES, STEP2_NAMES
from sweeper.fit.multistart import at_upper_bound, single_threaded_blas
from sweeper.fit.profile import Profile, profile_step1, profile_step2
from sweeper.fit.results import SYMBOLS, Analysis, Estimate, FamilyFit, FitOptions, Rollout
from sweeper.fit.table import Observations


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
        span = ("over its whole grid" if profile.lo is None and profile.hi is None else
                f"from {'the end of its grid' if profile.lo is None else f'{profile.lo:.4g}'} "
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
                                len(PARAMETER_NAMES), processes=options.processes)
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


def analyse(observations: Observations, trials_per_family: dict[str, int],
            options: FitOptions) -> Analysis:
    """Fit every family, then compare 'mdm' with 'ar' where both exist, and every other family
    with 'ar' (Analysis.versus_ar)."""
    with single_threaded_blas():
        return _analyse(observations, trials_per_family, options)


def _analyse(observations: Observations, trials_per_family: dict[str, int],
             options: FitOptions) -> Analysis:
    notes: list[str] = []
    seeds = np.random.SeedSequence(options.seed).spawn(len(observations.families()))
    jobs = [(observations.of_family(name), trials_per_family[name], options,
             int(seed.generate_state(1)[0]))
            for name, seed in zip(observations.families(), seeds, strict=True)]
    # Families one after the other, each spreading its bootstrap refits over the cores: a
    # family's refits are most of its fit, and families differ in cost (on the quickstart AR's
    # refits take three times mdm's), so sharing the refits keeps every core busy to the end.
    families = {str(fit.family): fit for fit in (fit_family(*job) for job in jobs)}
    points, c_crit, draws = critical_compute.compare(families, options, notes)
    versus = critical_compute.versus_ar(families, options, notes,
                                        mdm=(points, c_crit, draws) if "mdm" in families else None)
    return Analysis(families=families, points=points, c_crit=c_crit, crit_draws=draws,
                    notes=tuple(notes), options=options, versus_ar=versus)
