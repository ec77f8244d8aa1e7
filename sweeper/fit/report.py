"""The report of a fit: one document written as Markdown and as HTML, with PNG figures.

The content is built once as a list of blocks (heading, paragraph, table, figure, list) and
each format renders the same blocks, so the two files never disagree.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.fit import ablations, downstream, figures, render
from sweeper.fit.laws import PARAMETER_NAMES
from sweeper.fit.results import SYMBOLS, Analysis
from sweeper.fit.table import TrialCurve

CURVES_FIGURE = "curves.png"


@dataclass(frozen=True, slots=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True, slots=True)
class Paragraph:
    text: str


@dataclass(frozen=True, slots=True)
class TableBlock:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class Figure:
    path: str  # relative to the report
    caption: str


@dataclass(frozen=True, slots=True)
class Items:
    items: tuple[str, ...]


Block = Heading | Paragraph | TableBlock | Figure | Items


@dataclass(frozen=True, slots=True, kw_only=True)
class WrittenReport:
    markdown: Path
    html: Path
    figures: tuple[Path, ...]


def _family_blocks(analysis: Analysis) -> list[Block]:
    level = f"{analysis.options.confidence:.0%}"
    blocks: list[Block] = [Heading("Fitted laws")]
    blocks.append(Paragraph(
        "L(N, D, U) = E + A/N'^α + B/D'^β with effective data D' and effective parameters N' "
        "(Muennighoff et al. 2023). Step 1 fits E, A, B, α, β on single-epoch runs (with the "
        "law's N' where a run holds more parameters than are compute-optimal for its data); "
        "step 2 fits R*_D and R*_N on all runs with step 1 frozen. Huber loss (δ = 1e-3) on log loss, "
        f"L-BFGS from a grid of starts; intervals from {analysis.options.resamples} bootstrap "
        f"resamples of configurations ({level}; each refit starts from the estimate and, in step "
        f"2, from the start grid too) and from the profile likelihood: each parameter fixed on a "
        f"grid, the others refitted, the interval where the deviance 2n·log(H/H_min) stays under "
        f"the χ²₁ quantile at {level} (Wilks' theorem; Huber's loss with δ = 1e-3 is the "
        f"absolute error, a Laplace likelihood, wherever residuals exceed δ). 'weak' marks a "
        f"profile interval wider than a decade: the data do not pin that parameter down. R² on "
        f"the loss, in-sample and {render.cv_label(analysis.options.cv_folds)}."))
    floor = render.floor_sentence(analysis)
    if floor:
        blocks.append(Paragraph(floor))
    for fit in analysis.families.values():
        blocks.append(Heading(f"Family {fit.family}", level=3))
        blocks.append(Paragraph(
            f"{fit.n_trials} trials, {len(fit.observations)} configurations "
            f"({int(fit.observations.single_epoch.sum())} single-epoch)."
            + (f" {render.step1_sentence(fit)}." if fit.oversized_single else "")))
        rows = []
        for name in PARAMETER_NAMES:
            estimate = fit.estimates[name]
            value = render.number(estimate.value) if estimate.status in ("fitted", "fixed") \
                else estimate.status
            rows.append((SYMBOLS[name], value, render.interval(estimate),
                         render.profile_interval(estimate), render.MEANINGS[name]))
        rows.append(("R² in-sample", render.number(fit.r2_in_sample), "", "",
                     "loss vs the fitted law"))
        rows.append((f"R² {render.cv_label(analysis.options.cv_folds)}",
                     render.number(fit.r2_cv), "", "", "each configuration predicted without it"))
        rows.append(("rollout error", render.rollout_value(fit), "", "",
                     render.rollout_meaning(fit)))
        spread = fit.seed_spread()
        if spread is not None:
            rows.append(("seed spread", render.number(spread[1]), "", "",
                         f"mean loss std over {spread[0]} configurations with several seeds"))
        blocks.append(TableBlock(("parameter", "value", f"{level} bootstrap interval",
                                  f"{level} profile interval", "meaning"), tuple(rows)))
    return blocks


def _crit_blocks(analysis: Analysis) -> list[Block]:
    blocks: list[Block] = [Heading("Critical compute")]
    blocks.append(Paragraph(
        "ΔL(C, U) = L_mdm − L_ar, each the best loss over model size and epochs at compute C; "
        "C_crit(U) solves ΔL = 0. From the laws it is found on the fitted laws; observed, it is "
        "the least compute at which masked diffusion's best run matches autoregression's."))
    if not analysis.points:
        blocks.append(Paragraph("Not computed; see the notes below."))
        return blocks + _versus_ar_blocks(analysis)
    level = f"{analysis.options.confidence:.0%}"
    rows = []
    for point in analysis.points:
        rows.append((f"{point.unique_tokens:.4g}", render.number(point.law.value),
                     render.interval(point.law), render.number(point.empirical),
                     render.point_note(point)))
    blocks.append(TableBlock(("U (tokens)", "C_crit, laws (FLOPs)", f"{level} interval",
                              "C_crit, observed (FLOPs)", "note"), tuple(rows)))
    if not any(p.law.value is not None or p.empirical is not None for p in analysis.points):
        blocks.append(Paragraph("The families do not cross within this data: no C_crit at any U."))
    sentence = render.c_crit_sentence(analysis)
    if sentence:
        blocks.append(Paragraph(sentence))
    return blocks + _versus_ar_blocks(analysis)


def _versus_ar_blocks(analysis: Analysis) -> list[Block]:
    header, rows = render.versus_ar_rows(analysis)
    if not rows:
        return []
    return [Heading("Other families against ar", level=3), Paragraph(
        "C_crit of each other family against ar, found as mdm's is: where its best loss at compute C "
        "first matches ar's. Compute is the paper's C = 6ND for every family, and that is what C_crit "
        "compares on; a family whose passes process more tokens than it trains on (bd3lm reads "
        "x_t ⊕ x_0, 2L tokens a sequence of L) is also compared on the compute it spends, its FLOPs "
        "counted that many times (rows 'processed')."), TableBlock(header, rows)]


def _ablation_blocks(found: Sequence[ablations.Axis], drawn: list[tuple[str, str | None]]) -> list[Block]:
    blocks: list[Block] = [Heading("Ablations"), Paragraph(
        "Trials that set a train option away from its default (README, train settings), one table "
        "per option: each value's best validation loss (the lowest point of its curve, best over "
        "its trials) beside plain ar and plain mdm trained on the same unique tokens U for the "
        "same epochs; the scaling-law fit above reads the plain trials only. Validation loss is a "
        "likelihood bound for every trial (ar: cross-entropy in the natural order, no input masking; "
        "mdm: the ELBO with p = (1 − 1e-3)·t + 1e-3, whatever the training options; bd3lm: its "
        "blocks' ELBOs, a t per block; dual: the one its dual_val_loss names, ar's by default); the "
        "last column says whether the training loss is one as well (mdm's unweighted loss is not).")]
    for axis in found:
        header, rows = ablations.table(axis)
        blocks += [Heading(f"{axis.family}: {axis.name}", level=3), TableBlock(header, rows)]
    blocks += [Figure(path=f"figures/{name}", caption=caption) for name, caption in drawn if caption]
    return blocks


def _downstream_blocks(rows: Sequence[Mapping[str, Any]], loss: render.Loss, folder: Path) -> list[Block]:
    """The downstream section (sweeper.fit.downstream); [] when no trial holds a task's score."""
    metrics = downstream.task_metrics(rows)
    if not metrics:
        return []
    which = "best" if loss == "best" else "final"
    by_task = {task: (metric, downstream.scored(rows, task, metric, which)) for task, metric in metrics.items()}
    blocks: list[Block] = [Heading("Downstream tasks"), Paragraph(
        "lm-evaluation-harness tasks scored on each trial's evaluated weights (`evals` in the spec, or "
        "`sweeper eval`): ar exactly, the diffusion families by the Monte-Carlo ELBO of each answer. Per "
        f"task and U, each family's trial with the lowest {which} validation loss over every model size "
        "and epoch count, as the paper compares them; scores ± one standard error.")]
    for task, (metric, items) in by_task.items():
        if items:
            header, table_rows = downstream.table(items, metric)
            blocks += [Heading(task, level=3), TableBlock(header, table_rows)]
    caption = downstream.draw(by_task, folder / downstream.FIGURE)
    if caption:
        blocks.append(Figure(path=f"figures/{downstream.FIGURE}", caption=caption))
    return blocks


