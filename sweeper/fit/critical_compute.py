"""C_crit: the compute beyond which masked diffusion ('mdm') reaches a lower loss than
autoregression ('ar') at a unique-data budget U, and the power law C_crit(U) through it; and the
same for every other family against ar (`versus_ar`: dual, bd3lm).

At each U with repeated-epoch rows, C_crit comes from the two fitted laws (with an interval from
their paired bootstrap draws) and from the observed Pareto frontiers; `frontier` does the
numerics. As in `analysis`, what the fits cannot support is skipped with a note, never raised.

Compute is the paper's C = 6ND for every family, which is what C_crit compares on. A family whose
passes process more tokens than it trains on (bd3lm: x_t ⊕ x_0, 2 per token,
sweeper.trial.processed_per_token) is compared a second time on the compute it spends, its
FLOPs counted twice: its C_crit there is the compute at which it overtakes ar paying its real cost.
"""

from __future__ import annotations

import math

import numpy as np

from sweeper.fit import bootstrap, frontier, parallel
from sweeper.fit.fitter import law_from_vector
from sweeper.fit.laws import PARAMETER_NAMES, STEP2_NAMES
from sweeper.fit.results import SYMBOLS, Comparison, CritLaw, CritPoint, Estimate, FamilyFit, FitOptions
from sweeper.fit.table import Observations
from sweeper.trial import processed_per_token


def compare(families: dict[str, FamilyFit], options: FitOptions,
            notes: list[str]) -> tuple[tuple[CritPoint, ...], CritLaw | None, np.ndarray]:
    """C_crit at each U, its law, and the bootstrap draws (resamples, U) behind its intervals;
    nothing, with a note, where the families or their rows cannot give it."""
    nothing = ((), None, np.empty((0, 0)))
    if not {"ar", "mdm"} <= families.keys():
        notes.append("C_crit not computed: it compares families 'ar' and 'mdm'; found "
                     + ", ".join(f"'{name}'" for name in families))
        return nothing
    return _compare_pair(families["ar"], families["mdm"], options, notes)


def _budgets(ar: FamilyFit, other: FamilyFit) -> tuple[float, ...]:
    return tuple(sorted(set(ar.observations.repeated_unique_tokens())
                        | set(other.observations.repeated_unique_tokens())))


def _compare_pair(ar: FamilyFit, mdm: FamilyFit, options: FitOptions, notes: list[str],
                  prefix: str = "") -> tuple[tuple[CritPoint, ...], CritLaw | None, np.ndarray]:
    """C_crit of `mdm` (or the family in its place) against `ar` on 6ND: points, law, draws."""
    nothing = ((), None, np.empty((0, 0)))
    budgets = _budgets(ar, mdm)
    if not budgets:
        notes.append(f"{prefix}C_crit not computed: no repeated-epoch rows, so no unique-data budget U "
                     "to compare the families at")
        return nothing
    use_laws = ar.has_data_constrained_law and mdm.has_data_constrained_law
    if not use_laws:
        lacking = [fit.family for fit in (ar, mdm) if not fit.has_data_constrained_law]
        notes.append(f"{prefix}C_crit from the laws skipped: {', '.join(lacking)} has no full "
                     "data-constrained law (E, A, B, α, β, R*_D and R*_N); observed frontiers only")
    if use_laws:
        kept = {"R_D_star": "repeated epochs", "R_N_star": "parameters beyond the compute-optimal U_N"}
        for fit, name in _held_at_bound(ar, mdm, STEP2_NAMES):
            notes.append(f"{prefix}C_crit from the laws uses {fit.family}'s {SYMBOLS[name]} at its "
                         f"search bound (no decay seen), so it assumes {fit.family}'s {kept[name]} "
                         "keep their full value")
    points, draws = _crit_points(ar, mdm, budgets, use_laws, options)
    c_crit = _crit_law(points, draws, options, notes, prefix)
    return points, c_crit, draws


def unidentified(ar: FamilyFit, other: FamilyFit,
                 names: tuple[str, ...] = PARAMETER_NAMES) -> list[str]:
    """The parameters among `names` that either family's law holds at a search bound, as
    "mdm's R*_D": C_crit from the laws rests on them, so what it says there is assumed, not fitted."""
    return [f"{fit.family}'s {SYMBOLS[name]}" for fit, name in _held_at_bound(ar, other, names)]


