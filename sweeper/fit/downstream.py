"""The report's downstream section: lm-eval task scores beside validation loss, as the paper's table
(per task, the best-loss ar against the best-loss mdm at each U) and a figure of accuracy against
training compute per family.

Input is the `sweeper results` rows, whose `eval/<task>/<metric>` keys hold what each trial's run
recorded (sweeper.evals.stage); plain rows only (no train options), as the fit reads. Per task one
metric is shown: `acc` where the task has it, else `acc_norm`, else its first metric. "Best-loss"
uses the loss the fit reads (the final validation loss, or the curve's lowest with `--loss best`),
the lowest over every model size and epoch count trained at that U that holds the task.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.fit.plotting import color_of, plt, save

FIGURE = "downstream.png"
PREFIX = "eval/"
PREFERRED = ("acc", "acc_norm", "exact_match", "word_perplexity")


@dataclass(frozen=True, slots=True, kw_only=True)
class Scored:
    """One trial's score on one task: its metric's value and standard error (None: not computed)."""

    family: str
    model: str
    unique_tokens: float
    epochs: float
    flops: float
    loss: float
    value: float
    stderr: float | None


def task_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """{task: the metric shown} over every task some row holds, tasks in name order."""
    found: dict[str, set[str]] = {}
    for row in rows:
        for key in row:
            if key.startswith(PREFIX) and not key.endswith("_stderr") and _number(row[key]) is not None:
                task, _, metric = key[len(PREFIX):].rpartition("/")
                found.setdefault(task, set()).add(metric)
    return {task: next((m for m in PREFERRED if m in metrics), min(metrics)) for task, metrics in sorted(found.items())}


def scored(rows: Sequence[Mapping[str, Any]], task: str, metric: str, loss: str) -> list[Scored]:
    """The plain rows that hold `task`'s `metric`, with the loss named by `loss` ("best": the curve's
    lowest, else the final)."""
    out = []
    for row in rows:
        value = _number(row.get(f"{PREFIX}{task}/{metric}"))
        if value is None or row.get("options"):
            continue
        best = _number(row.get("loss_best"))
        out.append(Scored(family=str(row["family"]), model=str(row["model"]), unique_tokens=float(row["unique_tokens"]),
                          epochs=float(row["epochs"]), flops=float(row["flops"]),
                          loss=best if loss == "best" and best is not None else float(row["loss"]), value=value,
                          stderr=_number(row.get(f"{PREFIX}{task}/{metric}_stderr"))))
    return out


def table(items: Sequence[Scored], metric: str) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """(header, rows): per U, each family's best-loss trial (model, epochs), its loss and its score
    ± standard error, and, with ar and mdm both there, mdm's score minus ar's."""
    families = sorted({s.family for s in items}, key=lambda f: (f != "ar", f != "mdm", f))
    header = ("U (tokens)", *(cell for f in families for cell in (f"{f} best-loss trial", f"{f} loss", f"{f} {metric}")))
    both = "ar" in families and "mdm" in families
    header += (f"mdm − ar ({metric})",) if both else ()
    rows = []
    for unique in sorted({s.unique_tokens for s in items}):
        best = {f: min((s for s in items if s.family == f and s.unique_tokens == unique), key=lambda s: s.loss,
                       default=None) for f in families}
        row = [f"{unique:,.0f}"]
        for family in families:
            s = best[family]
            row += ["—", "", ""] if s is None else [f"{s.model}, {s.epochs:.3g} epoch{'s' * (f'{s.epochs:.3g}' != '1')}",
                                                  f"{s.loss:.4f}", _score(s)]
        if both:
            ar, mdm = best["ar"], best["mdm"]
            row.append("" if ar is None or mdm is None else f"{mdm.value - ar.value:+.4f}")
        rows.append(tuple(row))
    return header, tuple(rows)


def draw(by_task: Mapping[str, tuple[str, Sequence[Scored]]], path: Path) -> str | None:
    """Each task's score against training compute (C = 6ND, FLOPs, log scale), one colour per family
    and one marker per U, standard errors as bars; the caption, or None with nothing to draw."""
    tasks = [(task, metric, items) for task, (metric, items) in by_task.items() if items]
    if not tasks:
        return None
    figure, axes = plt.subplots(1, len(tasks), figsize=(7.0 * len(tasks), 4.2), squeeze=False)
    families = sorted({s.family for _, _, items in tasks for s in items})
    markers = "osD^vP*Xh"
    for axis, (task, metric, items) in zip(axes[0], tasks):
        uniques = sorted({s.unique_tokens for s in items})
        for family in families:
            for i, unique in enumerate(uniques):
                points = sorted((s for s in items if s.family == family and s.unique_tokens == unique),
                                key=lambda s: s.flops)
                if not points:
                    continue
                axis.errorbar([s.flops for s in points], [s.value for s in points],
                              yerr=[s.stderr or 0.0 for s in points], fmt=markers[i % len(markers)],
                              color=color_of(family, families), alpha=0.8, capsize=2, markersize=5,
                              label=f"{family}, U={unique:,.0f}")
        axis.set_xscale("log")
        axis.set_xlabel("training compute C = 6ND (FLOPs)")
        axis.set_ylabel(metric)
        axis.set_title(task)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # off the points
    save(figure, path)
    return ("Downstream score against training compute: each point a finished trial evaluated on the task "
            "(every model size and epoch count), colour by family, marker by U, bars one standard error.")


def _score(s: Scored) -> str:
    return f"{s.value:.4f}" + (f" ± {s.stderr:.4f}" if s.stderr is not None else "")


def _number(value: Any) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
