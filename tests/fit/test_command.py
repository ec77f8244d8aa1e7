"""`sweeper fit` and `sweeper report` from the command line: exit codes, output, files."""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sweeper.console import UserError, fail
from sweeper.cli import fit as command
from sweeper.fit.table import Observations

from .synthetic import AR_TRUTH, MDM_TRUTH, draw, join

FAST = ["--bootstrap", "12", "--cv-folds", "4"]


def main(argv: list[str]) -> int:
    """The CLI's contract (sweeper/cli/): parse, run the handler, a UserError exits 2."""
    parser = argparse.ArgumentParser(prog="sweeper")
    command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserError as error:
        return fail(error)
PARAMETERS = ["E", "A", "B", "alpha", "beta", "R_D_star", "R_N_star"]


def write_csv(path: Path, data: Observations, *, family_column: bool = True) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow((["family"] if family_column else [])
                        + ["params", "tokens", "unique_tokens", "loss"])
        for family, n, d, u, loss in zip(data.family, data.num_params, data.tokens,
                                         data.unique_tokens, data.loss, strict=True):
            writer.writerow(([family] if family_column else []) + [n, d, u, loss])
    return path


@pytest.fixture(scope="module")
def two_families(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    data = join(draw("ar", AR_TRUTH, rng, single=30, repeated=45, noise=0.005),
                draw("mdm", MDM_TRUTH, rng, single=30, repeated=45, noise=0.005))
    return write_csv(tmp_path_factory.mktemp("csv") / "trials.csv", data)


def test_fit_json_has_the_documented_shape(two_families: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "--from-csv", str(two_families), "--format", "json", *FAST]) == 0
    document = json.loads(capsys.readouterr().out)
    assert set(document["families"]) == {"ar", "mdm"}
    for family in document["families"].values():
        for name in PARAMETERS:
            assert set(family[name]) == {"value", "lo", "hi", "profile"}
            assert family[name]["lo"] <= family[name]["value"] <= family[name]["hi"]
            profile = family[name]["profile"]
            assert set(profile) == {"lo", "hi", "weak", "deviance_threshold"}
            assert profile["deviance_threshold"] == pytest.approx(2.7055, abs=1e-4)  # χ²₁, 90%
            assert profile["lo"] <= family[name]["value"] <= profile["hi"]
        assert set(family["r2"]) == {"in_sample", "cv"}
        assert family["r2"]["cv"] > 0.9
        assert family["n_trials"] == 75
    c_crit = document["c_crit"]
    assert set(c_crit) >= {"coefficient", "exponent", "u_unit", "points"}
    assert c_crit["u_unit"] == "tokens"
    assert set(c_crit["exponent"]) == {"value", "lo", "hi"}
    assert c_crit["regression"] == "log U on log C (the paper's direction)"
    assert c_crit["c_on_u"]["regression"] == "log C on log U"
    # through three noisy points the paper's direction has the larger exponent
    assert c_crit["exponent"]["value"] >= c_crit["c_on_u"]["exponent"]["value"]
    assert [point["unique_tokens"] for point in c_crit["points"]] == [25e6, 50e6, 100e6]
    assert document["notes"] == []


def test_fit_table_names_every_parameter_and_the_c_crit_law(
        two_families: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "--from-csv", str(two_families), *FAST]) == 0
    out = capsys.readouterr().out
    for text in ("family ar", "family mdm", "R*_D", "R*_N", "half-life", "4-fold", "C_crit ≈",
                 "U in tokens"):
        assert text in out


def test_fix_and_tie_reach_the_fit(two_families: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "--from-csv", str(two_families), "--format", "json", "--tie",
                 "--fix", "R_N_star=5.31", *FAST]) == 0
    ar = json.loads(capsys.readouterr().out)["families"]["ar"]
    assert ar["alpha"]["value"] == ar["beta"]["value"]
    assert ar["R_N_star"] == {"value": 5.31, "lo": 5.31, "hi": 5.31, "profile": None}


