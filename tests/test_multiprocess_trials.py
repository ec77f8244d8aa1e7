"""Trials over several processes: `sweeper run` on a CPU profile with processes_per_trial 2 runs each
trial as a Ray Train run of two gloo workers inside its Tune trial, and the driver sees it as it
sees a trial in one process: the same curve in MLflow, the same result, the same resume. First the
sizing, reservations and concurrency that lead there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import LOCAL_PROFILE, REPO, SMOKE_SPEC, descendants, long_spec_text
from sweeper.console import UserError
from sweeper.plan import plan_sweep
from sweeper.profile import load_profile
from sweeper.driver.tune import TRAIN_DRIVER_RESOURCES, max_concurrent_trials, trial_resources
from sweeper.spec import load_spec
from test_run import kill_driver


def write_profile(folder: Path, *, processes: int, sustained_flops: float = 4e10) -> Path:
    """backends/local.yaml with this folder's MLflow store and storage. Both the one-process and the
    two-process profile cap the micro-batch at 4, so the trials split the global batch of 8 into the
    same micro-batches (one process accumulates two, two processes take one each) and match."""
    text = LOCAL_PROFILE.read_text()
    text = text.replace("tracking_uri: sqlite:///mlflow.db", f"tracking_uri: sqlite:///{folder / 'mlflow.db'}")
    text = text.replace("path: sweeper-store", f"path: {folder / 'store'}")
    text = text.replace("sustained_flops: 4.0e10", f"sustained_flops: {sustained_flops}")
    text = text.replace("max_micro_batch: 16", "max_micro_batch: 4")
    text = text.replace("  cpus_per_trial: 1\n", f"  cpus_per_trial: 1\n  processes_per_trial: {processes}\n")
    assert f"processes_per_trial: {processes}" in text and "devices_per_node: 2" in text
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "profile.yaml"
    path.write_text(text)
    return path


def env() -> dict[str, str]:
    out = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out.pop("RAY_ADDRESS", None)
    return out


def sweeper(*args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweeper.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env())


def planned(spec: Path, profile: Path, family: str):
    (trial,) = [t for t in plan_sweep(load_spec(spec), load_profile(profile)).trials if t.family == family]
    return trial


def single_process_final_loss(spec: Path, trial: str, folder: Path) -> float:
    """The same trial trained by `sweeper train` (one process, no Ray) on its own store."""
    profile = write_profile(folder, processes=1)
    alone = planned(spec, profile, "ar")
    assert alone.id == trial and alone.sizing.devices == 1  # the profile's processes are not part of the id
    result = sweeper("train", spec, "--trial", trial, "--backend", profile)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])["final/val_loss"]


def test_processes_per_trial_sizes_cpu_trials_over_that_many_processes_with_the_same_ids(tmp_path: Path) -> None:
    one, two = (load_profile(write_profile(tmp_path / str(n), processes=n)) for n in (1, 2))
    for spec in (SMOKE_SPEC, REPO / "sweeps" / "quickstart.yaml"):
        alone, parallel = plan_sweep(load_spec(spec), one), plan_sweep(load_spec(spec), two)
        assert {t.name: t.id for t in alone.trials} == {t.name: t.id for t in parallel.trials}
        wall = {t.id: t.wall_seconds for t in alone.trials}
        for trial in parallel.trials:
            sizing = trial.sizing
            assert sizing.devices == 2 and dict(sizing.resources) == {"CPU": 2}
            assert sizing.micro_batch * sizing.grad_accum * sizing.devices == trial.train.batch_sequences
            assert trial.wall_seconds == pytest.approx(wall[trial.id] / 2)


def test_a_batch_that_does_not_split_runs_on_fewer_processes(tmp_path: Path) -> None:
    import dataclasses

    from sweeper.spec.presets import PRESETS
    from sweeper.plan.sizing import size_trial

    hardware = dataclasses.replace(load_profile(LOCAL_PROFILE).hardware, devices_per_node=4, processes_per_trial=4)
    sizes = {batch: size_trial(PRESETS["7M"], vocab_size=50257, seq_len=256, batch_sequences=batch, precision="fp32",
                               hardware=hardware).devices for batch in (16, 6, 7)}
    assert sizes == {16: 4, 6: 3, 7: 1}


@pytest.mark.parametrize(("line", "message"), [
    ("processes_per_trial: 3", "nodes x devices_per_node is 2"),
    ("processes_per_trial: 2\n  accelerator: cuda", "applies to accelerator: cpu"),
])
def test_processes_per_trial_is_checked_where_declared(tmp_path: Path, line: str, message: str) -> None:
    text = LOCAL_PROFILE.read_text().replace("  accelerator: cpu\n", "  accelerator: cpu\n  " + line + "\n")
    if "cuda" in line:
        text = text.replace("  accelerator: cpu\n", "").replace("sustained_flops: 4.0e10", "sustained_flops: 1e14")
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(UserError, match=message):
        load_profile(tmp_path / "p.yaml")


def test_a_trial_over_several_devices_reserves_its_workers_in_train_not_in_tune(tmp_path: Path) -> None:
    profile = load_profile(write_profile(tmp_path, processes=2))
    trials = plan_sweep(load_spec(SMOKE_SPEC), profile).trials
    assert trial_resources(trials[0]) == {"resources": TRAIN_DRIVER_RESOURCES, "workers": 2,
                                          "worker_resources": {"CPU": 1.0}, "threads": 1.0}
    assert max_concurrent_trials(profile, trials) == 1  # two processes each on two CPU slots
    alone = load_profile(write_profile(tmp_path / "one", processes=1))
    single = plan_sweep(load_spec(SMOKE_SPEC), alone).trials
    assert trial_resources(single[0]) == {"resources": {"CPU": 1}, "workers": 1, "threads": 1}
    assert max_concurrent_trials(alone, single) == 2


def test_a_gpu_trial_over_several_devices_gives_each_worker_one_gpu() -> None:
    import dataclasses

    from sweeper.spec.presets import PRESETS
    from sweeper.plan.sizing import size_trial

    cluster = load_profile(REPO / "backends" / "cluster.yaml")
    small_gpus = dataclasses.replace(cluster.hardware, memory_per_device=24_000_000_000, max_trials_per_device=4)
    profile = dataclasses.replace(cluster, hardware=small_gpus)
    trials = plan_sweep(load_spec(REPO / "sweeps" / "grid.yaml"), profile).trials
    large = size_trial(PRESETS["2639M"], vocab_size=50257, seq_len=2048, batch_sequences=256, precision="bf16",
                       hardware=small_gpus)
    assert large.devices == 4
    wide = dataclasses.replace(trials[0], sizing=large)
    assert trial_resources(wide) == {"resources": TRAIN_DRIVER_RESOURCES, "workers": 4,
                                     "worker_resources": {"CPU": 1.0, "GPU": 1.0}, "threads": 1.0}
    # 32 GPUs hold 8 such trials at once
    assert max_concurrent_trials(profile, [wide] * 20) == 8
    # beside trials that share a GPU four ways Tune's own accounting bounds those, so the cap stays
    assert max_concurrent_trials(profile, [wide, *trials]) == profile.concurrency


def trial_runs(db: Path, experiment: str) -> tuple:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    found = client.get_experiment_by_name(experiment)
    runs = [r for r in client.search_runs([found.experiment_id]) if r.data.tags.get("sweeper.kind") == "trial"]
    return client, {r.data.tags["family"]: r for r in runs}


def assert_clean_curve(client, run_id: str, last_tokens: int) -> list[tuple[int, float]]:
    """Every curve ascends in steps = tokens with no step twice and ends at the trial's last token."""
    for key in ("train/loss", "val/loss"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert steps == sorted(set(steps)), f"{key} has a repeated or unordered step"
        assert steps[-1] == last_tokens, key
    return [(m.step, m.value) for m in client.get_metric_history(run_id, "val/loss")]


@pytest.mark.slow
def test_two_process_trials_run_in_ray_train_match_one_process_and_fail_once(tmp_path: Path) -> None:
    # the smoke sweep, whose mdm trial diverges: a deterministic failure, reported and not retried
    spec = tmp_path / "smoke.yaml"
    spec.write_text(SMOKE_SPEC.read_text() + "overrides:\n  - when: {family: mdm}\n"
                    "    set: {lr_peak: 1e4, lr_min: 1.0, grad_clip: null}\n")
    profile = write_profile(tmp_path / "two", processes=2)
    sized = planned(spec, profile, "ar")
    assert sized.id == "3b34162d46c0" and sized.sizing.devices == 2  # the smoke ar trial, id unchanged
    result = sweeper("run", spec, "--backend", profile)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "2 trials: 0 finished, 2 to run" in result.stdout and "retrying" not in result.stdout
    assert f"finished ar-smoke-1L-U4k-e2 ({sized.id})" in result.stdout
    assert "failed mdm-smoke-1L-U4k-e2" in result.stdout and "training loss is" in result.stdout

    client, runs = trial_runs(tmp_path / "two" / "mlflow.db", "sweeper-smoke")
    assert runs["mdm"].info.status == "FAILED" and "diverged" in runs["mdm"].data.tags["sweeper.failure"]
    run = runs["ar"]
    assert run.info.status == "FINISHED" and run.data.tags["sweeper.trial_id"] == sized.id
    assert run.data.tags["node"]  # the first result's sweeper/node_id reached the driver
    assert "sweeper.resumed_at_tokens" not in run.data.tags
    val = assert_clean_curve(client, run.info.run_id, 63 * 8 * 16)
    assert [s for s, _ in val] == [0, 128, 512, 2048, 8064]  # the planned evaluations, steps in tokens
    assert run.data.metrics["final/val_loss"] == pytest.approx(val[-1][1])
    folder = tmp_path / "two" / "store" / "sweeper-smoke" / sized.id
    first = json.loads((folder / "result.json").read_text().splitlines()[0])
    assert first["sweeper/processes"] == 2  # the trainer's process group spanned both workers
    # Train persisted the checkpoints where a later run of the trial looks for them
    stored = sorted(folder.glob("checkpoint_*/.metadata.json"))
    assert stored and json.loads(stored[-1].read_text()) == {"step": 63, "tokens": 8064}

    alone = single_process_final_loss(spec, sized.id, tmp_path / "one")
    assert run.data.metrics["final/val_loss"] == pytest.approx(alone, abs=1e-4)


def train_workers(root: int) -> list[int]:
    pids = []
    for pid in descendants(root):
        try:
            if b"RayTrainWorker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except OSError:
            continue
    return sorted(pids)


@pytest.mark.slow
def test_a_killed_train_worker_resumes_the_trial_from_its_checkpoint(tmp_path: Path) -> None:
    spec = tmp_path / "long.yaml"
    spec.write_text(long_spec_text(name="long", family="ar", epochs=30, experiment="sweeper-long"))
    # a slow assumed machine: the planner then checkpoints every few dozen steps
    profile = write_profile(tmp_path, processes=2, sustained_flops=3e8)
    driver = subprocess.Popen([sys.executable, "-m", "sweeper.cli", "run", spec, "--backend", profile],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(),
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "store").glob("sweeper-long/*/checkpoint_*/.metadata.json")):
            assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()[0]
            time.sleep(0.2)
        workers = train_workers(driver.pid)
        assert len(workers) == 2
        os.kill(workers[-1], signal.SIGKILL)  # one of the two processes, as a lost machine would
        out, _ = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            kill_driver(driver)  # its Ray workers too, which leave its process group
    assert driver.returncode == 0, out
    assert "retrying ar-smoke-1L-U4k-e30 from its last checkpoint" in out
    assert "resumed ar-smoke-1L-U4k-e30 from its checkpoint" in out

    client, runs = trial_runs(tmp_path / "mlflow.db", "sweeper-long")
    run = runs["ar"]
    assert run.info.status == "FINISHED"
    resumed_at = int(run.data.tags["sweeper.resumed_at_tokens"])
    assert 0 < resumed_at < 30 * 4000
    steps = 938  # ceil(30 x 4,000 tokens / 128 tokens a step)
    val = assert_clean_curve(client, run.info.run_id, steps * 128)
    assert val[0][0] == 0 and len(val) == 5