def build(analysis: Analysis, source: str, loss: render.Loss, drawn: list[tuple[str, str | None]],
          *, has_curves: bool, ablation_blocks: Sequence[Block] = (),
          downstream_blocks: Sequence[Block] = ()) -> list[Block]:
    """The report's blocks; `drawn` lists every figure, the curves figure first when the input
    has curves (`has_curves`; a CSV input has none)."""
    blocks: list[Block] = [
        Heading("Scaling-law fit: masked diffusion vs autoregression", level=1),
        Paragraph(f"{render.input_line(source, loss)} Families: "
                  f"{', '.join(analysis.families) or 'none'}."),
    ]
    blocks += _family_blocks(analysis)
    blocks += _crit_blocks(analysis)
    blocks += downstream_blocks
    blocks += ablation_blocks
    blocks.append(Heading("Figures"))
    if not has_curves:
        blocks.append(Paragraph("No training curves: a CSV input holds each trial's final loss "
                                "only; pass the SPEC files instead to draw every trial's curve."))
    missing = []
    for name, caption in drawn:
        if caption is None:
            missing.append(f"{name}: nothing to draw from this data (see the notes)")
        else:
            blocks.append(Figure(path=f"figures/{name}", caption=caption))
    notes = render.all_notes(analysis) + missing
    blocks.append(Heading("Notes: what was skipped and why"))
    blocks.append(Items(tuple(notes)))
    return blocks


