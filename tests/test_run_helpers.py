"""The driver's pieces that need no Ray: storage folders from experiment names, --rerun's reset, option checks."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SMOKE_SPEC
from sweeper.console import UserError
from sweeper.driver.tune import _drop_tune_resume_hint
from sweeper.storage import experiment_folder, sweep_dir, trial_dir
from sweeper.driver.sweep import forget_checkpoints
from sweeper.driver import stop
from sweeper.driver.stop import STOP_FILE, StopWatcher, claim_driver, request_stop, stop_sweep


@pytest.mark.parametrize("name", ["sweeper-smoke", "chinchilla", "my sweep", "exp.v2", "a..b", "É-été", "x" * 255])
def test_a_safe_name_keeps_todays_folder(name: str) -> None:
    assert experiment_folder(name) == name
    assert trial_dir("/store", name, "abc") == f"/store/{name}/abc"


@pytest.mark.parametrize("name, folder", [
    ("../escape", "escape-"), ("/abs/path", "abs-path-"), ("a/b", "a-b-"), ("..", "experiment-"),
    (".", "experiment-"), ("x\n", "x-"), (" edge ", "edge-"), ("a\\b", "a-b-"), ("é" * 200, "experiment-"),
    ("", "experiment-"),
])
def test_an_unsafe_name_gets_a_folder_inside_storage(name: str, folder: str, tmp_path: Path) -> None:
    derived = experiment_folder(name)
    assert derived.startswith(folder) and len(derived) == len(folder) + 12
    assert "/" not in derived and "\\" not in derived and derived.isprintable() and len(derived.encode()) <= 255
    root = str(tmp_path / "store")
    path = os.path.normpath(trial_dir(root, name, "abc123def456"))
    assert path == os.path.join(root, derived, "abc123def456")
    request_stop(root, name, None)  # the stop request lands inside storage too
    assert (Path(sweep_dir(root, name)) / "stop-requested").is_file() and Path(sweep_dir(root, name)).parent == Path(root)
    assert experiment_folder(name) != experiment_folder(name + "x")  # distinct names, distinct folders


def test_forget_checkpoints_removes_only_the_rerun_trials(tmp_path: Path) -> None:
    root = str(tmp_path)
    for trial in ("aaa", "bbb"):
        folder = Path(trial_dir(root, "exp", trial)) / "checkpoint_000003"
        folder.mkdir(parents=True)
        (folder / ".metadata.json").write_text('{"step": 10}')
    forget_checkpoints(root, "exp", ["aaa", "never-ran"], None)
    assert not Path(trial_dir(root, "exp", "aaa")).exists()
    assert Path(trial_dir(root, "exp", "bbb"), "checkpoint_000003").is_dir()


def test_tunes_restore_hint_is_dropped_and_other_warnings_kept() -> None:
    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("ray.tune.tune", logging.WARNING, __file__, 1, message, None, None)

    assert not _drop_tune_resume_hint(record("Experiment has been interrupted, but the most recent state was saved.\n"
                                             'Resume experiment with: Tuner.restore(path="/x", trainable=...)'))
    assert not _drop_tune_resume_hint(record("Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run."))
    assert _drop_tune_resume_hint(record("No trial resources are available for launching the task."))


@pytest.mark.parametrize("hours", ["nan", "inf", "-1", "0"])
def test_max_device_hours_must_be_a_positive_number(cli, hours: str) -> None:
    code, out, err = cli("run", SMOKE_SPEC, "--max-device-hours", hours)
    assert (code, out) == (2, "") and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: --max-device-hours {float(hours):g}: expected a positive number of device-hours")


def test_check_device_hours_accepts_a_limit() -> None:
    from sweeper.cli.run import check_device_hours

    check_device_hours(None)
    check_device_hours(0.5)
    with pytest.raises(UserError):
        check_device_hours(float("nan"))


def test_sweeper_stop_asks_a_running_driver_through_storage(tmp_path: Path) -> None:
    root = str(tmp_path)
    with pytest.raises(UserError, match=f"no sweep of experiment 'exp' is running from {root}"):
        stop_sweep(root, "exp", None)
    driver_file = claim_driver(root, "exp")  # this process stands in for the driver
    assert stop_sweep(root, "exp", None).startswith(f"asked the sweep's driver (pid {os.getpid()}) to stop")
    assert (Path(sweep_dir(root, "exp")) / STOP_FILE).is_file()  # the request every driver watches
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    driver_file.write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname()}))
    with pytest.raises(UserError, match=f"the sweep's driver \\(pid {gone.pid}\\) is gone; nothing to stop"):
        stop_sweep(root, "exp", None)
    assert not driver_file.exists()


def test_a_stop_request_interrupts_the_driver_as_ctrl_c_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = str(tmp_path)
    monkeypatch.setattr(stop, "STOP_POLL_S", 0.05)
    interrupted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        request_stop(root, "exp", None)  # stale: left by a driver that died before it read it
        with StopWatcher(f"{sweep_dir(root, 'exp')}/{STOP_FILE}", None):
            time.sleep(0.3)
            assert not interrupted
            request_stop(root, "exp", None)
            deadline = time.monotonic() + 10
            while not interrupted and time.monotonic() < deadline:
                time.sleep(0.05)
        assert interrupted == [signal.SIGINT]
        assert not (Path(sweep_dir(root, "exp")) / STOP_FILE).exists()  # answered once
    finally:
        signal.signal(signal.SIGINT, previous)


def test_one_driver_holds_a_sweep_and_a_dead_holders_lock_is_taken_over(tmp_path: Path) -> None:
    from sweeper.driver.lock import SweepLock

    root = str(tmp_path / "store")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from sweeper.driver.lock import SweepLock; "
        f"SweepLock({root!r}, 'exp', 'spec.yaml').acquire(); print('held', flush=True); time.sleep(600)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError) as refused:
            SweepLock(root, "exp", "spec.yaml").acquire()
        assert str(refused.value).startswith(
            f"experiment 'exp' with storage {root} is already being run by another driver, pid {holder.pid} on "
            f"{socket.gethostname()} (since ")
        assert str(refused.value).endswith("wait for it to end or stop it with `sweeper stop spec.yaml`")
    finally:
        holder.kill()  # SIGKILL: it never releases the lock itself
        holder.wait()
    lock = SweepLock(root, "exp", "spec.yaml").acquire()
    assert lock.taken_over is not None and lock.taken_over["pid"] == holder.pid
    lock.release()
    again = SweepLock(root, "exp", "spec.yaml").acquire()  # released cleanly: nothing to take over
    assert again.taken_over is None
    again.release()
    other = SweepLock(root, "other-exp", "spec.yaml").acquire()  # another experiment, another lock
    other.release()


def test_finished_trials_in_storage_are_found_with_whether_they_keep_their_curve(tmp_path: Path) -> None:
    from sweeper.driver.checkpoints import finished_in_storage

    def checkpoint(trial: str, index: int, step: int, curve: bool) -> None:
        folder = tmp_path / trial / f"checkpoint_{index:06d}"
        folder.mkdir(parents=True)
        for name in ("state.pt", "config.json"):
            (folder / name).write_bytes(b"x" * 10)
        (folder / "complete.json").write_text(json.dumps({"files": {n: {"bytes": 10, "sha256": ""}
                                                                    for n in ("state.pt", "config.json")}}))
        (folder / ".metadata.json").write_text(json.dumps({"step": step, "tokens": step * 128}))
        if curve:
            (folder / "curve.json").write_text(json.dumps({"curve": [[0, {"val/loss": 4.0}]]}))

    checkpoint("kept", 1, 63, curve=True)          # finished, with its curve
    checkpoint("old", 1, 63, curve=False)          # finished before checkpoints kept curves
    checkpoint("halfway", 1, 30, curve=True)       # not finished
    checkpoint("torn", 1, 40, curve=True)
    checkpoint("torn", 2, 63, curve=True)
    (tmp_path / "torn" / "checkpoint_000002" / "state.pt").write_bytes(b"x")  # its newest is cut short
    steps = {trial: 63 for trial in ("kept", "old", "halfway", "torn", "never-ran")}
    assert finished_in_storage(str(tmp_path), steps) == {"kept": True, "old": False}
    assert finished_in_storage(str(tmp_path / "nothing-here"), steps) == {}


def test_time_left_is_the_plans_estimate_until_a_tenth_is_done_then_the_pace_measured() -> None:
    from sweeper.driver.progress import time_left

    assert time_left(30.0, 0.0, 600.0, 600.0) == "≈10 min estimated"
    assert time_left(30.0, 59.0, 600.0, 600.0) == "≈10 min estimated"
    # a quarter of the planned work done in 5 min: three quarters more take 15 min, whatever the plan said
    assert time_left(300.0, 150.0, 600.0, 600.0) == "≈15 min left at the pace so far (plan: 10 min)"
    assert time_left(900.0, 600.0, 600.0, 600.0) == "≈0 s left at the pace so far (plan: 10 min)"


def test_progress_counts_what_the_run_trains_a_branch_from_its_branch_point(write_spec) -> None:
    """A branch starts at its trunk's branch point: the tokens it takes from the trunk are neither
    planned nor done in the progress line, and the pace is measured on its own part's time."""
    from conftest import MINIMAL, REPO
    from sweeper.driver.progress import SweepCallback, time_left
    from sweeper.plan import plan_sweep
    from sweeper.profile import load_profile
    from sweeper.spec import load_spec
    from sweeper.units import fmt_count

    text = MINIMAL.replace("  batch_sequences: 8\n", "  batch_sequences: 8\n  schedule: wsd\n  share_prefix: true\n")
    spec = load_spec(write_spec(text.replace("family: [ar, mdm]", "family: ar").replace("[1, 2]", "[1, 2, 4]")))
    plan = plan_sweep(spec, load_profile(REPO / "backends" / "local.yaml"))
    trunk, e2, e1 = sorted(plan.trials, key=lambda t: -t.epochs)
    assert e2.trunk_id == e1.trunk_id == trunk.id and e2.tokens_shared > 0
    progress = SweepCallback(tracking=None, parent_run_id="", trials={t.id: t for t in plan.trials}, extra_tags={},
                             metric_names=frozenset(), estimate_s=60.0, started=time.monotonic() - 100.0)
    progress.states[trunk.id].state, progress.states[trunk.id].tokens = "finished", trunk.tokens_trained
    progress.states[e2.id].state, progress.states[e2.id].tokens = "running", e2.tokens_shared  # just branched
    own = [trunk.tokens, e2.tokens - e2.tokens_shared, e1.tokens - e1.tokens_shared]
    line = progress.summary_line()
    assert f"tokens {fmt_count(trunk.tokens)}/{fmt_count(sum(own))} ({trunk.tokens / sum(own):.0%})" in line
    planned_s = trunk.wall_seconds + e2.branch_wall_seconds + e1.branch_wall_seconds
    assert line.endswith(time_left(100.0, trunk.wall_seconds, planned_s, 60.0)), line
    # halfway through its own part
    progress.states[e2.id].tokens = e2.tokens_shared + own[1] // 2
    assert f"tokens {fmt_count(trunk.tokens + own[1] // 2)}/" in progress.summary_line()
    # the branches alone, their trunk trained by an earlier run that stored e2's branch point only: e2 starts
    # there, e1 trains from step 0, as the estimate counts them (sweeper.driver.preflight)
    progress = SweepCallback(tracking=None, parent_run_id="", trials={t.id: t for t in (e2, e1)}, extra_tags={},
                             metric_names=frozenset(), estimate_s=60.0, started=time.monotonic() - 100.0,
                             stored=frozenset({e2.id}))
    progress.states[e1.id].state, progress.states[e1.id].tokens = "running", e1.tokens // 2
    line = progress.summary_line()
    assert f"tokens {fmt_count(e1.tokens // 2)}/{fmt_count(own[1] + e1.tokens)} " in line
    planned_s = e2.branch_wall_seconds + e1.wall_seconds
    assert line.endswith(time_left(100.0, e1.wall_seconds / 2, planned_s, 60.0)), line
    # with the trunk in the run, a branch the driver started from step 0 (its trunk failed before its
    # branch point) counts in full
    progress = SweepCallback(tracking=None, parent_run_id="", trials={t.id: t for t in plan.trials}, extra_tags={},
                             metric_names=frozenset(), estimate_s=60.0)
    progress.states[e1.id].from_step_zero = True
    assert f"tokens 0/{fmt_count(own[0] + own[1] + e1.tokens)} " in progress.summary_line()


