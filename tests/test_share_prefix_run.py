"""`sweeper run` with share_prefix: trunks and branches on Ray Tune give every trial the final loss of its
unshared run, each in its own MLflow run with its trunk's points up to the branch, for fewer tokens."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from test_run import SMOKE, kill_driver, runs, start, sweeper, write_profile

pytestmark = pytest.mark.slow


def wsd_spec(folder: Path, *, shared: bool, epochs: str = "[2, 4, 8]", experiment: str = "sweeper-wsd") -> Path:
    text = SMOKE.read_text().replace("  epochs: 2\n", f"  epochs: {epochs}\n").replace(
        "  warmup_fraction: 0.1\n", f"  schedule: wsd\n  decay_fraction: 0.2\n  share_prefix: {str(shared).lower()}\n"
    ).replace("experiment: sweeper-smoke", f"experiment: {experiment}")
    path = folder / "wsd.yaml"
    path.write_text(text)
    return path


def trial_runs(db: Path, experiment: str = "sweeper-wsd") -> dict[str, object]:
    return {r.data.tags["sweeper.trial_id"]: r for r in runs(db, experiment) if r.data.tags.get("sweeper.kind") == "trial"}


def assert_no_duplicate_steps(db: Path, run: object) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    for key in run.data.metrics:  # type: ignore[attr-defined]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]  # type: ignore[attr-defined]
        assert steps == sorted(set(steps)), f"{key} has a repeated or unordered step"


def tokens_trained(run: object) -> int:
    """Tokens this run's own training took: a branch's curve up to its branch point is its trunk's."""
    tags = run.data.tags  # type: ignore[attr-defined]
    return int(run.data.metrics["final/tokens_trained"]) - int(tags.get("sweeper.branched_at_tokens", 0))  # type: ignore[attr-defined]


def test_shared_prefixes_give_every_trial_its_unshared_final_loss_for_fewer_tokens(tmp_path: Path) -> None:
    outcomes = {}
    for shared in (True, False):
        folder = tmp_path / ("shared" if shared else "unshared")
        folder.mkdir()
        profile = write_profile(folder)
        began = time.perf_counter()
        result = sweeper("run", wsd_spec(folder, shared=shared), "--backend", profile)
        assert result.returncode == 0, result.stdout + result.stderr
        outcomes[shared] = (trial_runs(folder / "mlflow.db"), time.perf_counter() - began, result.stdout)
        for run in outcomes[shared][0].values():
            assert run.info.status == "FINISHED"
            assert_no_duplicate_steps(folder / "mlflow.db", run)
    (shared_runs, shared_s, out), (alone_runs, alone_s, _) = outcomes[True], outcomes[False]
    assert set(shared_runs) == set(alone_runs) and len(shared_runs) == 6
    deltas = {i: abs(shared_runs[i].data.metrics["final/val_loss"] - alone_runs[i].data.metrics["final/val_loss"])
              for i in shared_runs}
    assert max(deltas.values()) <= 1e-5, deltas
    branches = {i: r for i, r in shared_runs.items() if "sweeper.trunk" in r.data.tags}
    assert len(branches) == 4 and out.count("branched ") == 4 and "from step 0" not in out
    for run in branches.values():
        trunk = shared_runs[run.data.tags["sweeper.trunk"]]
        assert float(trunk.data.tags["epochs"]) == 8 and trunk.data.tags["family"] == run.data.tags["family"]
        assert int(run.data.tags["sweeper.branched_at_tokens"]) > 0
    assert all("sweeper.trunk" not in r.data.tags for r in alone_runs.values())
    shared_tokens = sum(tokens_trained(r) for r in shared_runs.values())
    alone_tokens = sum(tokens_trained(r) for r in alone_runs.values())
    assert shared_tokens < 0.8 * alone_tokens, (shared_tokens, alone_tokens)
    print(f"max |Δ final/val_loss| {max(deltas.values()):.2e}; tokens trained {shared_tokens} shared, "
          f"{alone_tokens} unshared; wall {shared_s:.0f} s shared, {alone_s:.0f} s unshared")

    again = sweeper("run", wsd_spec(tmp_path / "shared", shared=True), "--backend", tmp_path / "shared" / "profile.yaml")
    assert again.returncode == 0 and "6 trials: 6 finished, 0 to run" in again.stdout, again.stdout + again.stderr


def test_a_branch_whose_trunk_is_not_run_trains_from_step_zero_and_says_so(tmp_path: Path) -> None:
    profile = write_profile(tmp_path)
    result = sweeper("run", wsd_spec(tmp_path, shared=True, epochs="[2, 8]"), "--backend", profile,
                     "--where", "family=ar", "--where", "epochs=2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "started ar-smoke-1L-U4k-e2 from step 0: its trunk ar-smoke-1L-U4k-e8 has no checkpoint at step 50" \
        in result.stdout
    (run,) = trial_runs(tmp_path / "mlflow.db").values()
    assert run.info.status == "FINISHED" and "sweeper.trunk" not in run.data.tags


def test_a_trunk_killed_mid_run_resumes_and_its_branch_completes_once(tmp_path: Path) -> None:
    # The ar trunk trains U 4k x 64 epochs = 2,000 steps; its branch (8 epochs) branches at step 200 and
    # starts while the trunk goes on. The machine goes down (driver and workers killed) once the branch
    # point is in storage; the next run finishes both, each in one run, no step twice.
    profile = write_profile(tmp_path, sustained_flops=1e8)
    spec = wsd_spec(tmp_path, shared=True, epochs="[8, 64]")
    driver = start("run", spec, "--backend", profile, "--where", "family=ar")
    deadline = time.monotonic() + 240
    while not list((tmp_path / "store").glob("sweeper-wsd/*/branch_points/step_00000200/complete.json")):
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
        time.sleep(0.2)
    kill_driver(driver)
    again = sweeper("run", spec, "--backend", profile, "--where", "family=ar")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resumed ar-smoke-1L-U4k-e64" in again.stdout and "from step 0" not in again.stdout, again.stdout
    found = trial_runs(tmp_path / "mlflow.db")
    assert len(found) == 2, [(r.data.tags["epochs"], r.info.status) for r in found.values()]
    for run in found.values():
        assert run.info.status == "FINISHED"
        assert_no_duplicate_steps(tmp_path / "mlflow.db", run)
    (branch,) = [r for r in found.values() if float(r.data.tags["epochs"]) == 8]
    assert int(branch.data.tags["sweeper.branched_at_tokens"]) == 200 * 128
    done = sweeper("run", spec, "--backend", profile, "--where", "family=ar")
    assert "2 trials: 2 finished, 0 to run" in done.stdout, done.stdout