def test_one_family_without_a_family_column_exits_zero_and_says_what_was_skipped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = draw("ar", AR_TRUTH, np.random.default_rng(1), single=40, repeated=0)
    path = write_csv(tmp_path / "one.csv", data, family_column=False)
    assert main(["fit", "--from-csv", str(path), "--format", "json", *FAST]) == 0
    document = json.loads(capsys.readouterr().out)
    assert set(document["families"]) == {"all"}
    assert document["families"]["all"]["R_D_star"] == {"value": None, "lo": None, "hi": None,
                                                        "profile": None}
    assert document["c_crit"] is None
    assert any(note.startswith("all: R*_D not fitted") for note in document["notes"])
    assert any("C_crit not computed" in note for note in document["notes"])


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read"),
    ("params,tokens,unique_tokens\n1,2,3\n", "missing required column(s) loss"),
    ("params,tokens,unique_tokens,loss\n", "no data rows"),
])
def test_unusable_input_exits_two_with_one_line(tmp_path: Path, content: str | None,
                                                message: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "trials.csv"
    if content is not None:
        path.write_text(content)
    assert main(["fit", "--from-csv", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ")
    assert message in captured.err
    assert str(path) in captured.err.replace("\n", "")


def test_a_spec_with_nothing_finished_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    repo = Path(__file__).resolve().parents[2]
    profile = tmp_path / "profile.yaml"
    profile.write_text((repo / "backends" / "local.yaml").read_text().replace(
        "sqlite:///mlflow.db", f"sqlite:///{tmp_path / 'mlflow.db'}"))
    spec = repo / "tests" / "specs" / "smoke.yaml"
    assert main(["fit", str(spec), "--backend", str(profile)]) == 2
    assert "no finished trials in the tracking store; run the sweep first" in capsys.readouterr().err


def test_specs_and_a_csv_together_are_refused(two_families: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "sweeps/grid.yaml", "--from-csv", str(two_families)]) == 2
    assert "pass SPEC files or --from-csv FILE, not both" in capsys.readouterr().err


def test_no_input_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--out", "unused"]) == 2
    assert "--from-csv" in capsys.readouterr().err


@pytest.mark.parametrize("fix", ["gamma=1", "alpha", "alpha=-1", "alpha=x"])
def test_a_malformed_fix_is_a_usage_error(fix: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--from-csv", "x.csv", "--fix", fix])
    assert exit_info.value.code == 2
    assert "--fix" in capsys.readouterr().err


def test_report_writes_markdown_html_and_figures(two_families: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main(["report", "--from-csv", str(two_families), "--out", str(out), *FAST]) == 0
    assert "report.md" in capsys.readouterr().out
    markdown = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    names = ["loss_vs_flops.png", "law_vs_observed.png", "effective_data.png", "iso_loss.png",
             "c_crit.png"]
    for name in names:
        assert (out / "figures" / name).read_bytes().startswith(b"\x89PNG")
        assert f"(figures/{name})" in markdown
        assert f'src="figures/{name}"' in page
    assert "half-life of data reuse" in markdown and "C\\_crit ≈" in markdown
    assert "R*_D" in page and "C_crit ≈" in page


def test_report_of_one_family_says_what_it_could_not_draw(tmp_path: Path) -> None:
    data = draw("ar", AR_TRUTH, np.random.default_rng(2), single=40, repeated=0)
    path = write_csv(tmp_path / "one.csv", data)
    out = tmp_path / "report"
    assert main(["report", "--from-csv", str(path), "--out", str(out), *FAST]) == 0
    page = (out / "report.html").read_text()
    assert (out / "figures" / "loss_vs_flops.png").exists()
    assert not (out / "figures" / "c_crit.png").exists()
    assert "c_crit.png: nothing to draw from this data" in page
    assert "C_crit not computed" in page
    assert "c\\_crit.png: nothing to draw" in (out / "report.md").read_text()


def test_registering_the_commands_imports_nothing_heavy() -> None:
    code = ("import argparse, sys\n"
            "import sweeper.cli.fit as command\n"
            "command.register(argparse.ArgumentParser().add_subparsers())\n"
            "heavy = {'numpy', 'scipy', 'matplotlib', 'torch', 'ray'} & set(sys.modules)\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_sweeper_command_registers_fit_and_report() -> None:
    from sweeper import cli

    if command not in cli.COMMAND_MODULES:
        pytest.skip("sweeper/cli.py does not list sweeper.cli.fit yet")
    parser = cli.build_parser()
    assert parser.parse_args(["fit", "--from-csv", "x.csv"]).handler is command.run_fit
    assert parser.parse_args(["report", "--from-csv", "x.csv", "--out", "r"]).handler \
        is command.run_report


def test_the_fit_package_imports_neither_the_driver_nor_torch_nor_ray() -> None:
    """DESIGN.md's layers: fit sits below the driver (sweeper.driver.sweep) and never needs torch or ray."""
    code = ("import sys, pathlib, importlib\n"
            "for path in sorted(pathlib.Path('sweeper/fit').glob('*.py')):\n"
            "    importlib.import_module('sweeper.fit.' + path.stem if path.stem != '__init__' "
            "else 'sweeper.fit')\n"
            "print(sorted(m for m in ('sweeper.driver.sweep', 'torch', 'ray') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[2])
    assert result.stdout.strip() == "[]"
    # the command handlers import lazily: no source line may reach for the driver either
    for path in (Path(__file__).resolve().parents[2] / "sweeper" / "fit").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "from sweeper.driver.sweep import" not in text and "import sweeper.driver.sweep" not in text, path


def test_column_options_end_in_one_sentence_and_exit_two(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "runs.csv"
    path.write_text("size,seen,nats\n1e8,2e9,3.5\n", encoding="utf-8")
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--from-csv", str(path), "--columns", "size=params"])
    assert stop.value.code == 2
    assert "unknown key 'size'" in capsys.readouterr().err
    assert main(["fit", "--from-csv", str(path), "--columns", "params=size,tokens=seen"]) == 2
    err = capsys.readouterr().err
    assert "missing required column(s) loss (found: 'size', 'seen', 'nats')" in err
    assert "Traceback" not in err
