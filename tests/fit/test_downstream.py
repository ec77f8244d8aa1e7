"""The report's downstream section: per task and U, the best-loss trial of each family and its score
(the paper's table), and the score against compute per family (a figure)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sweeper.fit import analysis, downstream, report

from .synthetic import AR_TRUTH, MDM_TRUTH, draw, join


def row(family: str, model: str, unique: float, epochs: float, loss: float, acc: float | None, **extra) -> dict:
    out = {"family": family, "model": model, "unique_tokens": unique, "epochs": epochs, "flops": 6e6 * unique * epochs,
           "loss": loss, "loss_best": loss - 0.1, "options": "", "trial_id": f"{family}{model}{unique}{epochs}", **extra}
    if acc is not None:
        out.update({"eval/next/acc": acc, "eval/next/acc_stderr": 0.02, "eval/next/acc_norm": acc / 2})
    return out


ROWS = [row("ar", "s", 4e3, 4, 3.0, 0.40), row("ar", "m", 4e3, 16, 2.5, 0.55), row("ar", "m", 4e3, 64, 4.0, 0.35),
        row("mdm", "m", 4e3, 128, 2.8, 0.50), row("mdm", "m", 4e3, 512, 2.6, 0.60),
        row("ar", "m", 8e3, 16, 2.2, 0.62), row("mdm", "m", 8e3, 256, 2.4, None),
        row("ar", "m", 8e3, 4, 1.0, 0.99, options="orderings=4")]  # an ablation row: not the fit's, not here


def test_the_table_compares_each_familys_best_loss_trial_per_u() -> None:
    assert downstream.task_metrics(ROWS) == {"next": "acc"}
    items = downstream.scored(ROWS, "next", "acc", "final")
    header, rows = downstream.table(items, "acc")
    assert header == ("U (tokens)", "ar best-loss trial", "ar loss", "ar acc", "mdm best-loss trial", "mdm loss",
                      "mdm acc", "mdm − ar (acc)")
    assert rows[0] == ("4,000", "m, 16 epochs", "2.5000", "0.5500 ± 0.0200", "m, 512 epochs", "2.6000",
                       "0.6000 ± 0.0200", "+0.0500")
    assert rows[1] == ("8,000", "m, 16 epochs", "2.2000", "0.6200 ± 0.0200", "—", "", "", "")
    # --loss best picks by the curve's lowest point
    best = downstream.table(downstream.scored(ROWS, "next", "acc", "best"), "acc")[1]
    assert best[0][2] == "2.4000"


def test_the_report_has_the_section_and_its_figure(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = join(draw("ar", AR_TRUTH, rng, single=30, repeated=45, noise=0.005),
                draw("mdm", MDM_TRUTH, rng, single=30, repeated=45, noise=0.005))
    result = analysis.analyse(data, {"ar": 75, "mdm": 75}, analysis.FitOptions(resamples=0, cv_folds=4, profiles=False))
    written = report.write_report(result, tmp_path, source="synthetic", loss="final", curves=None, rows=ROWS[:-1])
    text = written.markdown.read_text(encoding="utf-8")
    assert "## Downstream tasks" in text and "### next" in text and "0.5500 ± 0.0200" in text
    assert tmp_path / "figures" / downstream.FIGURE in written.figures
    assert (tmp_path / "figures" / downstream.FIGURE).stat().st_size > 10_000
    # without scores, no section
    bare = report.write_report(result, tmp_path / "bare", source="synthetic", loss="final", curves=None,
                               rows=[{k: v for k, v in r.items() if not k.startswith("eval/")} for r in ROWS[:-1]])
    assert "Downstream" not in bare.markdown.read_text(encoding="utf-8")
    # written again into the first folder without scores: the figure it no longer draws goes
    again = report.write_report(result, tmp_path, source="synthetic", loss="final", curves=None,
                                rows=[{k: v for k, v in r.items() if not k.startswith("eval/")} for r in ROWS[:-1]])
    assert not (tmp_path / "figures" / downstream.FIGURE).exists()
    assert sorted((tmp_path / "figures").glob("*.png")) == sorted(again.figures)
