"""C_crit of every family against ar (sweeper.fit.critical_compute.versus_ar): the same comparison
as mdm's on the paper's 6ND, and for bd3lm, whose passes process 2L tokens, on that compute too."""

from __future__ import annotations

import numpy as np
import pytest

from sweeper.fit import frontier
from sweeper.fit.analysis import analyse
from sweeper.fit.render import to_json, versus_ar_rows
from sweeper.fit.results import FitOptions

from .synthetic import AR_TRUTH, MDM_TRUTH, draw, join

FAST = FitOptions(resamples=8, cv_folds=4)


def test_every_family_is_compared_with_ar_on_6nd_and_bd3lm_also_on_its_compute() -> None:
    rng = np.random.default_rng(3)
    ar = draw("ar", AR_TRUTH, rng)
    mdm = draw("mdm", MDM_TRUTH, np.random.default_rng(7))
    bd3lm = draw("bd3lm", MDM_TRUTH, np.random.default_rng(7))  # the same rows under another name
    data = join(ar, mdm, bd3lm)
    analysis = analyse(data, {name: int((data.family == name).sum()) for name in data.families()}, FAST)
    assert set(analysis.versus_ar) == {"mdm", "bd3lm"}
    assert analysis.versus_ar["mdm"].points == analysis.points  # mdm's is PAPER.md's C_crit
    same, other = analysis.versus_ar["mdm"], analysis.versus_ar["bd3lm"]
    assert other.processed_factor == 2 and same.processed == ()
    for a, b, paid in zip(same.points, other.points, other.processed, strict=True):
        assert b.law.value == pytest.approx(a.law.value, rel=1e-6)  # on 6ND the rows are mdm's
        assert b.empirical == a.empirical
        assert paid.law.value > b.law.value  # paying twice the compute, it overtakes ar later
    header, rows = versus_ar_rows(analysis)
    assert {row[0] for row in rows} == {"bd3lm"} and {row[2] for row in rows} == {"6ND", "processed (2× 6ND)"}
    document = to_json(analysis, source="test", loss="final")
    assert document["versus_ar"]["bd3lm"]["compared_on"] == "6ND"
    assert len(document["versus_ar"]["bd3lm"]["processed_points"]) == len(other.points)


def test_a_cost_factor_reads_the_other_law_at_the_compute_it_buys() -> None:
    flops = np.array([1e15, 1e17, 1e19])
    gap = frontier.loss_gap(MDM_TRUTH, AR_TRUTH, flops, 1e7, cost_factor=2.0)
    expected = frontier.best_loss(MDM_TRUTH, flops / 2, 1e7)[0] - frontier.best_loss(AR_TRUTH, flops, 1e7)[0]
    np.testing.assert_allclose(gap, expected)
    plain = frontier.empirical_critical_compute(np.array([1.0, 4.0]), np.array([3.0, 1.0]),
                                                np.array([1.0, 8.0]), np.array([2.0, 1.5]))
    paid = frontier.empirical_critical_compute(np.array([2.0, 8.0]), np.array([3.0, 1.0]),
                                               np.array([1.0, 8.0]), np.array([2.0, 1.5]), "BD3LM")
    assert (plain.flops, paid.flops) == (4.0, 8.0)
