"""Fault injection: a sweep's results survive its drivers and workers being killed. A second driver
is refused while the first lives and takes over once it is dead; points a killed driver had not
written are recovered from the checkpoints; a lost MLflow store gets its runs back whole from
storage. Real processes, Ray, MLflow and files; `SWEEPER_FAULT_SEED` picks other kill points."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import long_spec_text
from test_run import kill, kill_driver, runs, start, sweeper, trial_workers, write_profile

# The points of a curve that the same trial must reproduce exactly (no wall-clock metric).
EXACT = ("train/loss", "val/loss", "val/loss_best", "lr", "grad_norm", "epoch", "flops", "final/val_loss",
         "final/val_loss_best", "final/tokens_trained")


def two_trial_spec(folder: Path, epochs: int, experiment: str = "sweeper-long") -> Path:
    path = folder / "spec.yaml"
    path.write_text(long_spec_text(name="crash", family="[ar, mdm]", epochs=epochs, experiment=experiment))
    return path


def reference_curves(spec: Path, profile: Path, trial_ids: list[str], folder: Path) -> dict[str, dict]:
    """Each trial trained start to end in one process without Ray, checkpointing as the sweep does
    (a checkpoint is a log point): {trial id: {metric: [(tokens, value)]}}."""
    curves = {}
    for trial_id in trial_ids:
        result = sweeper("train", spec, "--backend", profile, "--trial", trial_id,  # one thread, as under Ray
                         "--checkpoint-dir", folder / f"reference-{trial_id}", env_extra={"OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr
        curve: dict[str, list] = {}
        for line in result.stdout.splitlines():
            point = json.loads(line)
            for key in EXACT:
                if key in point:
                    curve.setdefault(key, []).append((int(point["tokens"]), point[key]))
        curves[trial_id] = curve
    return curves


def mlflow_curves(db: Path, experiment: str = "sweeper-long") -> dict[str, tuple[object, dict]]:
    """{trial id: (its one trial run, {metric: [(step, value)] as stored, duplicates included})}."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    found: dict[str, tuple[object, dict]] = {}
    for run in runs(db, experiment):
        if run.data.tags.get("sweeper.kind") != "trial" or "sweeper.superseded_by" in run.data.tags:
            continue
        trial_id = run.data.tags["sweeper.trial_id"]
        assert trial_id not in found, f"two runs of trial {trial_id}"
        found[trial_id] = (run, {key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
                                 for key in EXACT})
    return found


def assert_curves_equal(db: Path, reference: dict[str, dict]) -> int:
    """One FINISHED run per trial, every curve point for point the reference's; returns the points."""
    stored = mlflow_curves(db)
    assert sorted(stored) == sorted(reference)
    points = 0
    for trial_id, (run, curves) in stored.items():
        assert run.info.status == "FINISHED", trial_id
        for key in EXACT:
            want = reference[trial_id].get(key, [])
            got = curves[key]
            assert [s for s, _ in got] == [s for s, _ in want], f"{trial_id} {key}: steps differ"
            assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6), f"{trial_id} {key}"
            points += len(got)
    return points