def test_max_device_hours_and_the_estimate_count_a_branch_from_its_branch_point(write_spec) -> None:
    """Under prefix sharing the run trains each branch from its branch point: --max-device-hours
    weighs that, and a limit between the shared and the unshared device-hours lets the run go on."""
    from conftest import MINIMAL, REPO
    from sweeper.driver.preflight import preflight
    from sweeper.plan import plan_sweep
    from sweeper.profile import load_profile
    from sweeper.spec import load_spec

    text = MINIMAL.replace("  batch_sequences: 8\n", "  batch_sequences: 8\n  schedule: wsd\n  share_prefix: true\n")
    spec = load_spec(write_spec(text.replace("family: [ar, mdm]", "family: ar").replace("[1, 2]", "[1, 2, 4, 8]")))
    profile = load_profile(REPO / "backends" / "local.yaml")
    plan = plan_sweep(spec, profile)
    totals = plan.totals()
    shared, alone = totals["device_hours_shared"], totals["device_hours"]
    assert shared < alone

    def check(limit: float):
        return preflight(spec, plan, profile, trials=list(plan.trials), rerun=(), retry_failed=False,
                         max_device_hours=limit)

    _, selection, _, estimate_s, _ = check((shared + alone) / 2)
    assert len(selection.to_run) == 4
    assert estimate_s == pytest.approx(plan.makespan_seconds(shared=True)) and estimate_s < plan.makespan_seconds()
    with pytest.raises(UserError, match=f"need an estimated {shared:,.2f} device-hours, more than --max-device-hours"):
        check(shared * 0.99)


