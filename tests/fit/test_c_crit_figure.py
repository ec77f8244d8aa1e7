"""Figures of the fitted laws say on their face what they rest on and where the law points."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sweeper.fit.analysis import analyse
from sweeper.fit import compute_figures
from sweeper.fit.compute_figures import c_crit
from sweeper.fit.laws import PARAMETER_NAMES
from sweeper.fit.results import FitOptions

from .synthetic import AR_TRUTH, MDM_TRUTH, draw, join


@pytest.fixture(scope="module")
def analysis():
    data = join(draw("ar", AR_TRUTH, np.random.default_rng(3)),
                draw("mdm", MDM_TRUTH, np.random.default_rng(7)))
    return analyse(data, {name: int((data.family == name).sum()) for name in data.families()},
                   FitOptions(resamples=8, cv_folds=4))


def test_the_c_crit_figure_marks_points_no_run_observed_and_laws_held_at_a_bound(analysis, tmp_path: Path) -> None:
    assert any(p.empirical is not None for p in analysis.points)
    assert all(e.status != "unidentified" for fit in analysis.families.values()
               for e in fit.estimates.values())
    plain = c_crit(analysis, tmp_path / "fitted.png")
    assert plain is not None and "observed a crossing" not in plain and "search bound" not in plain

    mdm = analysis.families["mdm"]
    held = replace(mdm, estimates={**mdm.estimates,
                                   "R_D_star": replace(mdm.estimates["R_D_star"], status="unidentified")})
    unseen = replace(analysis, families={**analysis.families, "mdm": held},
                     points=tuple(replace(p, empirical=None) for p in analysis.points))
    caption = c_crit(unseen, tmp_path / "assumed.png")
    assert caption is not None and caption.startswith(plain)
    assert caption.endswith(" No run observed a crossing: every point is from the laws alone."
                            " The laws hold mdm's R*_D at a search bound, not fitted.")
    assert (tmp_path / "assumed.png").read_bytes().startswith(b"\x89PNG")


def test_an_iso_loss_path_outside_the_panel_is_named_not_drawn_at_the_search_edge(
        analysis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = []
    monkeypatch.setattr(compute_figures, "save", lambda figure, path: drawn.append(figure))
    compute_figures.iso_loss(analysis, tmp_path / "fitted.png")
    mdm = analysis.families["mdm"]
    vector = mdm.vector.copy()
    vector[PARAMETER_NAMES.index("R_N_star")] = 1e-3  # parameters beyond U_N worth nothing
    tiny = replace(analysis, families={**analysis.families, "mdm": replace(mdm, vector=vector)})
    compute_figures.iso_loss(tiny, tmp_path / "tiny.png")
    fitted, shifted = (figure.axes[1] for figure in drawn)  # mdm's panel
    assert "best (N, epochs) at each compute" in fitted.get_legend_handles_labels()[1]
    named = [label for label in shifted.get_legend_handles_labels()[1] if label.startswith("best")]
    assert named in (["best (N, epochs): N smaller than this panel at every compute"],
                     ["best (N, epochs): N larger than this panel at every compute"])
    assert shifted.get_xlim() == pytest.approx(fitted.get_xlim())  # the axis keeps the runs' sizes


def test_an_interval_open_above_is_drawn_as_an_arrow_and_said_in_the_caption(analysis, tmp_path: Path) -> None:
    plain = c_crit(analysis, tmp_path / "closed.png")
    first = analysis.points[0]
    opened = replace(first, law=replace(first.law, lo=first.law.value / 10, hi=None), crossings=(700, 1000))
    caption = c_crit(replace(analysis, points=(opened, *analysis.points[1:])), tmp_path / "open.png")
    assert plain is not None and "arrow" not in plain
    assert caption is not None and "An arrow marks an interval open on that side" in caption
    assert (tmp_path / "open.png").read_bytes() != (tmp_path / "closed.png").read_bytes()