def _held_at_bound(ar: FamilyFit, other: FamilyFit, names: tuple[str, ...]) -> list[tuple[FamilyFit, str]]:
    return [(fit, name) for fit in (ar, other) for name in names
            if fit.estimates[name].status == "unidentified"]


def versus_ar(families: dict[str, FamilyFit], options: FitOptions, notes: list[str],
              mdm: tuple[tuple[CritPoint, ...], CritLaw | None, np.ndarray] | None = None) -> dict[str, Comparison]:
    """C_crit of every family but ar against ar, by family name: on 6ND (as `compare`; `mdm`, when
    given, is mdm's result already computed) and, for a family that processes more tokens than it
    trains on (bd3lm), on that compute too. {} without ar; notes say what is skipped."""
    if "ar" not in families:
        return {}
    ar, out = families["ar"], {}
    for name, fit in families.items():
        if name == "ar":
            continue
        if name == "mdm" and mdm is not None:
            points, law, _ = mdm
        else:
            points, law, _ = _compare_pair(ar, fit, options, notes, prefix=f"{name} against ar: ")
        factor = processed_per_token(name)
        processed: tuple[CritPoint, ...] = ()
        if factor != 1 and points:
            processed, _ = _crit_points(ar, fit, _budgets(ar, fit), ar.has_data_constrained_law
                                        and fit.has_data_constrained_law, options, cost_factor=factor)
        out[name] = Comparison(family=name, points=points, c_crit=law, processed_factor=factor,
                               processed=processed)
    return out


def _family_rows_at(fit: FamilyFit, unique_tokens: float) -> Observations:
    return fit.observations.select(fit.observations.unique_tokens == unique_tokens)


def _crit_points(ar: FamilyFit, mdm: FamilyFit, budgets: tuple[float, ...], use_laws: bool,
                 options: FitOptions, cost_factor: float = 1.0) -> tuple[tuple[CritPoint, ...], np.ndarray]:
    """C_crit at each U from the laws (with bootstrap draws) and from the observed frontiers; with
    a `cost_factor`, on compute that counts `mdm`'s (the other family's) FLOPs that many times."""
    other = mdm.family.upper()
    resamples = min(len(ar.draws), len(mdm.draws)) if use_laws else 0
    draws = np.full((resamples, len(budgets)), np.nan)
    points = []
    for j, unique_tokens in enumerate(budgets):
        reasons = []
        rows_ar, rows_mdm = _family_rows_at(ar, unique_tokens), _family_rows_at(mdm, unique_tokens)
        observed = frontier.empirical_critical_compute(rows_mdm.flops * cost_factor, rows_mdm.loss,
                                                       rows_ar.flops, rows_ar.loss, other)
        if observed.reason:
            reasons.append(f"observed: {observed.reason}")
        law_value, extrapolated, lo, hi, crossings = None, False, None, None, None
        if use_laws:
            crossing = frontier.critical_compute(mdm.law, ar.law, unique_tokens, other=other,
                                                 cost_factor=cost_factor)
            law_value = crossing.flops
            if crossing.reason:
                reasons.append(f"laws: {crossing.reason}")
            else:
                used = np.concatenate([rows_ar.flops, rows_mdm.flops * cost_factor])
                extrapolated = not (len(used) and used.min() <= law_value <= used.max())
            draws[:, j] = _crit_draws(ar.draws[:resamples], mdm.draws[:resamples], unique_tokens,
                                      law_value, other, cost_factor, options.processes)
            lo, hi = _open_interval(draws[:, j], options.confidence)
            valid = draws[~np.isnan(draws[:, j]), j]
            crossings = (int(crossed(valid).sum()), len(valid))
        points.append(CritPoint(
            unique_tokens=unique_tokens,
            law=Estimate(value=law_value, lo=lo, hi=hi,
                         status="fitted" if law_value is not None else "skipped"),
            empirical=observed.flops, extrapolated=extrapolated, reasons=tuple(reasons),
            crossings=crossings))
    return tuple(points), draws


