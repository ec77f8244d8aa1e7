"""`sweeper run` end to end on the smoke spec: real Ray (in-process), real MLflow (sqlite), real data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import LOCAL_PROFILE, REPO, descendants, long_spec_text
from servers import rendered_text, sweeper_ui

pytestmark = pytest.mark.slow

SMOKE = REPO / "tests" / "specs" / "smoke.yaml"


def write_profile(folder: Path, *, sustained_flops: float = 4e10, retries: int = 2) -> Path:
    text = LOCAL_PROFILE.read_text()
    text = text.replace("tracking_uri: sqlite:///mlflow.db", f"tracking_uri: sqlite:///{folder / 'mlflow.db'}")
    text = text.replace("path: sweeper-store", f"path: {folder / 'store'}")
    text = text.replace("sustained_flops: 4.0e10", f"sustained_flops: {sustained_flops}")
    text = text.replace("retries: 2", f"retries: {retries}")
    path = folder / "profile.yaml"
    path.write_text(text)
    return path


def sweeper(*args: object, timeout: float = 600, env_extra: dict[str, str] | None = None,
            **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "sweeper.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)


def runs(db: Path, experiment: str = "sweeper-smoke") -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def test_smoke_sweep_end_to_end_then_nothing_to_do(tmp_path: Path) -> None:
    profile = write_profile(tmp_path)
    # From a shell set up for a cluster (RAY_AUTH_MODE=token): the embedded Ray must not care.
    result = sweeper("run", SMOKE, "--backend", profile, env_extra={"RAY_AUTH_MODE": "token"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 trials: 0 finished, 2 to run" in result.stdout

    all_runs = runs(tmp_path / "mlflow.db")
    parents = [r for r in all_runs if r.data.tags.get("sweeper.kind") == "sweep"]
    children = [r for r in all_runs if r.data.tags.get("sweeper.kind") == "trial"]
    assert len(parents) == 1 and len(children) == 2
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        for tag in ("sweeper.trial_id", "family", "model", "num_params", "unique_tokens", "unique_tokens_actual",
                    "epochs", "tokens", "flops", "sweeper.git_commit", "sweeper.version.torch", "data.key"):
            assert child.data.tags.get(tag), tag
        assert child.data.tags["unique_tokens_actual"] == "4000"
        # planned D = 8000, trained 63 whole steps of 8 × 16 tokens; the recipe version tags the run
        assert (child.data.tags["tokens"], child.data.tags["tokens_trained"]) == ("8000", str(63 * 8 * 16))
        assert child.data.params["tokens_trained"] == str(63 * 8 * 16)
        assert child.data.metrics["final/tokens_trained"] == 63 * 8 * 16
        assert child.data.tags["sweeper.id_schema"] == "sweeper.trial/2"
        val = [(m.step, m.value) for m in client.get_metric_history(child.info.run_id, "val/loss")]
        steps = [s for s, _ in val]
        assert steps[0] == 0 and steps == sorted(set(steps)) and steps[-1] == 63 * 8 * 16
        assert val[-1][1] < val[0][1]  # it learned something
        assert child.data.metrics["final/val_loss"] == pytest.approx(val[-1][1])
        train = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
        assert train == sorted(set(train))

    start = time.perf_counter()
    again = sweeper("run", SMOKE, "--backend", profile)
    assert again.returncode == 0, again.stderr
    assert time.perf_counter() - start < 60
    assert "2 trials: 2 finished, 0 to run" in again.stdout and "nothing to train" in again.stdout
    assert "Ray" not in again.stdout + again.stderr and len(runs(tmp_path / "mlflow.db")) == 3

    # benchmarks/plan_estimate.py sets the plan's estimate beside what the two trials took.
    estimate = subprocess.run([sys.executable, str(REPO / "benchmarks" / "plan_estimate.py"), SMOKE,
                               "--backend", profile], capture_output=True, text=True, timeout=120)
    assert estimate.returncode == 0, estimate.stderr
    summary = json.loads(estimate.stdout)
    assert summary["trials_measured"] == 2 and {t["trial"] for t in summary["trials"]} == set(
        child.info.run_name for child in children)
    assert summary["measured_total_s"] == pytest.approx(sum(t["measured_s"] for t in summary["trials"]), abs=0.1)
    assert summary["fitted_step_seconds"] >= 0 and summary["fitted_trial_seconds"] >= 0

    # The UI: the experiment's runs nest the trials under the sweep; the saved every-trial view
    # lists each child run by name, sorted by final validation loss.
    names = sorted(child.info.run_name for child in children)
    with sweeper_ui(profile, tmp_path) as (nested, every_trial):
        assert "viewStateShareKey=sweeper-trials" in every_trial
        assert "sweep smoke" in rendered_text(nested, tmp_path)
        page = rendered_text(every_trial, tmp_path)
    assert all(name in page for name in names), (names, page[:2000])
    losses = {child.info.run_name: child.data.metrics["final/val_loss"] for child in children}
    assert page.index(min(losses, key=losses.get)) < page.index(max(losses, key=losses.get))




def test_rerun_trains_a_finished_trial_again_from_step_zero(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    profile = write_profile(tmp_path)
    first = sweeper("run", SMOKE, "--backend", profile, "--where", "family=ar")
    assert first.returncode == 0, first.stdout + first.stderr
    (old,) = [r for r in runs(tmp_path / "mlflow.db") if r.data.tags.get("sweeper.kind") == "trial"]
    trial_id = old.data.tags["sweeper.trial_id"]

    again = sweeper("run", SMOKE, "--backend", profile, "--where", "family=ar", "--rerun", trial_id)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 trials: 0 finished, 1 to run" in again.stdout and "resumed" not in again.stdout
    assert "--rerun: 1 trial trains from step 0 into a new run" in again.stdout
    trials = {r.info.run_id: r for r in runs(tmp_path / "mlflow.db") if r.data.tags.get("sweeper.kind") == "trial"}
    (new,) = [r for r in trials.values() if r.info.run_id != old.info.run_id]
    assert trials[old.info.run_id].data.tags["sweeper.superseded_by"] == new.info.run_id
    assert trials[old.info.run_id].info.status == "FINISHED" and new.info.status == "FINISHED"
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    steps = [m.step for m in client.get_metric_history(new.info.run_id, "val/loss")]
    assert steps[0] == 0 and steps[-1] == 63 * 8 * 16  # the whole curve, trained again
    results = sweeper("results", SMOKE, "--backend", profile, "--format", "csv")
    assert new.info.run_id in results.stdout and old.info.run_id not in results.stdout
    done = sweeper("run", SMOKE, "--backend", profile, "--where", "family=ar")
    assert "1 trials: 1 finished, 0 to run" in done.stdout


def long_spec(folder: Path, family: str = "ar", epochs: int = 150, extra: str = "") -> Path:
    path = folder / "long.yaml"
    path.write_text(long_spec_text(name="long", family=family, epochs=epochs, experiment="sweeper-long") + extra)
    return path


def wait_for_checkpoint(store: Path, process: subprocess.Popen, timeout_s: float = 240) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = sorted(store.glob("sweeper-long/*/checkpoint_*/.metadata.json"))
        if found:
            return found[0]
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared")


def start(*args: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "sweeper.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)


def trial_workers(driver_pid: int) -> list[int]:
    """PIDs of the Ray worker processes running a trial (their title is ray::ImplicitFunc...) that
    this driver's embedded Ray started: never another sweep's on this machine. Read them before
    killing the driver, while they are still below it."""
    below = descendants(driver_pid)
    pids = []
    for pid in below:
        try:
            if b"ImplicitFunc" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except OSError:
            continue
    return sorted(pids)


def kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_driver(driver: subprocess.Popen) -> str:
    """SIGKILL a driver from `start` as if its machine went down: its process group, then every
    process that was below it (Ray's workers leave the group), by PID, read before the kill so
    none is missed and no other sweep's is touched; returns what the driver printed."""
    below = descendants(driver.pid)
    try:
        os.killpg(driver.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    out, _ = driver.communicate()
    kill(sorted(below))
    return out


def only_trial_run(db: Path):
    children = [r for r in runs(db, "sweeper-long") if r.data.tags.get("sweeper.kind") == "trial"]
    assert len(children) == 1
    return children[0]


def assert_clean_curve(db: Path, run_id: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    for key in ("train/loss", "val/loss"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert steps == sorted(set(steps)), f"{key} has a repeated or unordered step"


def assert_resumed_and_finished(db: Path) -> None:
    """One run for the trial, FINISHED, resumed from a checkpoint past the start, no step logged twice."""
    run = only_trial_run(db)
    assert run.info.status == "FINISHED"
    assert int(run.data.tags["sweeper.resumed_at_tokens"]) > 0
    assert_clean_curve(db, run.info.run_id)


def test_a_killed_worker_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, sustained_flops=1e8)
    driver = start("run", long_spec(tmp_path), "--backend", profile)
    wait_for_checkpoint(tmp_path / "store", driver)
    workers = trial_workers(driver.pid)
    assert workers
    kill(workers)
    out, _ = driver.communicate(timeout=600)
    assert driver.returncode == 0, out
    assert "retrying ar-smoke-1L-U4k-e150 from its last checkpoint" in out
    assert_resumed_and_finished(tmp_path / "mlflow.db")


def test_a_killed_driver_resumes_on_the_next_run(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, sustained_flops=1e8)
    spec = long_spec(tmp_path)
    driver = start("run", spec, "--backend", profile)
    wait_for_checkpoint(tmp_path / "store", driver)
    kill_driver(driver)
    assert only_trial_run(tmp_path / "mlflow.db").info.status == "RUNNING"
    again = sweeper("run", spec, "--backend", profile)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 trials: 0 finished, 1 to run" in again.stdout and "resumed ar-smoke-1L-U4k-e150" in again.stdout
    assert_resumed_and_finished(tmp_path / "mlflow.db")


def test_stop_marks_running_trials_killed_and_they_resume(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, sustained_flops=1e8)
    spec = long_spec(tmp_path)
    driver = start("run", spec, "--backend", profile)
    wait_for_checkpoint(tmp_path / "store", driver)
    stopped = sweeper("stop", spec, "--backend", profile)
    assert stopped.returncode == 0 and "asked the sweep's driver" in stopped.stdout
    out, _ = driver.communicate(timeout=300)
    assert driver.returncode == 1 and "run the same command again to resume" in out
    assert "Tuner.restore" not in out and "Resume experiment" not in out  # not how a sweep resumes
    assert only_trial_run(tmp_path / "mlflow.db").info.status == "KILLED"
    status = sweeper("status", spec, "--backend", profile)
    assert "KILLED" in status.stdout
    again = sweeper("run", spec, "--backend", profile)
    assert again.returncode == 0 and "resumed ar-smoke-1L-U4k-e150" in again.stdout
    assert only_trial_run(tmp_path / "mlflow.db").info.status == "FINISHED"


def test_a_diverging_trial_fails_at_once_and_the_others_finish(tmp_path: Path) -> None:
    profile = write_profile(tmp_path)
    spec = long_spec(tmp_path, family="[ar, mdm]", epochs=4,
                     extra="overrides:\n  - when: {family: mdm}\n    set: {lr_peak: 1e4, lr_min: 1.0, grad_clip: null}\n")
    result = sweeper("run", spec, "--backend", profile)
    assert result.returncode == 1, result.stdout
    assert "retrying" not in result.stdout
    assert "failed mdm-smoke-1L-U4k-e4" in result.stdout and "training loss is" in result.stdout
    by_family = {r.data.tags["family"]: r for r in runs(tmp_path / "mlflow.db", "sweeper-long")
                 if r.data.tags.get("sweeper.kind") == "trial"}
    assert by_family["ar"].info.status == "FINISHED"
    assert by_family["mdm"].info.status == "FAILED"
    assert "diverged" in by_family["mdm"].data.tags["sweeper.failure"]
    again = sweeper("run", spec, "--backend", profile)
    assert "1 failed before (skipped; --retry-failed runs them again)" in again.stdout
