"""`sweeper fit` / `report` against a real MLflow store: the loss choice is recorded, every trial's
curve is drawn, and the fit and the report are logged to the sweep's parent run."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from sweeper.tracking.results import RESULT_COLUMNS, finished_rows
from sweeper.fit import laws, render
from sweeper.plan import plan_sweep
from sweeper.profile import load_profile
from sweeper.spec import load_spec
from sweeper.tracking import Tracking

from .synthetic import AR_TRUTH, MDM_TRUTH
from .test_command import FAST, main

REPO = Path(__file__).resolve().parents[2]
# 3 sizes x 3 budgets x 4 epoch counts per family: single-epoch rows at 3 sizes and 3 token
# counts for step 1, repeats for step 2. Only planned, never trained: the curves are the laws'.
SPEC = """\
version: 1
name: {name}
data:
  train: {{kind: synthetic, symbols: 64}}
  tokenizer: {{kind: symbols, vocab_size: 65}}
  seq_len: 16
  validation_tokens: 1024
train:
  batch_sequences: 8
grid:
  family: [ar, mdm]
  model: {models}
  unique_tokens: [25M, 50M, 100M]
  epochs: [1, 4, 16, 64]
tracking:
  experiment: fit-logging
"""
TRUTH = {"ar": AR_TRUTH, "mdm": MDM_TRUTH}


@dataclass(frozen=True)
class Store:
    spec: Path
    unrun_spec: Path  # a sweep of the same experiment that never ran: no parent run
    profile: Path
    tracking: Tracking
    parent: str
    curves: dict[str, list[tuple[int, float]]]  # run id -> the val/loss points written


def synthetic_curve(trial, rng: np.random.Generator) -> list[tuple[int, float]]:
    """val/loss at the trial's evaluation points: its family's law at the tokens seen so far
    (flat before 1M tokens, where the law leaves its range), with 0.5% noise. The last point is
    at the tokens trained, whole steps (`Trial.tokens_trained`), as the trainer reports it."""
    tokens_per_step = trial.train.batch_sequences * trial.data.seq_len
    tokens = sorted({step * tokens_per_step for step in trial.eval_steps})
    seen = np.maximum(np.array(tokens, dtype=float), 1e6)
    loss = laws.data_constrained_loss(TRUTH[trial.family], np.full(len(seen), float(trial.num_params)),
                                      seen, np.full(len(seen), float(trial.unique_tokens)))
    loss = loss * np.exp(0.005 * rng.standard_normal(len(loss)))
    return [(int(t), float(v)) for t, v in zip(tokens, loss, strict=True)]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A sqlite store holding one finished sweep, written through `Tracking` as `sweeper run`
    writes it: a parent run, one child run per trial with its curve and final losses."""
    folder = tmp_path_factory.mktemp("store")
    spec = folder / "lawgrid.yaml"
    spec.write_text(SPEC.format(name="lawgrid", models="[7M, 20M, 57M]"))
    unrun_spec = folder / "lawgrid-next.yaml"
    unrun_spec.write_text(SPEC.format(name="lawgrid-next", models="[7M]"))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    profile = folder / "profile.yaml"
    profile.write_text((REPO / "backends" / "local.yaml").read_text()
                       .replace("sqlite:///mlflow.db", uri))
    loaded = load_spec(str(spec))
    plan = plan_sweep(loaded, load_profile(str(profile)))
    tracking = Tracking(uri, loaded.experiment)
    parent = tracking.sweep_run(loaded.name, spec_texts={str(spec): spec.read_text()}, plan={})
    rng = np.random.default_rng(0)
    curves = {}
    for trial in sorted(plan.trials, key=lambda t: t.name):  # the noise follows names, not ids
        log = tracking.open_trial(trial_id=trial.id, run_name=trial.name, parent_run_id=parent,
                                  tags={"family": trial.family}, params={})
        points = synthetic_curve(trial, rng)
        for tokens, value in points:
            log.log({"val/loss": value}, step=tokens)
        log.log({"final/val_loss": points[-1][1], "final/val_loss_best": min(value for _, value in points),
                 "final/tokens_trained": trial.tokens_trained}, step=trial.tokens_trained)
        log.finish("FINISHED")
        curves[log.run_id] = points
    tracking.finish_sweep(parent, "FINISHED")
    return Store(spec=spec, unrun_spec=unrun_spec, profile=profile, tracking=tracking, parent=parent,
                 curves=curves)


def artifact_paths(client, run_id: str, folder: str | None = None) -> set[str]:
    paths: set[str] = set()
    for entry in client.list_artifacts(run_id, folder):
        paths |= artifact_paths(client, run_id, entry.path) if entry.is_dir else {entry.path}
    return paths


def logged(store: Store) -> tuple[dict[str, float], dict[str, str], set[str], int]:
    """The parent run's metrics, tags, artifact paths, and how many fits it has seen."""
    client = store.tracking.client
    run = client.get_run(store.parent)
    fits = len(client.get_metric_history(store.parent, "fit.ar.alpha"))
    return dict(run.data.metrics), dict(run.data.tags), artifact_paths(client, store.parent), fits


def logged_document(store: Store) -> dict:
    return json.loads(Path(store.tracking.client.download_artifacts(store.parent, "fit.json"))
                      .read_text())


