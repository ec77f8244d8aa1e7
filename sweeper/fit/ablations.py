"""The report's ablations: each train option a sweep varied (sweeper.trial.OPTION_DEFAULTS), its best
loss per value against plain ar and plain mdm at the same U and epochs, as tables and two figures.

Input is the `sweeper results` rows: a row's `options` names the options its trial set away from
their defaults ("orderings=4", "" for a plain trial). A row's loss here is its best validation loss
(`loss_best`, the lowest of its curve: under repetition ar's loss turns up, and the question is how
low each variant gets), the best over the rows of that value, U and epochs (model sizes and seeds
alike). Plain rows are the baselines; the scaling-law fit reads only them (sweeper.cli.fit).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from sweeper.fit.plotting import FAMILY_COLORS, save, token_label
from sweeper.fit.table import TrialCurve
from sweeper.trial import loss_is_likelihood_bound

FIGURE = "ablations.png"
CURVES_FIGURE = "ablation_curves.png"


def parse_options(text: str) -> dict[str, str]:
    """'orderings=4,input_mask_rate=0.1' -> {'orderings': '4', 'input_mask_rate': '0.1'}; '' -> {}."""
    return dict(part.split("=", 1) for part in text.split(",") if part) if text else {}


@dataclass(frozen=True, slots=True, kw_only=True)
class ValueRow:
    """One value of an axis at one (U, epochs): its best loss and the plain baselines beside it."""

    value: str
    unique_tokens: float
    epochs: float
    loss: float  # best validation loss over this value's trials (nats/token)
    trials: int
    bound: bool  # whether the trials' training loss is a likelihood bound
    ar: float | None  # plain ar's best validation loss at the same U and epochs (None: no such trial)
    mdm: float | None
    own: float | None = None  # the plain trial of the axis's own family (dual, bd3lm at their defaults)


@dataclass(frozen=True, slots=True, kw_only=True)
class Axis:
    name: str  # the option, or options joined by " + " when trials changed several at once
    family: str
    rows: tuple[ValueRow, ...]  # by U, epochs, then value


def _loss(row: Mapping[str, Any]) -> float:
    best = row.get("loss_best")
    return float(row["loss"] if best is None or best == "" else best)


def _where(row: Mapping[str, Any]) -> tuple[float, float]:
    epochs = row.get("epochs_planned")
    return float(row["unique_tokens"]), float(row["epochs"] if epochs is None or epochs == "" else epochs)


def _value_key(value: str) -> tuple[int, float, str]:
    try:
        return 0, float(value), value
    except ValueError:
        return 1, 0.0, value


def axes(rows: Sequence[Mapping[str, Any]]) -> tuple[Axis, ...]:
    """Every option the rows vary, with its best loss per value, U and epochs; () when no row sets
    an option."""
    plain: dict[tuple[str, float, float], float] = {}
    varied: dict[tuple[str, str, str, float, float], list[float]] = {}
    bounds: dict[tuple[str, str, str, float, float], bool] = {}
    for row in rows:
        options = parse_options(str(row.get("options") or ""))
        family, (unique, epochs) = str(row["family"]), _where(row)
        if not options:
            key = (family, unique, epochs)
            plain[key] = min(plain.get(key, math.inf), _loss(row))
            continue
        group = (" + ".join(options), family, ", ".join(options.values()), unique, epochs)
        varied.setdefault(group, []).append(_loss(row))
        bounds[group] = loss_is_likelihood_bound(family, options.get("mdm_loss_weight", "elbo"))
    by_axis: dict[tuple[str, str], list[ValueRow]] = {}
    for group, losses in varied.items():
        name, family, value, unique, epochs = group
        by_axis.setdefault((name, family), []).append(ValueRow(
            value=value, unique_tokens=unique, epochs=epochs, loss=min(losses), trials=len(losses),
            bound=bounds[group], ar=plain.get(("ar", unique, epochs)), mdm=plain.get(("mdm", unique, epochs)),
            own=plain.get((family, unique, epochs))))
    return tuple(Axis(name=name, family=family,
                      rows=tuple(sorted(found, key=lambda r: (r.unique_tokens, r.epochs, _value_key(r.value)))))
                 for (name, family), found in sorted(by_axis.items()))


def table(axis: Axis) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """The report's table of one axis: header and rows of text."""
    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.4f}"

    # against the family's own plain trial; a family between ar and mdm run without one (dual, bd3lm
    # at their defaults) against plain ar, the question being whether it beats ar
    own = any(r.own is not None for r in axis.rows)
    reference = axis.family if own else "ar"
    header = (axis.name, "U", "epochs", f"{axis.family}: best loss", "plain ar", "plain mdm",
              f"vs plain {reference}", "training loss")
    rows = []
    for r in axis.rows:
        plain = r.own if own else r.ar
        rows.append((r.value, token_label(r.unique_tokens), f"{r.epochs:g}", number(r.loss), number(r.ar),
                     number(r.mdm), "" if plain is None else f"{r.loss - plain:+.4f}",
                     "likelihood bound" if r.bound else "not a likelihood bound"))
    return header, tuple(rows)