def _md(text: str) -> str:
    """Escape what Markdown would read as emphasis or a table border (R*_D has both * and _)."""
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("_", "\\_") \
        .replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + _md(block.text), ""]
        elif isinstance(block, Paragraph):
            lines += [_md(block.text), ""]
        elif isinstance(block, TableBlock):
            lines.append("| " + " | ".join(_md(cell) for cell in block.header) + " |")
            lines.append("|" + "---|" * len(block.header))
            lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in block.rows]
            lines.append("")
        elif isinstance(block, Figure):
            alt = _md(block.caption.split(".")[0])
            lines += [f"![{alt}]({block.path})", "", f"*{_md(block.caption)}*", ""]
        else:
            lines += [f"- {_md(item)}" for item in block.items] + [""]
    return "\n".join(lines)


def to_html(blocks: list[Block], title: str) -> str:
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, TableBlock):
            head = "".join(f"<th>{html.escape(cell)}</th>" for cell in block.header)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row)
                           + "</tr>" for row in block.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Figure):
            body.append(f'<figure><img src="{html.escape(block.path)}" alt="">'
                        f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
        else:
            body.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in block.items)
                        + "</ul>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.45}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:4px 8px;text-align:left}th{background:#f3f3f3}"
             "img{max-width:100%}figcaption{font-size:90%;color:#444}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def write_report(analysis: Analysis, out: Path, *, source: str, loss: render.Loss,
                 curves: Sequence[TrialCurve] | None,
                 rows: Sequence[Mapping[str, Any]] = ()) -> WrittenReport:
    """Write report.md, report.html and figures/*.png into `out` (created if missing); PNGs an
    earlier report left in out/figures that this one does not draw are removed.

    `curves` are the trials' validation curves from the tracking store; None when the input
    carries none (a CSV), and the report says so instead of drawing them. `rows` are the
    `sweeper results` rows: those that set train options make the Ablations section
    (sweeper.fit.ablations), and the curves figure draws the plain trials only; their eval/<task>/
    <metric> scores make the Downstream section (sweeper.fit.downstream).
    """
    (out / "figures").mkdir(parents=True, exist_ok=True)
    found = ablations.axes(rows)
    plain_ids = {str(r["trial_id"]) for r in rows if not r.get("options")}
    drawn = [] if curves is None else [
        (CURVES_FIGURE, figures.trial_curves([c for c in curves if not found or c.trial_id in plain_ids],
                                             out / "figures" / CURVES_FIGURE, floor=analysis.entropy_rate,
                                             which="plain" if found else "finished"))]
    drawn += figures.draw_all(analysis, out / "figures")
    extra: list[tuple[str, str | None]] = []
    if found:
        extra.append((ablations.FIGURE, ablations.draw(found, out / "figures" / ablations.FIGURE)))
        if curves is not None:
            by_id = {curve.trial_id: curve for curve in curves}
            extra.append((ablations.CURVES_FIGURE, ablations.draw_curves(
                found, rows, by_id, out / "figures" / ablations.CURVES_FIGURE)))
    drawn += extra
    evals = _downstream_blocks(rows, loss, out / "figures")
    blocks = build(analysis, source, loss, [d for d in drawn if d not in extra], has_curves=curves is not None,
                   ablation_blocks=_ablation_blocks(found, extra) if found else (), downstream_blocks=evals)
    markdown, page = out / "report.md", out / "report.html"
    markdown.write_text(to_markdown(blocks), encoding="utf-8")
    page.write_text(to_html(blocks, "Scaling-law fit"), encoding="utf-8")
    evals_figures = tuple(out / b.path for b in evals if isinstance(b, Figure))
    written = tuple(out / "figures" / name for name, caption in drawn if caption is not None) + evals_figures
    for stale in set((out / "figures").glob("*.png")) - set(written):  # an earlier report's, in the same folder
        stale.unlink()
    return WrittenReport(markdown=markdown, html=page, figures=written)