def assert_metrics_match(metrics: dict[str, float], document: dict) -> None:
    fitted = {key: value for key, value in metrics.items() if key.startswith("fit.")}
    assert fitted.keys() == render.to_metrics(document).keys()
    for family in ("ar", "mdm"):
        for name in ("E", "alpha", "beta", "R_D_star"):
            estimate = document["families"][family][name]
            assert metrics[f"fit.{family}.{name}"] == pytest.approx(estimate["value"], rel=1e-12)
            assert metrics[f"fit.{family}.{name}.lo"] == pytest.approx(estimate["lo"], rel=1e-12)
        assert metrics[f"fit.{family}.n_trials"] == 36
        assert metrics[f"fit.{family}.r2_cv"] == pytest.approx(document["families"][family]["r2"]["cv"])
    assert metrics["fit.c_crit.exponent"] == pytest.approx(document["c_crit"]["exponent"]["value"])
    assert all(math.isfinite(value) for value in fitted.values())


def test_curves_reads_each_runs_history_in_step_order(store: Store) -> None:
    run_ids = sorted(store.curves)[:3]
    read = store.tracking.curves([*run_ids, run_ids[0]], "val/loss")
    assert read == {run_id: store.curves[run_id] for run_id in run_ids}
    assert store.tracking.curves(run_ids, "no/such-metric") == {}
    assert store.tracking.sweep_run_id("lawgrid") == store.parent
    assert store.tracking.sweep_run_id("lawgrid-next") is None


def test_fit_json_records_the_loss_and_logs_the_fit_to_the_sweep_run(
        store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["fit", str(store.spec), "--backend", str(store.profile), "--format", "json", *FAST]
    assert main([*args, "--loss", "best"]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)  # the log line goes to stderr, the JSON stays whole
    assert (document["source"], document["loss"]) == (str(store.spec), "best")
    assert f"to run {store.parent} of sweep 'lawgrid'" in captured.err
    metrics, tags, paths, _ = logged(store)
    assert_metrics_match(metrics, document)
    assert tags["sweeper.fit.loss"] == "best"
    assert tags["sweeper.fit.source"] == str(store.spec)
    assert "fit.json" in paths and logged_document(store) == document

    assert main(args) == 0  # --loss final: a different fit, and the tag follows it
    final = json.loads(capsys.readouterr().out)
    assert final["loss"] == "final"
    assert final["families"] != document["families"]
    metrics, tags, _, _ = logged(store)
    assert tags["sweeper.fit.loss"] == "final"
    assert_metrics_match(metrics, final)


def test_table_names_the_loss_and_no_log_logs_nothing(store: Store,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    before = logged(store)
    assert main(["fit", str(store.spec), "--backend", str(store.profile), "--no-log", *FAST]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (f"Input: {store.spec}; fitted loss: each trial's final "
                                   "validation loss (--loss final).")
    assert "logged" not in out
    assert logged(store) == before


def test_report_draws_every_curve_and_logs_the_report(store: Store, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    out.mkdir()
    (out / "unrelated.txt").write_text("not part of the report")
    assert main(["report", str(store.spec), "--backend", str(store.profile), "--out", str(out),
                 *FAST]) == 0
    assert f"report/ to run {store.parent}" in capsys.readouterr().out
    assert (out / "figures" / "curves.png").read_bytes().startswith(b"\x89PNG")
    markdown = (out / "report.md").read_text()
    assert "![Every finished trial's validation loss during training](figures/curves.png)" in markdown
    assert markdown.index("(figures/curves.png)") < markdown.index("(figures/loss_vs_flops.png)")
    assert "fitted loss: each trial's final validation loss (--loss final)" in markdown
    assert "No training curves" not in markdown

    metrics, tags, paths, _ = logged(store)
    figures = {f"report/figures/{path.name}" for path in (out / "figures").iterdir()}
    assert {"report/report.md", "report/report.html", "report/figures/curves.png"} <= paths
    assert figures <= paths and "report/unrelated.txt" not in paths
    document = logged_document(store)
    assert document["loss"] == "final" and tags["sweeper.fit.loss"] == "final"
    assert_metrics_match(metrics, document)


def test_a_spec_that_never_ran_is_named_in_one_line_and_skipped(
        store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", str(store.spec), str(store.unrun_spec), "--backend", str(store.profile),
                 "--format", "json", *FAST]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["families"]["ar"]["n_trials"] == 36  # the 7M trials count once
    logged_line, skipped_line = captured.err.strip().splitlines()  # in the order of the specs
    assert logged_line.startswith("logged ") and f"run {store.parent}" in logged_line
    assert skipped_line == (f"{store.unrun_spec}: sweep 'lawgrid-next' in MLflow experiment "
                            "'fit-logging' has no run yet (never run); nothing logged there")


def test_csv_input_logs_nothing_and_the_report_says_it_has_no_curves(
        store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loaded = load_spec(str(store.spec))
    rows = finished_rows(plan_sweep(loaded, load_profile(str(store.profile))), store.tracking)
    table = tmp_path / "results.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    before = logged(store)

    assert main(["fit", "--from-csv", str(table), "--format", "json", *FAST]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["source"], document["loss"]) == (str(table), "csv")

    out = tmp_path / "report"
    assert main(["report", "--from-csv", str(table), "--out", str(out), *FAST]) == 0
    assert "logged" not in capsys.readouterr().out
    assert not (out / "figures" / "curves.png").exists()
    markdown = (out / "report.md").read_text()
    assert "fitted loss: the CSV's loss column" in markdown
    assert sum("No training curves" in line for line in markdown.splitlines()) == 1
    assert logged(store) == before