def wait_for(predicate, process: subprocess.Popen, what: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        assert process.poll() is None, process.communicate()[0]
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen")


@pytest.mark.slow
def test_drivers_and_workers_killed_at_random_points_lose_no_point(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The fault-injection run: one driver at a time (a second is refused, naming the first; a dead
    one is taken over), then the driver and trial workers SIGKILLed at random points; in the end one
    FINISHED run per trial, every curve point for point an uninterrupted run's, final losses exact;
    the scratch folders the killed workers left removed by their trials' next workers; and after the
    MLflow store is lost, the same runs rebuilt from storage without training."""
    seed = int(os.environ.get("SWEEPER_FAULT_SEED", "17"))
    rng = random.Random(seed)
    # 500 steps a trial, a checkpoint every ~45 (3 s at the speed 2e8 FLOP/s would give)
    profile = write_profile(tmp_path, sustained_flops=2e8, retries=20)
    spec = two_trial_spec(tmp_path, epochs=16)
    plan = json.loads(sweeper("plan", spec, "--backend", profile, "--format", "json").stdout)
    trial_ids = [t["id"] for t in plan["trials"]]
    store = tmp_path / "store" / "sweeper-long"
    scratch = tmp_path / "tmp"  # the workers' temporary folder, this test's alone
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setenv("RAY_TMPDIR", "/tmp")  # Ray's own, as without TMPDIR (its socket paths are short)
    clock = time.monotonic()

    def lap(what: str) -> None:
        nonlocal clock
        print(f"{what}: {time.monotonic() - clock:.1f} s")
        clock = time.monotonic()

    driver = start("run", spec, "--backend", profile)
    try:
        wait_for(lambda: (store / "driver.lock").is_file() and str(driver.pid) in (store / "driver.lock").read_text(),
                 driver, "the first driver's lock")
        second = sweeper("run", spec, "--backend", profile, timeout=120)
        assert second.returncode == 2 and second.stdout.count("\n") <= 1, second.stdout + second.stderr
        (line,) = second.stderr.strip().splitlines()
        assert f"is already being run by another driver, pid {driver.pid} on " in line, line
        assert f"stop it with `sweeper stop {spec}`" in line
        lap("first driver started, second refused")

        # Killed once each trial has checkpoints in storage, before it wrote any point (it flushes every 10 s).
        wait_for(lambda: all(len(list((store / t).glob("checkpoint_*/.metadata.json"))) >= 2 for t in trial_ids),
                 driver, "two checkpoints of each trial")
        first_pid = driver.pid
        kill_driver(driver)
        left = sorted(scratch.glob("sweeper-*"))  # its workers' scratch folders, which the kill skipped
        assert left, "no trial worker of the killed driver had a scratch folder"
        before = sum(len(points) for _, curves in mlflow_curves(tmp_path / "mlflow.db").values()
                     for points in curves.values())
        lap("first driver killed")

        driver = start("run", spec, "--backend", profile)
        outputs, faults = [], []
        for kind in rng.sample(["driver", "worker", "worker"], 3):
            # a random point of training: 0.5-3 s after this driver's trial workers run
            while driver.poll() is None and not trial_workers(driver.pid):
                time.sleep(0.1)
            time.sleep(rng.uniform(0.5, 3.0))
            if driver.poll() is not None:
                break
            faults.append(kind)
            if kind == "driver":
                outputs.append(kill_driver(driver))
                driver = start("run", spec, "--backend", profile)
            else:
                kill(trial_workers(driver.pid)[:1])
        outputs.append(driver.communicate(timeout=400)[0])
        lap(f"faults {faults} (seed {seed})")
    finally:
        if driver.poll() is None:
            kill_driver(driver)
    assert f"the sweep's previous driver (pid {first_pid} on " in outputs[0] and "takes over" in outputs[0], outputs[0]
    if driver.returncode != 0:  # a worker killed late can leave its trial to finish
        again = sweeper("run", spec, "--backend", profile)
        assert again.returncode == 0, again.stdout + again.stderr

    assert [p.name for p in scratch.glob("sweeper-*")] == []  # the next workers of the trials removed them
    reference = reference_curves(spec, profile, trial_ids, tmp_path)
    wanted = sum(len(points) for curve in reference.values() for points in curve.values())
    lap("reference curves")
    assert before < wanted  # the killed driver had not written every point
    after = assert_curves_equal(tmp_path / "mlflow.db", reference)
    finals = {t: r.data.metrics["final/val_loss"] for t, (r, _) in mlflow_curves(tmp_path / "mlflow.db").items()}
    assert finals == {t: curve["final/val_loss"][-1][1] for t, curve in reference.items()}  # exact
    print(f"curve points: {before} before the rerun, {after} after, {wanted} in the uninterrupted run")

    # The MLflow store lost after the sweep finished: its runs come back whole from storage.
    (tmp_path / "mlflow.db").unlink()
    rebuilt = sweeper("run", spec, "--backend", profile)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert ("MLflow holds no run of 2 trials that storage holds finished: rebuilding their runs from the final "
            "checkpoint, curve included, without training again") in rebuilt.stdout
    assert "started" in rebuilt.stdout and "retrying" not in rebuilt.stdout
    assert assert_curves_equal(tmp_path / "mlflow.db", reference) == wanted
    assert {t: r.data.metrics["final/val_loss"] for t, (r, _) in mlflow_curves(tmp_path / "mlflow.db").items()} == finals
    lap("store rebuilt")


@pytest.mark.slow
def test_two_commands_on_a_fresh_folder_create_the_mlflow_store_once(tmp_path: Path) -> None:
    # Without the lock around a sqlite store's creation, one of two processes started together
    # (often both) failed inside alembic ("expected to match one row") or SQLAlchemy ("duplicate column").
    script = ("import sys; from sweeper.tracking import Tracking; "
              "print(Tracking(f'sqlite:///{sys.argv[1]}/mlflow.db', 'race').experiment_id)")
    both = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    answers = [process.communicate(timeout=120) for process in both]
    assert [p.returncode for p in both] == [0, 0], answers
    assert {out.strip() for out, _ in answers} == {"1"}  # one experiment, made once
