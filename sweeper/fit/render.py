"""An `Analysis` as the JSON document of `sweeper fit --format json`, as terminal tables, and as
the flat metrics logged to a sweep's MLflow run."""

from __future__ import annotations

import math
from typing import Any, Literal

from rich.table import Table

from sweeper.fit.laws import PARAMETER_NAMES
from sweeper.fit.results import SYMBOLS, Analysis, Comparison, CritPoint, Estimate, FamilyFit

Loss = Literal["final", "best", "csv"]  # --loss final|best for SPEC input; a CSV brings its own
LOSS_MEANINGS: dict[str, str] = {
    "final": "each trial's final validation loss (--loss final)",
    "best": "each trial's best validation loss (--loss best)",
    "csv": "the CSV's loss column",
}

MEANINGS = {
    "E": "irreducible loss (nats/token)",
    "A": "parameter term scale",
    "B": "data term scale",
    "alpha": "parameter exponent",
    "beta": "data exponent",
    "R_D_star": "half-life of data reuse: repeated epochs at which one more is worth 1/e "
                "of fresh data",
    "R_N_star": "decay constant of parameters beyond the compute-optimal U_N",
}


def _estimate_json(estimate: Estimate) -> dict[str, float | None]:
    return {"value": estimate.value, "lo": estimate.lo, "hi": estimate.hi}


def _parameter_json(estimate: Estimate) -> dict[str, Any]:
    """The estimate with its bootstrap interval, and its profile-likelihood interval (None at
    the end of the grid) with the weak-identification flag."""
    document: dict[str, Any] = _estimate_json(estimate)
    profile = estimate.profile
    document["profile"] = None if profile is None else {
        "lo": profile.lo, "hi": profile.hi, "weak": profile.weak,
        "deviance_threshold": profile.threshold}
    return document


def _family_json(fit: FamilyFit) -> dict[str, Any]:
    document: dict[str, Any] = {name: _parameter_json(fit.estimates[name])
                                for name in PARAMETER_NAMES}
    document["r2"] = {"in_sample": fit.r2_in_sample, "cv": fit.r2_cv}
    document["n_trials"] = fit.n_trials
    rollout = fit.rollout
    document["rollout"] = None if rollout is None else {
        "held_out": len(rollout.rows), "min_flops": rollout.min_flops,
        "mean_abs_error": rollout.mean_abs_error,
        "mean_abs_relative_error": rollout.mean_abs_relative_error}
    document["step1_oversized_rows"] = fit.oversized_single
    spread = fit.seed_spread()
    document["seed_spread"] = None if spread is None else {
        "configurations": spread[0], "mean_loss_std": spread[1]}
    return document


def to_json(analysis: Analysis, *, source: str, loss: Loss) -> dict[str, Any]:
    """The issue's shape, plus `seed_spread` per family and top-level `source` (the input),
    `loss` (which loss of each trial was fitted), `confidence` and `notes`."""
    c_crit = None
    if analysis.points:
        c_crit = {
            "coefficient": None if analysis.c_crit is None
            else _estimate_json(analysis.c_crit.coefficient),
            "exponent": None if analysis.c_crit is None
            else _estimate_json(analysis.c_crit.exponent),
            "u_unit": "tokens",
            "regression": "log U on log C (the paper's direction)",
            "c_on_u": None if analysis.c_crit is None or analysis.c_crit.c_on_u is None else {
                "regression": "log C on log U",
                "coefficient": _estimate_json(analysis.c_crit.c_on_u[0]),
                "exponent": _estimate_json(analysis.c_crit.c_on_u[1])},
            "source": None if analysis.c_crit is None else analysis.c_crit.source,
            "points": _points_json(analysis.points),
        }
    return {
        "source": source,
        "loss": loss,
        "families": {name: _family_json(fit) for name, fit in analysis.families.items()},
        "c_crit": c_crit,
        "versus_ar": {name: _comparison_json(comparison) for name, comparison in analysis.versus_ar.items()},
        "entropy_rate": analysis.entropy_rate,
        "confidence": analysis.options.confidence,
        "notes": all_notes(analysis),
    }


def _points_json(points: tuple[CritPoint, ...]) -> list[dict[str, Any]]:
    return [{"unique_tokens": point.unique_tokens, "flops": point.law.value, "lo": point.law.lo,
             "hi": point.law.hi, "empirical_flops": point.empirical, "extrapolated": point.extrapolated,
             "resamples_crossing": None if point.crossings is None else point.crossings[0],
             "resamples_complete": None if point.crossings is None else point.crossings[1]}
            for point in points]


def _comparison_json(comparison: Comparison) -> dict[str, Any]:
    law = comparison.c_crit
    return {"compared_on": "6ND", "points": _points_json(comparison.points),
            "coefficient": None if law is None else _estimate_json(law.coefficient),
            "exponent": None if law is None else _estimate_json(law.exponent),
            "processed_per_token": comparison.processed_factor,
            "processed_points": _points_json(comparison.processed)}


