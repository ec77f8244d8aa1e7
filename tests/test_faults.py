"""Faults a sweep must survive without losing or falsifying results, with real Ray, MLflow, files and
signals: SIGTERM, a torn checkpoint in storage, a failed attempt retried, a corrupted token cache."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from test_run import (SMOKE, assert_clean_curve, kill, long_spec, only_trial_run, runs, start, sweeper,
                      trial_workers, write_profile)

pytestmark = pytest.mark.slow


def checkpoints(store: Path) -> list[Path]:
    """The trial's checkpoints in storage that Tune has finished recording, oldest first."""
    found = [p.parent for p in store.glob("sweeper-long/*/checkpoint_*/.metadata.json")]
    return sorted(found, key=lambda p: json.loads((p / ".metadata.json").read_text())["step"])


def wait_for_checkpoints(store: Path, process, count: int, timeout_s: float = 240) -> list[Path]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [p for p in checkpoints(store) if (p / "complete.json").is_file()]
        if len(found) >= count:
            return found
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} checkpoints appeared")


def final_loss_without_ray(spec: Path, profile: Path, trial_id: str) -> float:
    """The trial trained start to end in one process, no Ray: the reference every recovery must match."""
    result = sweeper("train", spec, "--backend", profile, "--trial", trial_id)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])["final/val_loss"]


