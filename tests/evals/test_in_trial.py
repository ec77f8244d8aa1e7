"""Evals inside the trial: a sweep whose spec has an `evals` block evaluates each trial's weights in
the trial's own Ray worker right after training (here the best-validation weights, `at: best`), and
the results land in its MLflow run with the curve; `sweeper eval` then has nothing left to do. A
task that fails there is one line of the run's output, and the trial still ends FINISHED."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import REPO
from .test_command import SMOKE, trial_runs

pytestmark = pytest.mark.slow
EVALS = ("evals:\n  tasks: [symbols_next, tiny_missing]\n  task_dirs: [tests/evals/tasks]\n  limit: 40\n"
         "  mc_samples: 8\n  at: best\n")


def test_each_trial_is_evaluated_by_its_worker_after_training(tmp_path: Path, offline) -> None:
    profile = (REPO / "backends" / "local.yaml").read_text()
    profile = profile.replace("sqlite:///mlflow.db", f"sqlite:///{tmp_path / 'mlflow.db'}")
    profile = profile.replace("path: sweeper-store", f"path: {tmp_path / 'store'}")
    (tmp_path / "profile.yaml").write_text(profile)
    (tmp_path / "spec.yaml").write_text(SMOKE.read_text() + EVALS)
    env = {**os.environ, "SWEEPER_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "sweeper.cli", "run", str(tmp_path / "spec.yaml"), "--backend",
               str(tmp_path / "profile.yaml")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.count("symbols_next: acc") == 2
    assert out.count("tiny_missing: not evaluated, FileNotFoundError") == 2 and "Traceback" not in out + done.stderr
    runs = trial_runs(tmp_path / "mlflow.db")
    assert len(runs) == 2
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.metrics["eval/symbols_next/acc"] > 0.25  # chance: one in four
        how = json.loads(run.data.tags["sweeper.eval/symbols_next"])
        assert how["at"] == "best" and how["limit"] == 40 and "sweeper.eval/tiny_missing" not in run.data.tags
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
        curve = client.get_metric_history(run.info.run_id, "val/loss")
        best = min(curve, key=lambda m: (m.value, m.step))
        [acc] = client.get_metric_history(run.info.run_id, "eval/symbols_next/acc")
        assert acc.step == best.step  # logged at the tokens of the weights it scored: the best evaluation's
    # `sweeper eval` finds symbols_next done; only the failed task is tried again (and fails again)
    again = subprocess.run([sys.executable, "-m", "sweeper.cli", "eval", str(tmp_path / "spec.yaml"), "--backend",
                            str(tmp_path / "profile.yaml"), "--tasks", "symbols_next"], capture_output=True,
                           text=True, timeout=300, env=env, cwd=REPO)
    assert again.returncode == 0 and again.stdout.strip() == ("nothing to evaluate: 2 finished trials already hold "
                                                               "symbols_next")
