"""`sweeper eval` end to end: the smoke sweep trained by `sweeper run` (real Ray, a real sqlite MLflow
store) before its spec had an evals block, its trials evaluated on the offline task, once: a second call does nothing and says so. A
task whose data is missing fails in one line per trial, exit 0, the trials still FINISHED; user
errors are one line and exit 2."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweeper.cli import main

from .helpers import REPO

pytestmark = pytest.mark.slow
SMOKE = REPO / "tests" / "specs" / "smoke.yaml"
EVALS = "evals:\n  tasks: [symbols_next]\n  task_dirs: [tests/evals/tasks]\n  limit: 40\n  mc_samples: 8\n"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("eval-sweep")
    profile = (REPO / "backends" / "local.yaml").read_text()
    profile = profile.replace("sqlite:///mlflow.db", f"sqlite:///{folder / 'mlflow.db'}")
    profile = profile.replace("path: sweeper-store", f"path: {folder / 'store'}")
    (folder / "profile.yaml").write_text(profile)
    (folder / "spec.yaml").write_text(SMOKE.read_text() + EVALS)  # the same trials, and tasks for them
    env = {**os.environ, "SWEEPER_CACHE_DIR": str(folder / "cache")}
    env.pop("RAY_ADDRESS", None)
    # trained without an evals block, as a sweep is before its spec gains one
    done = subprocess.run([sys.executable, "-m", "sweeper.cli", "run", str(SMOKE), "--backend",
                           str(folder / "profile.yaml")], capture_output=True, text=True, timeout=300, env=env,
                          cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    return {"spec": folder / "spec.yaml", "profile": folder / "profile.yaml", "db": folder / "mlflow.db"}


def trial_runs(db: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("sweeper-smoke")
    return [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("sweeper.kind") == "trial"]


def sweeper_eval(sweep: dict[str, Path], capsys: pytest.CaptureFixture[str], *options: str) -> tuple[int, str, str]:
    code = main(["eval", str(sweep["spec"]), "--backend", str(sweep["profile"]), "--device", "cpu", *options])
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_records_each_task_once_and_a_second_call_does_nothing(sweep, offline, capsys) -> None:
    code, out, err = sweeper_eval(sweep, capsys)
    assert code == 0, err
    assert out.count("symbols_next: acc") == 2 and "evaluated 2 tasks on 2 trials" in out
    for run in trial_runs(sweep["db"]):
        assert run.info.status == "FINISHED"
        assert run.data.metrics["eval/symbols_next/acc"] > 0.25  # chance: one in four
        assert "eval/symbols_next/acc_stderr" in run.data.metrics
        assert '"at": "final"' in run.data.tags["sweeper.eval/symbols_next"]
    code, out, err = sweeper_eval(sweep, capsys)
    assert (code, out.strip(), err) == (0, "nothing to evaluate: 2 finished trials already hold symbols_next", "")
    # `sweeper results --format csv` carries them, a column per metric after the fixed ones
    code = main(["results", str(sweep["spec"]), "--backend", str(sweep["profile"]), "--format", "csv"])
    out, _ = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 2
    assert list(rows[0])[-2:] == ["eval/symbols_next/acc", "eval/symbols_next/acc_stderr"]
    assert all(float(r["eval/symbols_next/acc"]) > 0.25 and r["flops_processed"] == r["flops"] for r in rows)


def test_a_task_whose_data_is_missing_fails_cleanly(sweep, offline, capsys) -> None:
    code, out, err = sweeper_eval(sweep, capsys, "--tasks", "tiny_missing", "--where", "family=ar")
    assert code == 0 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "tiny_missing: failed, FileNotFoundError" in lines[0] and "not_here.jsonl" in lines[0]
    assert "evaluated 0 tasks on 1 trial, 1 failed" in out
    for run in trial_runs(sweep["db"]):
        assert run.info.status == "FINISHED" and "sweeper.eval/tiny_missing" not in run.data.tags


def test_user_errors_are_one_line_and_exit_two(sweep, offline, capsys) -> None:
    code, _, err = sweeper_eval(sweep, capsys, "--tasks", "symbols_nxt", "--where", "family=ar")
    assert code == 2 and err.strip() == ("error: --tasks: lm-eval knows no task 'symbols_nxt'; did you mean "
                                         "'symbols_next'?")
    code = main(["eval", str(SMOKE), "--backend", str(sweep["profile"])])
    _, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "has no `evals` block" in err


def test_best_weights_of_trials_trained_without_them_are_one_line_each(sweep, offline, capsys) -> None:
    best = sweep["spec"].with_name("best.yaml")
    best.write_text(sweep["spec"].read_text() + "  at: best\n")
    code = main(["eval", str(best), "--backend", str(sweep["profile"]), "--device", "cpu", "--tasks", "tiny_missing"])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 0 and len(lines) == 2 and "Traceback" not in err, err
    assert all("not evaluated, run " in line and "keeps no best-validation weights" in line for line in lines), err
    assert "evaluated 0 tasks on 2 trials, 2 failed" in out, out