def test_sigterm_stops_as_ctrl_c_and_a_torn_newest_checkpoint_is_passed_over(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, sustained_flops=1e8)
    spec = long_spec(tmp_path, epochs=40)
    driver = start("run", spec, "--backend", profile)
    wait_for_checkpoints(tmp_path / "store", driver, 2)
    sent = time.monotonic()
    driver.send_signal(signal.SIGTERM)  # the driver's process alone, as a job scheduler sends it
    out, _ = driver.communicate(timeout=120)
    stopped_in = time.monotonic() - sent
    assert driver.returncode == 1 and "run the same command again to resume" in out, out
    assert stopped_in < 30, f"SIGTERM took {stopped_in:.0f} s to stop the sweep"
    assert only_trial_run(tmp_path / "mlflow.db").info.status == "KILLED"

    # The newest checkpoint in storage is cut short, as a crash while Tune copied it would leave it.
    *_, older, newest = checkpoints(tmp_path / "store")
    older_tokens, newest_tokens = (json.loads((c / ".metadata.json").read_text())["tokens"] for c in (older, newest))
    state = newest / "state.pt"
    whole = state.stat().st_size
    state.write_bytes(state.read_bytes()[:whole // 2])
    again = sweeper("run", spec, "--backend", profile)
    assert again.returncode == 0, again.stdout + again.stderr
    run = only_trial_run(tmp_path / "mlflow.db")
    trial = f"{run.data.tags['mlflow.runName']} ({run.data.tags['sweeper.trial_id']})"
    assert (f"warning: {trial}: the checkpoint {newest} has a state.pt of {whole // 2:,} bytes, not the {whole:,} "
            f"its complete.json records: resuming from {older}") in again.stdout
    assert run.info.status == "FINISHED"
    assert older_tokens < int(run.data.tags["sweeper.resumed_at_tokens"]) <= newest_tokens  # its first point after
    assert_clean_curve(tmp_path / "mlflow.db", run.info.run_id)
    reference = final_loss_without_ray(spec, profile, run.data.tags["sweeper.trial_id"])
    assert run.data.metrics["final/val_loss"] == pytest.approx(reference, rel=1e-6)


def test_a_finished_retry_keeps_no_failure_of_an_earlier_attempt(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, sustained_flops=1e8, retries=0)
    spec = long_spec(tmp_path, epochs=40)
    driver = start("run", spec, "--backend", profile)
    wait_for_checkpoints(tmp_path / "store", driver, 1)
    workers = trial_workers(driver.pid)
    assert workers
    kill(workers)  # with no retries left, the trial fails
    out, _ = driver.communicate(timeout=300)
    assert driver.returncode == 1, out
    failed = only_trial_run(tmp_path / "mlflow.db")
    assert failed.info.status == "FAILED" and failed.data.tags.get("sweeper.failure")
    again = sweeper("run", spec, "--backend", profile, "--retry-failed")
    assert again.returncode == 0, again.stdout + again.stderr
    run = only_trial_run(tmp_path / "mlflow.db")
    assert run.info.run_id == failed.info.run_id and run.info.status == "FINISHED"
    assert "sweeper.failure" not in run.data.tags
    status = sweeper("status", spec, "--backend", profile, "--format", "json")
    (row,) = json.loads(status.stdout)["trials"]
    assert row["status"] == "FINISHED" and not row["failure"]


def test_a_corrupted_local_cache_is_rebuilt_before_anything_trains(tmp_path: Path) -> None:
    profile = write_profile(tmp_path)
    assert sweeper("data", SMOKE, "--backend", profile).returncode == 0
    plan = json.loads(sweeper("plan", SMOKE, "--backend", profile, "--where", "family=ar", "--format", "json").stdout)
    trial_id = plan["trials"][0]["id"]
    reference = final_loss_without_ray(SMOKE, profile, trial_id)
    (train,) = (tmp_path / "store" / "data").glob("*/train-*.bin")
    size = train.stat().st_size
    train.write_bytes(np.random.default_rng(0).integers(0, 65, size // 2, dtype="<u2").tobytes())
    result = sweeper("run", SMOKE, "--backend", profile, "--where", "family=ar")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{train.name} did not match the checksums in its manifest; the cache was built again" in result.stdout
    (run,) = [r for r in runs(tmp_path / "mlflow.db") if r.data.tags.get("sweeper.kind") == "trial"]
    assert run.data.metrics["final/val_loss"] == pytest.approx(reference, rel=1e-6)


def test_a_corrupted_cache_in_s3_fails_its_trial_with_one_clear_line_until_sweeper_data_rebuilds_it(
        tmp_path: Path) -> None:
    # An s3:// cache is not downloaded by the driver to be checked: the trial checks what it reads,
    # and its error crosses Ray to the driver whole (not retried, not a TypeError from unpickling).
    from servers import seaweed_s3

    (tmp_path / "weed").mkdir()
    with seaweed_s3(tmp_path / "weed", bucket="faults", access_key="faults") as s3:
        profile = write_profile(tmp_path)
        profile.write_text(profile.read_text().replace(f"path: {tmp_path / 'store'}",
                                                       f"path: s3://faults/store\n  endpoint: {s3.endpoint}"))
        env = {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key,
               "SWEEPER_DATA_CACHE": str(tmp_path / "node-cache")}
        assert sweeper("data", SMOKE, "--backend", profile, env_extra=env).returncode == 0
        client = s3.client()
        (key,) = [o["Key"] for o in client.list_objects_v2(Bucket="faults", Prefix="store/data/")["Contents"]
                  if "/train-" in o["Key"]]
        size = client.head_object(Bucket="faults", Key=key)["ContentLength"]
        client.put_object(Bucket="faults", Key=key,
                          Body=np.random.default_rng(0).integers(0, 65, size // 2, dtype="<u2").tobytes())

        # The trials run on a node that has no copy yet (this one kept what `sweeper data` uploaded).
        env["SWEEPER_DATA_CACHE"] = str(tmp_path / "worker-node")
        failed = sweeper("run", SMOKE, "--backend", profile, "--where", "family=ar", env_extra=env)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        message = (f"{profile} storage.path: the token cache file s3://faults/{key} does not match the SHA-256 its "
                   "manifest records (corrupted or cut short); run `sweeper data` with this sweep's spec to rebuild "
                   "the cache (then `sweeper run --retry-failed` for trials that failed on it)")
        assert f"): {message}" in failed.stdout and "retrying" not in failed.stdout, failed.stdout
        (run,) = [r for r in runs(tmp_path / "mlflow.db") if r.data.tags.get("sweeper.kind") == "trial"]
        assert run.info.status == "FAILED" and run.data.tags["sweeper.failure"] == message

        repaired = sweeper("data", SMOKE, "--backend", profile, env_extra={**env, "SWEEPER_DATA_CACHE": str(
            tmp_path / "node-cache")})  # its good copy does not stand in for the object
        assert repaired.returncode == 0 and f"{key.rsplit('/', 1)[1]} did not match the checksums" in repaired.stdout
        again = sweeper("run", SMOKE, "--backend", profile, "--where", "family=ar", "--retry-failed", env_extra=env)
        assert again.returncode == 0, again.stdout + again.stderr
        (run,) = [r for r in runs(tmp_path / "mlflow.db") if r.data.tags.get("sweeper.kind") == "trial"]
        assert run.info.status == "FINISHED" and "sweeper.failure" not in run.data.tags
        reference = sweeper("train", SMOKE, "--backend", profile, "--trial", run.data.tags["sweeper.trial_id"],
                            env_extra=env)
        assert run.data.metrics["final/val_loss"] == pytest.approx(
            json.loads(reference.stdout.splitlines()[-1])["final/val_loss"], rel=1e-6)
