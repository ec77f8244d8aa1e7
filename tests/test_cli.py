"""The validate and plan commands as a user meets them: exit codes, output formats, speed of --help."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import MINIMAL, SMOKE_SPEC

REPO = Path(__file__).resolve().parent.parent
SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))


def test_validate_reports_the_trial_count(cli) -> None:
    code, out, err = cli("validate", SMOKE_SPEC)
    assert (code, err) == (0, "")
    assert out.strip().endswith("valid, 2 trials (1 ar, 1 mdm) for profile local")


def test_plan_json_has_the_documented_keys(cli) -> None:
    code, out, _ = cli("plan", SMOKE_SPEC, "--format", "json")
    assert code == 0
    plan = json.loads(out)
    trial = plan["trials"][0]
    for key in ("id", "family", "model", "num_params", "unique_tokens", "epochs", "tokens", "steps", "flops",
                "resources", "memory", "micro_batch", "eval_steps", "warmup_steps", "est_device_hours"):
        assert key in trial, key
    assert trial["tokens"] == 8000 and trial["steps"] == 63 and trial["resources"] == {"CPU": 1}
    assert plan["totals"]["trials"] == 2 and plan["totals"]["per_family"] == {"ar": 1, "mdm": 1}
    assert plan["totals"]["flops"] == sum(t["flops"] for t in plan["trials"])


def test_plan_csv(cli) -> None:
    code, out, _ = cli("plan", SMOKE_SPEC, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 2
    assert {r["family"] for r in rows} == {"ar", "mdm"} and rows[0]["unique_tokens"] == "4000"


def test_plan_table_shows_trials_and_totals(cli) -> None:
    code, out, _ = cli("plan", REPO / "sweeps" / "grid.yaml", "--cluster", "--where", "model=140M",
                       "--where", "unique_tokens=100M", "--where", "epochs=50")
    assert code == 0
    assert "grid: 2 trials of 200" in out
    assert "4.35e18" in out and "9,537" in out
    assert "2 trials (1 ar, 1 mdm)" in out and "40% MFU" in out


@pytest.mark.parametrize("expr, count", [("family=ar", 100), ("family=ar,mdm", 200), ("epochs>=400", 60),
                                         ("flops<1e17", 44), ("model!=7M", 180), ("unique_tokens=25M", 60),
                                         ("family==ar", 100), ("epochs == 400", 20)])
def test_where_filters(cli, expr: str, count: int) -> None:
    code, out, _ = cli("plan", REPO / "sweeps" / "grid.yaml", "--format", "json", "--where", expr)
    assert code == 0 and len(json.loads(out)["trials"]) == count


@pytest.mark.parametrize("expr, message", [
    ("family", "--where 'family': expected KEY=VALUE (or !=, >=, <=, >, <), e.g. family=ar"),
    ("famly=ar", "--where 'famly=ar': unknown key 'famly'; did you mean 'family'?"),
    ("epochs>lots", "--where 'epochs>lots': 'lots' is not a number"),
])
def test_bad_where_is_a_clear_error(cli, expr: str, message: str) -> None:
    code, out, err = cli("plan", SMOKE_SPEC, "--where", expr)
    assert (code, out) == (2, "") and err.strip() == f"error: {message}"


def test_profile_errors(cli, write_spec, tmp_path) -> None:
    path = write_spec(MINIMAL)
    code, _, err = cli("plan", path, "--backend", tmp_path / "missing.yaml")
    assert code == 2 and "file not found" in err and "missing.yaml" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "backends" / "local.yaml").read_text().replace("memory_per_device: 8GB", "memory_per_device: lots"))
    code, _, err = cli("plan", path, "--backend", bad)
    assert code == 2 and "bad.yaml:15 hardware.memory_per_device: expected a positive size in bytes (e.g. 80GB), got 'lots'" in err


@pytest.mark.parametrize("spec", SWEEPS, ids=[p.name for p in SWEEPS])
@pytest.mark.parametrize("profile", ["local", "cluster"])
def test_every_shipped_spec_validates_and_plans(cli, spec: Path, profile: str) -> None:
    flag = ["--cluster"] if profile == "cluster" else []
    code, out, err = cli("plan", spec, "--format", "json", *flag)
    assert (code, err) == (0, "")
    plan = json.loads(out)
    assert plan["totals"]["trials"] > 0 and plan["profile"] == profile
    assert spec.read_text().startswith("#"), "every shipped spec opens with a comment: intent, command, arithmetic"


def test_subprocess_error_has_no_traceback(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\ndata: [\n")
    result = subprocess.run([sys.executable, "-m", "sweeper.cli", "validate", str(bad)], capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {bad}:4: invalid YAML:")


@pytest.mark.parametrize("args", [["--help"], ["plan", "--help"], ["validate", "--help"]])
def test_help_is_instant_and_imports_nothing_heavy(args: list[str]) -> None:
    probe = ("import sys, runpy; sys.argv = ['sweeper', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('sweeper.cli', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'numpy', 'datasets') if m in sys.modules))")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "100"})
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("[]")
    assert "usage: sweeper" in result.stdout
    assert elapsed < 3.0


def test_plan_imports_nothing_heavy() -> None:
    probe = ("import sys\nfrom sweeper.cli import main\n"
             f"main(['plan', {str(SMOKE_SPEC)!r}, '--format', 'json'])\n"
             "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'numpy') if m in sys.modules), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr.strip() == "[]"


@pytest.mark.parametrize("expr, message", [
    ("schedule>1", "--where 'schedule>1': 'schedule' compares with = or != only; <, <=, >, >= compare the numeric "
                   "keys (unique_tokens, epochs, tokens, steps, flops, num_params, seed, eps, lr_peak, lr_min, "
                   "warmup_fraction, warmup_steps, decay_fraction, weight_decay, grad_clip, dropout, init_std, batch_sequences, eval_points, "
                   "mdm_eval_samples, attention_dropout, input_mask_rate, orderings, mdm_min_mask_rate, "
                   "ar_fraction, block_size, checkpoint_every_minutes)"),
    ("precision<2", "--where 'precision<2': 'precision' compares with = or != only;"),
    ("betas>=0.5", "--where 'betas>=0.5': 'betas' is not a filter key; filter on id, name, family,"),
    ("schedule=cosin", "--where 'schedule=cosin': 'schedule' is one of cosine, linear, constant, wsd, not 'cosin'; "
                       "did you mean 'cosine'?"),
    ("compile=yes", "--where 'compile=yes': 'compile' is true or false"),
    ("epochs=ten", "--where 'epochs=ten': 'ten' is not a number"),
    ("family>=ar", "--where 'family>=ar': 'family' compares with = or != only;"),
])
def test_where_says_which_keys_compare(cli, expr: str, message: str) -> None:
    code, out, err = cli("plan", SMOKE_SPEC, "--where", expr)
    assert (code, out) == (2, "") and err.strip().startswith(f"error: {message}")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("expr, count", [("schedule=cosine", 2), ("schedule!=cosine", 0), ("precision=fp32,bf16", 2),
                                         ("compile=false", 2), ("grad_clip>0.5", 2), ("grad_clip=null", 0),
                                         ("lr_peak<=1", 2)])
def test_where_on_train_keys(cli, expr: str, count: int) -> None:
    code, out, err = cli("plan", SMOKE_SPEC, "--format", "json", "--where", expr)
    assert (code, err) == (0, "") and len(json.loads(out)["trials"]) == count, expr


def test_plan_without_a_store_says_so_in_one_line_and_stays_fast(cli, write_spec) -> None:
    path = write_spec(MINIMAL)
    probe = ("import sys\nfrom sweeper.cli import main\n"
             f"main(['plan', {str(path)!r}])\n"
             "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'numpy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0 and result.stderr == ""
    *_, line, modules = result.stdout.strip().splitlines()
    assert line == "no MLflow store at mlflow.db yet: every trial is to run" and modules == "[]"
    assert not (path.parent / "mlflow.db").exists()  # looking created nothing
    start = time.perf_counter()  # the command itself; the interpreter's start is the same for every command
    code, out, _ = cli("plan", path)
    assert code == 0 and time.perf_counter() - start < 1.0


def test_plan_with_an_unreachable_server_says_so(cli, write_spec, tmp_path) -> None:
    from servers import free_port

    profile = tmp_path / "remote.yaml"
    profile.write_text((REPO / "backends" / "local.yaml").read_text().replace(
        "sqlite:///mlflow.db", f"http://127.0.0.1:{free_port()}"))
    start = time.perf_counter()
    code, out, err = cli("plan", write_spec(MINIMAL), "--backend", profile, "--format", "json")
    assert (code, err) == (0, "") and time.perf_counter() - start < 1.0
    plan = json.loads(out)
    assert plan["store"].startswith("done vs to run unknown: MLflow at http://127.0.0.1:")
    assert "is unreachable" in plan["store"] and {t["state"] for t in plan["trials"]} == {None}


def test_results_count_the_tokens_trained_and_status_names_an_older_recipe(cli, write_spec, tmp_path) -> None:
    from sweeper.fit.table import average_seeds, from_rows
    from sweeper.plan import ID_SCHEMA
    from sweeper.tracking import Tracking

    path = write_spec(MINIMAL)  # U = 4k, 8 sequences of 16 tokens a step
    # an absolute store address: MLflow keeps one store per address string in a process, so a
    # relative one would reach another test's file
    profile = tmp_path / "backends" / "local.yaml"
    profile.write_text(profile.read_text().replace("sqlite:///mlflow.db", f"sqlite:///{tmp_path / 'mlflow.db'}"))
    code, out, _ = cli("plan", path, "--format", "json")
    one_epoch = next(t for t in json.loads(out)["trials"] if (t["family"], t["epochs"]) == ("ar", 1))
    assert (one_epoch["tokens"], one_epoch["steps"], one_epoch["tokens_trained"]) == (4000, 32, 32 * 128)
    tracking = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", "t")
    parent = tracking.sweep_run("t", spec_texts={}, plan={})
    for trial_id, schema in ((one_epoch["id"], {"sweeper.id_schema": ID_SCHEMA}), ("0123456789ab", {})):
        log = tracking.open_trial(trial_id=trial_id, run_name=trial_id, parent_run_id=parent,
                                  tags={"sweeper.sweep": "t", **schema}, params={})
        log.log({"final/val_loss": 3.5, "final/tokens_trained": 4096}, 4096)
        log.finish("FINISHED")

    code, out, _ = cli("results", path, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 1
    assert (rows[0]["tokens"], rows[0]["tokens_planned"], rows[0]["epochs_planned"]) == ("4096", "4000", "1.0")
    assert float(rows[0]["epochs"]) == 4096 / 4000 and float(rows[0]["flops"]) == 6 * float(rows[0]["params"]) * 4096
    assert average_seeds(from_rows(rows, source="csv")).single_epoch.tolist() == [True]

    code, out, _ = cli("status", path)
    assert code == 0 and out.strip().splitlines()[-1] == (
        f"1 finished trials of t in the store were trained under an older recipe (sweeper.trial/1); they do "
        f"not count as done under {ID_SCHEMA} (README: what changed between recipe versions)")


def test_plan_shows_done_vs_to_run_from_the_store(cli, write_spec, tmp_path) -> None:
    from sweeper.tracking import Tracking

    path = write_spec(MINIMAL)
    code, out, _ = cli("plan", path, "--format", "json")
    ids = [t["id"] for t in json.loads(out)["trials"]]
    tracking = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", "t")
    parent = tracking.sweep_run("t", spec_texts={}, plan={})
    for trial_id, status in zip(ids, ("FINISHED", "FAILED")):
        tracking.open_trial(trial_id=trial_id, run_name=trial_id, parent_run_id=parent, tags={},
                            params={}).finish(status)
    code, out, err = cli("plan", path)
    assert (code, err) == (0, "")
    assert out.strip().splitlines()[-1] == "MLflow at sqlite:///mlflow.db, experiment 't': 1 done, 1 failed, 2 to run"
    code, out, _ = cli("plan", path, "--format", "json")
    assert [t["state"] for t in json.loads(out)["trials"]] == ["done", "failed", "to run", "to run"]
    code, out, _ = cli("plan", path, "--format", "csv")
    assert [row["state"] for row in csv.DictReader(io.StringIO(out))] == ["done", "failed", "to run", "to run"]