def versus_ar_rows(analysis: Analysis) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """C_crit of every family but mdm against ar (mdm has its own table): on 6ND, and on the compute
    processed where a family spends more (bd3lm). Header and rows of text; no rows without any."""
    level = f"{analysis.options.confidence:.0%}"
    header = ("family", "U (tokens)", "compute", "C_crit, laws (FLOPs)", f"{level} interval",
              "C_crit, observed (FLOPs)", "note")
    rows = []
    for name, comparison in analysis.versus_ar.items():
        if name == "mdm":
            continue
        bases = [("6ND", comparison.points)]
        if comparison.processed:
            bases.append((f"processed ({comparison.processed_factor}× 6ND)", comparison.processed))
        for basis, points in bases:
            for point in points:
                rows.append((name, f"{point.unique_tokens:.4g}", basis, number(point.law.value),
                             interval(point.law), number(point.empirical), point_note(point)))
    return header, tuple(rows)


def input_line(source: str, loss: Loss) -> str:
    """Which trials and which of their losses were fitted, for the top of the table and report."""
    return f"Input: {source}; fitted loss: {LOSS_MEANINGS[loss]}."


def to_metrics(document: dict[str, Any]) -> dict[str, float]:
    """The JSON document's finite numbers as flat MLflow metrics: `fit.<family>.<parameter>`
    with `.lo` and `.hi` for its interval, `fit.<family>.r2_in_sample` / `.r2_cv` / `.n_trials`,
    `fit.c_crit.coefficient` / `.exponent` (with `.lo`, `.hi`) and `fit.confidence`."""
    metrics: dict[str, float] = {}

    def put(key: str, value: Any) -> None:
        if isinstance(value, int | float) and math.isfinite(value):
            metrics[key] = float(value)

    def put_estimate(key: str, estimate: dict[str, Any] | None) -> None:
        if estimate is not None:
            put(key, estimate["value"])
            put(f"{key}.lo", estimate["lo"])
            put(f"{key}.hi", estimate["hi"])

    for family, fit in document["families"].items():
        for name in PARAMETER_NAMES:
            put_estimate(f"fit.{family}.{name}", fit[name])
        put(f"fit.{family}.r2_in_sample", fit["r2"]["in_sample"])
        put(f"fit.{family}.r2_cv", fit["r2"]["cv"])
        put(f"fit.{family}.n_trials", fit["n_trials"])
        if fit.get("rollout"):
            put(f"fit.{family}.rollout_mae", fit["rollout"]["mean_abs_error"])
    if document["c_crit"] is not None:
        put_estimate("fit.c_crit.coefficient", document["c_crit"]["coefficient"])
        put_estimate("fit.c_crit.exponent", document["c_crit"]["exponent"])
    put("fit.confidence", document["confidence"])
    return metrics


def all_notes(analysis: Analysis) -> list[str]:
    """Everything skipped and why: per family first, then across families."""
    notes = [f"{name}: {note}" for name, fit in analysis.families.items() for note in fit.notes]
    return notes + list(analysis.notes)


def number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def interval(estimate: Estimate) -> str:
    if estimate.status == "fixed":
        return "fixed"
    if estimate.lo is None and estimate.hi is None:
        return "—"
    if estimate.hi is None:  # an unidentified R*: the data bound it from one side only
        return f"≥ {number(estimate.lo)}"
    if estimate.lo is None:
        return f"≤ {number(estimate.hi)}"
    return f"[{number(estimate.lo)}, {number(estimate.hi)}]"


def point_note(point: CritPoint) -> str:
    """What a C_crit row's numbers rest on: extrapolation, how many resamples' laws cross (where
    not all do, the interval counts the rest as crossing beyond or before the compute searched),
    and why a value is missing."""
    notes = ["extrapolated beyond the runs' compute"] if point.extrapolated else []
    if point.crossings is not None and point.crossings[0] < point.crossings[1]:
        crossing, complete = point.crossings
        notes.append(f"the laws of {crossing} of {complete} resamples cross here; the interval counts "
                     "the rest as C_crit beyond the compute searched (AR stays ahead) or before it "
                     "(the other family leads throughout)"
                     + (", so an end is open" if point.open_end else ""))
    return "; ".join(notes + list(point.reasons))


def floor_sentence(analysis: Analysis) -> str | None:
    """The known entropy rate set beside each family's fitted E."""
    if analysis.entropy_rate is None:
        return None
    fitted = [f"{name} {number(fit.estimates['E'].value)} {interval(fit.estimates['E'])}"
              for name, fit in analysis.families.items() if fit.estimates["E"].value is not None]
    return (f"The validation source's entropy rate H = {analysis.entropy_rate:.4f} nats per token "
            "(exact for this synthetic source under its own symbols) is the floor no model goes "
            "below; fitted E: " + ("; ".join(fitted) if fitted else "none") + ".")