def crossed(draws: np.ndarray) -> np.ndarray:
    """Which C_crit draws (FLOPs) are crossings: finite and positive, not NaN (a law missing),
    inf (AR stays ahead) or 0 (the other family ahead at every compute)."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(draws) & (draws > 0)


def _open_interval(draws: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    """The central `confidence` percentile interval of C_crit draws (FLOPs), counting every
    resample whose laws are complete: one where AR stays ahead is C_crit = ∞, one where the other
    family is ahead at every compute is C_crit = 0. An end that falls on those is open (None):
    the interval then says "≥ lo" (or "≤ hi"). Between two crossings, linear interpolation in
    log C, as `bootstrap.percentile_interval` does when every resample crosses. None, None with
    fewer than 10 complete resamples."""
    with np.errstate(divide="ignore"):
        values = np.sort(np.log(draws[~np.isnan(draws)]))
    finite = np.isfinite(values)
    if len(values) < 10 or not finite.any():
        return None, None
    # The open ends' stand-ins never enter an end that is reported; np.quantile then interpolates
    # exactly as it does on draws that all cross.
    closed = np.where(finite, values, np.where(values > 0, values[finite].max(), values[finite].min()))
    tail = 0.5 * (1.0 - confidence)

    def at(q: float) -> float | None:
        position = q * (len(values) - 1)
        below = int(math.floor(position))
        touched = [below] if position == below else [below, below + 1]
        if not finite[touched].all():
            return None
        return math.exp(float(np.quantile(closed, q)))

    return at(tail), at(1.0 - tail)


def _crit_draws(ar_draws: np.ndarray, mdm_draws: np.ndarray, unique_tokens: float,
                near: float | None, other: str, cost_factor: float, processes: int) -> np.ndarray:
    """C_crit at one U for each pair of resampled laws, spread over the cores: (resamples,) FLOPs;
    NaN where a law is incomplete, inf where the pair does not cross and AR is still ahead at the
    largest compute searched, 0 where the other family is ahead at every compute."""
    def crit_at(draws: np.ndarray) -> np.ndarray:
        values = []
        for b in draws:
            flops = np.nan
            if np.isfinite(ar_draws[b]).all() and np.isfinite(mdm_draws[b]).all():
                crossing = frontier.critical_compute(
                    law_from_vector(mdm_draws[b]), law_from_vector(ar_draws[b]), unique_tokens,
                    near=near, other=other, cost_factor=cost_factor)
                flops = (crossing.flops if crossing.flops is not None
                         else math.inf if crossing.ar_ahead_at_end else 0.0)
            values.append(flops)
        return np.array(values, dtype=float)

    return parallel.map_rows(crit_at, np.arange(len(ar_draws)), processes)


def _power_law(budgets: np.ndarray, values: np.ndarray, draws: np.ndarray,
               options: FitOptions, regress: frontier.Regression) -> tuple[Estimate, Estimate]:
    """A C_crit power law in one regression direction, with bootstrap intervals from `draws`
    (rows of C_crit per U; rows with a missing U are left out)."""
    line = frontier.fit_power_law(budgets, values, regress)
    assert line is not None
    used = np.isfinite(values)
    complete = crossed(draws[:, used]).all(axis=1) if draws.size else np.zeros(0, bool)
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
              notes: list[str], prefix: str = "") -> CritLaw | None:
    """The log-log line C_crit = coefficient · U^exponent, with bootstrap intervals: log U on
    log C as the paper regresses it, and log C on log U beside it."""
    budgets = np.array([p.unique_tokens for p in points])
    from_laws = np.array([np.nan if p.law.value is None else p.law.value for p in points])
    observed = np.array([np.nan if p.empirical is None else p.empirical for p in points])
    if frontier.fit_power_law(budgets, from_laws) is not None:
        used = np.isfinite(from_laws)
        complete = crossed(draws[:, used]).all(axis=1)
        if len(draws) and complete.mean() < 0.9:
            notes.append(f"{prefix}C_crit law intervals use the {int(complete.sum())} of {len(draws)} "
                         "resamples whose laws cross at every U")
        coefficient, exponent = _power_law(budgets, from_laws, draws, options, "u_on_c")
        return CritLaw(coefficient=coefficient, exponent=exponent, source="laws",
                       c_on_u=_power_law(budgets, from_laws, draws, options, "c_on_u"))
    if frontier.fit_power_law(budgets, observed) is None:
        notes.append(f"{prefix}no C_crit law: it needs a crossing at 2 or more unique-data budgets U")
        return None
    notes.append(f"{prefix}C_crit law fitted to the observed frontiers (the fitted laws did not give "
                 "crossings at 2 or more U); no interval")
    empty = np.empty((0, len(budgets)))
    coefficient, exponent = _power_law(budgets, observed, empty, options, "u_on_c")
    return CritLaw(coefficient=coefficient, exponent=exponent, source="empirical",
                   c_on_u=_power_law(budgets, observed, empty, options, "c_on_u"))
