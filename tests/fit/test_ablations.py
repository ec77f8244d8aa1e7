"""The report's ablations from fixed result rows: best loss per option value against plain ar and
mdm at the same U and epochs, computed directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sweeper.fit import ablations
from sweeper.fit.table import TrialCurve


def row(family: str, options: str, loss_best: float, *, unique: float = 8e3, epochs: float = 32.0,
        trial: str = "") -> dict:
    return {"family": family, "options": options, "loss": loss_best + 0.5, "loss_best": loss_best,
            "unique_tokens": unique, "epochs": epochs * 1.001, "epochs_planned": epochs,
            "trial_id": trial or f"{family}-{options}-{loss_best}", "params": 1e5, "model": "m"}


ROWS = [
    row("ar", "", 2.6), row("ar", "", 2.7),  # two plain ar trials (sizes): the best is 2.6
    row("mdm", "", 2.9),
    row("ar", "", 3.3, epochs=64),  # another (U, epochs): not a baseline of the 32-epoch rows
    row("ar", "orderings=4", 2.55), row("ar", "orderings=4", 2.65), row("ar", "orderings=16", 2.75),
    row("ar", "orderings=2", 3.1, epochs=64),
    row("mdm", "mdm_loss_weight=unweighted", 3.2),
    row("ar", "attention_dropout=0.5,input_mask_rate=0.1", 2.5),
]


def test_parse_options() -> None:
    assert ablations.parse_options("") == {}
    assert ablations.parse_options("orderings=4,input_mask_rate=0.1") == {"orderings": "4", "input_mask_rate": "0.1"}


def test_best_loss_per_value_against_the_plain_families() -> None:
    found = {axis.name: axis for axis in ablations.axes(ROWS)}
    assert sorted(found) == ["attention_dropout + input_mask_rate", "mdm_loss_weight", "orderings"]
    orderings = found["orderings"]
    assert orderings.family == "ar"
    assert [(r.value, r.epochs, r.loss, r.trials, r.ar, r.mdm) for r in orderings.rows] == [
        ("4", 32.0, 2.55, 2, 2.6, 2.9), ("16", 32.0, 2.75, 1, 2.6, 2.9), ("2", 64.0, 3.1, 1, 3.3, None)]
    assert all(r.bound for r in orderings.rows)
    (unweighted,) = found["mdm_loss_weight"].rows
    assert (unweighted.value, unweighted.loss, unweighted.bound) == ("unweighted", 3.2, False)
    header, rows = ablations.table(orderings)
    assert header[0] == "orderings" and rows[0] == ("4", "8K", "32", "2.5500", "2.6000", "2.9000", "-0.0500",
                                                    "likelihood bound")
    assert header[6] == "vs plain ar" and ablations.table(found["mdm_loss_weight"])[0][6] == "vs plain mdm"
    assert ablations.table(found["mdm_loss_weight"])[1][0][6] == "+0.3000"  # 3.2 against plain mdm's 2.9
    assert rows[2][5] == "" and ablations.table(found["mdm_loss_weight"])[1][0][-1] == "not a likelihood bound"


def test_no_options_no_axes() -> None:
    assert ablations.axes([row("ar", "", 2.6), row("mdm", "", 2.9)]) == ()


def test_figures_are_drawn(tmp_path: Path) -> None:
    found = ablations.axes(ROWS)
    assert ablations.draw(found, tmp_path / "a.png") is not None
    curves = {r["trial_id"]: TrialCurve(family=r["family"], model="m", num_params=1e5, unique_tokens=8e3,
                                        epochs=r["epochs_planned"], tokens_seen=np.array([0.0, 1e4, 2e5]),
                                        loss=np.array([4.8, 3.0, r["loss_best"]]), trial_id=r["trial_id"])
              for r in ROWS}
    assert ablations.draw_curves(found, ROWS, curves, tmp_path / "b.png") is not None
    for name in ("a.png", "b.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size[0] > 800


def test_a_results_csv_fits_its_plain_rows_only(tmp_path: Path) -> None:
    from sweeper.console import UserError
    from sweeper.fit.table import read_csv

    path = tmp_path / "results.csv"
    path.write_text("family,params,tokens,unique_tokens,loss,options\n"
                    "ar,1e5,1e6,1e6,3.1,\nar,1e5,1e6,1e6,2.5,orderings=4\nar,2e5,1e6,1e6,2.9,\n")
    trials = read_csv(path)
    assert trials.loss.tolist() == [3.1, 2.9]
    path.write_text("family,params,tokens,loss,options\nar,1e5,1e6,2.5,orderings=4\n")
    with pytest.raises(UserError) as error:
        read_csv(path)
    assert str(error.value) == (f"{path}: no data rows after the header but 1 that set train options "
                                "(column options), which the fit leaves out")