def step1_sentence(fit: FamilyFit) -> str:
    return (f"{fit.oversized_single} single-epoch rows hold more parameters than are "
            "compute-optimal for their data (N > U_N), so step 1 used the law's N' there and "
            "fitted R*_N alongside; step 2 refitted it on all rows")


def profile_interval(estimate: Estimate) -> str:
    """The profile-likelihood interval; '…' where it runs to the end of the grid; 'weak' where
    it spans more than a decade."""
    profile = estimate.profile
    if profile is None:
        return "—"
    text = f"[{'…' if profile.lo is None else number(profile.lo)}, " \
           f"{'…' if profile.hi is None else number(profile.hi)}]"
    return text + (" weak" if profile.weak else "")


def rollout_value(fit: FamilyFit) -> str:
    if fit.rollout is None:
        return "—"
    return f"{fit.rollout.mean_abs_error:.3g} ({fit.rollout.mean_abs_relative_error:.1%})"


def rollout_meaning(fit: FamilyFit) -> str:
    if fit.rollout is None:
        return "not computed (see the notes)"
    return (f"mean |error| (nats) on the {len(fit.rollout.rows)} largest-compute configurations "
            f"(C ≥ {fit.rollout.min_flops:.3g}), predicted by a fit without them")


def cv_label(folds: int) -> str:
    return "leave-one-out" if folds == 0 else f"{folds}-fold"


def family_table(fit: FamilyFit, analysis: Analysis) -> Table:
    level = f"{analysis.options.confidence:.0%}"
    configurations = len(fit.observations)
    title = (f"family {fit.family}: {fit.n_trials} trials, {configurations} configurations "
             f"({int(fit.observations.single_epoch.sum())} single-epoch)")
    if fit.oversized_single:
        title += f"; {step1_sentence(fit)}"
    table = Table(title=title, title_justify="left")
    table.add_column("parameter")
    table.add_column("value", justify="right")
    table.add_column(f"{level} interval", justify="right")
    table.add_column("profile interval", justify="right")
    table.add_column("meaning")
    for name in PARAMETER_NAMES:
        estimate = fit.estimates[name]
        shown = number(estimate.value) if estimate.status != "skipped" else "skipped"
        if estimate.status == "unidentified":
            shown = "unidentified"
        table.add_row(SYMBOLS[name], shown, interval(estimate), profile_interval(estimate),
                      MEANINGS[name])
    table.add_row("R² in-sample", number(fit.r2_in_sample), "", "",
                  "loss (nats) vs the fitted law")
    table.add_row(f"R² {cv_label(analysis.options.cv_folds)}", number(fit.r2_cv), "", "",
                  "each configuration predicted by a fit without it")
    table.add_row("rollout error", rollout_value(fit), "", "", rollout_meaning(fit))
    spread = fit.seed_spread()
    if spread is not None:
        table.add_row("seed spread", number(spread[1]), "", "",
                      f"mean loss std over {spread[0]} configurations with several seeds")
    return table


def text_table(title: str, header: tuple[str, ...], rows: tuple[tuple[str, ...], ...]) -> Table:
    """A console table of rows of text, numbers right-aligned (every column but the first and last)."""
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i in (0, len(header) - 1) else "right")
    for row in rows:
        table.add_row(*row)
    return table


def c_crit_table(analysis: Analysis) -> Table:
    level = f"{analysis.options.confidence:.0%}"
    table = Table(title="critical compute C_crit(U): MDM's best loss equals AR's",
                  title_justify="left")
    table.add_column("unique tokens U", justify="right")
    table.add_column("C_crit from laws (FLOPs)", justify="right")
    table.add_column(f"{level} interval", justify="right")
    table.add_column("C_crit observed (FLOPs)", justify="right")
    table.add_column("note")
    for point in analysis.points:
        table.add_row(f"{point.unique_tokens:.4g}", number(point.law.value), interval(point.law),
                      number(point.empirical), point_note(point))
    return table


def c_crit_sentence(analysis: Analysis) -> str | None:
    law = analysis.c_crit
    if law is None:
        return None
    level = f"{analysis.options.confidence:.0%}"
    text = (f"C_crit ≈ {number(law.coefficient.value)} · U^{law.exponent.value:.3f} FLOPs "
            f"(U in tokens; from the {'fitted laws' if law.source == 'laws' else 'observed runs'}; "
            f"log U regressed on log C, as the paper does)")
    if law.exponent.lo is not None:
        text += (f"; {level} intervals: coefficient {interval(law.coefficient)}, "
                 f"exponent {interval(law.exponent)}")
    if law.c_on_u is not None:
        coefficient, exponent = law.c_on_u
        text += (f". Regressing log C on log U instead gives {number(coefficient.value)} · "
                 f"U^{exponent.value:.3f}")
        if exponent.lo is not None:
            text += f" (exponent {interval(exponent)})"
    return text + ". The paper (Prabhudesai et al. 2025) reports ≈ 191.6 · U^2.174."