def test_the_estimate_starts_a_branch_at_a_branch_point_an_earlier_run_stored(write_spec) -> None:
    """A branch whose trunk finished in an earlier run starts from the branch point that run left in
    storage: the estimate and --max-device-hours count only its own part. A torn or missing branch
    point means training from step 0, counted in full."""
    import dataclasses
    import json

    from conftest import MINIMAL, REPO
    from sweeper.driver.preflight import preflight
    from sweeper.driver.sharing import branch_point_path
    from sweeper.plan import plan_sweep
    from sweeper.profile import load_profile
    from sweeper.spec import load_spec
    from sweeper.storage import trial_dir
    from sweeper.trainer.checkpoint import COMPLETE_FILE

    text = MINIMAL.replace("  batch_sequences: 8\n", "  batch_sequences: 8\n  schedule: wsd\n  share_prefix: true\n")
    spec = load_spec(write_spec(text.replace("family: [ar, mdm]", "family: ar").replace("[1, 2]", "[1, 2, 4, 8]")))
    profile = load_profile(REPO / "backends" / "local.yaml")
    plan = plan_sweep(spec, profile)
    branches = [t for t in plan.trials if t.trunk_id is not None]
    assert len(branches) == 3

    def store(branch, *, whole: bool) -> None:
        folder = Path(branch_point_path(trial_dir(profile.storage_root(), spec.experiment, branch.trunk_id),
                                        branch.branch_step))
        folder.mkdir(parents=True)
        (folder / "state.pt").write_bytes(b"weights")
        size = 7 if whole else 70  # a torn copy: its marker records more than arrived
        (folder / COMPLETE_FILE).write_text(json.dumps({"files": {"state.pt": {"bytes": size, "sha256": ""}}}))

    def estimate() -> float:  # the branches alone: their trunk is not trained by this run
        checked = preflight(spec, plan, profile, trials=branches, rerun=(), retry_failed=False, max_device_hours=None)
        assert checked[4] == stored  # what the progress line then counts from the branch point
        return checked[3]

    alone = dataclasses.replace(plan, trials=tuple(branches), concurrency=profile.concurrency)
    stored = set()
    assert estimate() == pytest.approx(alone.makespan_seconds(shared=True)) == pytest.approx(alone.makespan_seconds())
    store(branches[0], whole=True)
    store(branches[1], whole=False)
    stored = {branches[0].id}
    assert estimate() == pytest.approx(alone.makespan_seconds(shared=True, stored=stored))
    assert alone.makespan_seconds(shared=True, stored=stored) < alone.makespan_seconds()
    shared_hours = alone.totals(stored)["device_hours_shared"]
    assert shared_hours * 3600 == pytest.approx(sum(t.device_seconds for t in branches) - branches[0].device_seconds
                                                + branches[0].branch_device_seconds)
    with pytest.raises(UserError, match=f"need an estimated {shared_hours:,.2f} device-hours"):
        preflight(spec, plan, profile, trials=branches, rerun=(), retry_failed=False,
                  max_device_hours=shared_hours * 0.99)