def _panel_grid(count: int) -> tuple[Any, np.ndarray]:
    """A figure with `count` panels of 4.4 x 3.5 inches, at most 3 to a row: (figure, axes grid)."""
    columns = min(3, count)
    rows = math.ceil(count / columns)
    return plt.subplots(rows, columns, figsize=(4.4 * columns, 3.5 * rows), squeeze=False)


def _hide_unused(grid: np.ndarray, used: int) -> None:
    for ax in list(grid.flat)[used:]:
        ax.set_visible(False)


def draw(found: Sequence[Axis], path: Path) -> str | None:
    """One panel per axis: best loss per value (dots joined per U and epochs), plain ar and mdm at
    the same U and epochs as dashed lines in their family colours; hollow dots mark trials whose
    training loss is not a likelihood bound."""
    if not found:
        return None
    figure, grid = _panel_grid(len(found))
    for ax, axis in zip(grid.flat, found):
        values = sorted({r.value for r in axis.rows}, key=_value_key)
        for where in sorted({(r.unique_tokens, r.epochs) for r in axis.rows}):
            mine = {r.value: r for r in axis.rows if (r.unique_tokens, r.epochs) == where}
            xs = [values.index(v) for v in values if v in mine]
            ys = [mine[v].loss for v in values if v in mine]
            line, = ax.plot(xs, ys, "-", color=FAMILY_COLORS.get(axis.family, "tab:green"), lw=1.2,
                            label=f"{axis.family}, U = {token_label(where[0])}, {where[1]:g} epochs")
            for x, v in zip(xs, (v for v in values if v in mine)):
                ax.plot(x, mine[v].loss, "o", ms=6, color=line.get_color(),
                        markerfacecolor=line.get_color() if mine[v].bound else "white")
            any_row = next(iter(mine.values()))
            for family, baseline in (("ar", any_row.ar), ("mdm", any_row.mdm)):
                if baseline is not None:
                    ax.axhline(baseline, color=FAMILY_COLORS[family], ls="--", lw=1.1,
                               label=f"plain {family}: {baseline:.3f}")
        ax.set_xticks(range(len(values)), values)
        ax.set_xlabel(axis.name)
        ax.set_ylabel("best validation loss (nats/token)")
        ax.set_title(f"{axis.family}: {axis.name}", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    _hide_unused(grid, len(found))
    save(figure, path)
    return ("Each ablation's best validation loss per value (solid), against plain ar and plain mdm "
            "trained on the same unique tokens for the same epochs (dashed); a hollow dot marks "
            "trials whose training loss is not a likelihood bound (their validation loss still is).")


def draw_curves(found: Sequence[Axis], rows: Sequence[Mapping[str, Any]],
                curves: Mapping[str, TrialCurve], path: Path) -> str | None:
    """One panel per axis: the validation curves of its values' trials and of the plain ar and mdm
    trials at the same U and epochs (`curves` by trial id)."""
    panels = []
    for axis in found:
        wheres = {(r.unique_tokens, r.epochs) for r in axis.rows}
        lines = []
        for row in rows:
            curve = curves.get(str(row["trial_id"]))
            options = parse_options(str(row.get("options") or ""))
            if curve is None or _where(row) not in wheres:
                continue
            if not options and str(row["family"]) in FAMILY_COLORS:
                lines.append((f"plain {row['family']}", curve, FAMILY_COLORS[str(row["family"])], "--"))
            elif " + ".join(options) == axis.name and str(row["family"]) == axis.family:
                lines.append((", ".join(options.values()), curve, None, "-"))
        if lines:
            panels.append((axis, lines))
    if not panels:
        return None
    figure, grid = _panel_grid(len(panels))
    for ax, (axis, lines) in zip(grid.flat, panels):
        values = sorted({label for label, _, color, _ in lines if color is None}, key=_value_key)
        shades = dict(zip(values, plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(len(values), 1)))))
        ends = []
        for label, curve, color, style in sorted(lines, key=lambda line: (line[2] is not None,
                                                                          _value_key(line[0]))):
            seen = curve.tokens_seen > 0
            ax.plot(curve.tokens_seen[seen], curve.loss[seen], style, lw=1.1,
                    color=color if color is not None else shades[label],
                    label=f"{label} ({token_label(curve.unique_tokens)}, {curve.epochs:.0f} ep)")
            ends.append(curve.loss[seen])
        values_seen = np.concatenate(ends)
        ax.set_ylim(float(values_seen.min()) - 0.05, float(np.quantile(values_seen, 0.9)) + 0.1)
        ax.set_xscale("log")
        ax.set_xlabel("tokens seen D")
        ax.set_ylabel("validation loss (nats/token)")
        ax.set_title(f"{axis.family}: {axis.name}", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    _hide_unused(grid, len(panels))
    save(figure, path)
    return ("The validation curves behind each ablation: every value's trials (solid, by value) and the "
            "plain ar and mdm trials at the same U and epochs (dashed). Early evaluations far above "
            "the rest are cut off.")
