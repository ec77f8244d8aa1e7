"""`sweeper run --cluster` for real: the local multi-node setup of infra/local/cluster.py (a Ray
head and a worker node with token auth, an MLflow server, a SeaweedFS S3 server), driven the way a
user drives it, from a shell that sourced the setup's env.sh, with backends/local-cluster.yaml."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, long_spec_text
from servers import free_port

sys.path.insert(0, str(REPO / "infra" / "local"))
import cluster as local  # noqa: E402  (infra/local is a script folder, not a package)

pytestmark = pytest.mark.slow

SMOKE = REPO / "tests" / "specs" / "smoke.yaml"
PROFILE = REPO / "backends" / "local-cluster.yaml"



@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local.LocalCluster]:
    cluster = local.LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def environment(setup: local.LocalCluster, **overrides: str) -> dict[str, str]:
    """A shell that sourced env.sh: none of this machine's own Ray, MLflow or AWS settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "SWEEPER_", "AWS_"))}
    return {**env, **setup.env(), "PYTHONUNBUFFERED": "1", **overrides}


def sweeper(setup: local.LocalCluster, *args: object, timeout: float = 600,
            **overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweeper.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=environment(setup, **overrides))


def long_spec(folder: Path, name: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(long_spec_text(name=name, family="[ar, mdm]", epochs=250, experiment=name))
    return path


def client(setup: local.LocalCluster):  # -> MlflowClient
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=setup.mlflow_uri)


def trial_runs(setup: local.LocalCluster, experiment: str) -> list:
    found = client(setup).get_experiment_by_name(experiment)
    runs = client(setup).search_runs([found.experiment_id]) if found else []
    return [r for r in runs if r.data.tags.get("sweeper.kind") == "trial"]


def s3_keys(setup: local.LocalCluster, prefix: str) -> list[str]:
    s3 = setup.s3_client()
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=local.BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def whole_checkpoint(setup: local.LocalCluster, trial_dir: str) -> bool:
    """Whether the trial has a checkpoint in S3 that a retry would resume from (resume_candidates). A
    key alone may be the first file of a copy still under way, and a node lost then leaves only a torn
    checkpoint, which the retry rightly passes over."""
    from unittest import mock

    from sweeper.driver.checkpoints import resume_candidates

    credentials = {k: v for k, v in setup.env().items() if k.startswith("AWS_")}
    with mock.patch.dict(os.environ, credentials):
        return bool(resume_candidates(trial_dir, setup.s3_endpoint)[0])


def jobs(setup: local.LocalCluster) -> list:
    from ray.dashboard.modules.job.sdk import JobSubmissionClient

    return JobSubmissionClient(setup.ray_address, headers={"Authorization": f"Bearer {setup.secrets.ray_token}"}
                               ).list_jobs()


def test_bad_cluster_input_fails_before_anything_is_submitted(setup: local.LocalCluster, tmp_path: Path) -> None:
    before = len(jobs(setup))
    closed = f"http://127.0.0.1:{free_port()}"
    cases = {
        "unreachable Ray": ({"RAY_ADDRESS": closed}, "cannot reach the Ray cluster's Jobs API"),
        "wrong token": ({"RAY_AUTH_TOKEN": "not-the-token"}, "refused the request"),
        "missing bucket": ({"SWEEPER_STORAGE": "s3://no-such-bucket/sweeps"}, "there is no bucket 'no-such-bucket'"),
        "bad S3 credentials": ({"AWS_SECRET_ACCESS_KEY": "wrong"}, "access denied"),
        "MLflow down": ({"MLFLOW_TRACKING_URI": closed}, closed),
        "Ray Client address": ({"RAY_ADDRESS": "ray://127.0.0.1:10001"}, "is a Ray Client address"),
        "storage on this machine": ({"SWEEPER_STORAGE": "sweeper-store"}, "is a folder on this machine"),
    }
    for case, (overrides, expected) in cases.items():
        result = sweeper(setup, "run", SMOKE, "--backend", PROFILE, timeout=120, **overrides)
        assert result.returncode == 2, (case, result.stdout, result.stderr)
        assert expected in result.stderr, (case, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, (case, result.stderr)
    assert len(jobs(setup)) == before


def test_cluster_sweep_lost_node_duplicate_submission_and_reconnect(setup: local.LocalCluster, tmp_path: Path) -> None:
    spec = long_spec(tmp_path, "cluster-long")
    submitted = sweeper(setup, "run", spec, "--backend", PROFILE, "--no-follow")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "as job sweeper-cluster-long-cluster-long-1" in submitted.stdout

    again = sweeper(setup, "run", spec, "--backend", PROFILE)
    assert again.returncode == 2 and "already" in again.stderr and "sweeper-cluster-long-cluster-long-1" in again.stderr

    # Both trials run, one on each node, and have checkpointed into S3; then the worker node dies.
    worker = next(n["node_id"] for n in setup.alive_nodes() if not n["is_head_node"])
    deadline = time.monotonic() + 300
    while True:
        runs = trial_runs(setup, "cluster-long")
        nodes = {r.data.tags.get("sweeper.trial_id"): r.data.tags.get("node") for r in runs}
        on_worker = [t for t, n in nodes.items() if n == worker]
        if on_worker and whole_checkpoint(setup, f"s3://{local.BUCKET}/sweeps/cluster-long/{on_worker[0]}"):
            break
        assert time.monotonic() < deadline, (nodes, worker)
        time.sleep(1)
    assert len(set(nodes.values())) == 2, nodes  # spread over both nodes
    moved = on_worker[0]
    setup.kill_worker()

    # Disconnected and reconnected: status follows the same job to its end.
    followed = sweeper(setup, "status", spec, "--backend", PROFILE, "--follow")
    assert followed.returncode == 0, followed.stdout + followed.stderr
    assert "job sweeper-cluster-long-cluster-long-1" in followed.stdout and "succeeded" in followed.stdout

    runs = {r.data.tags["sweeper.trial_id"]: r for r in trial_runs(setup, "cluster-long")}
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs.values())
    resumed = runs[moved].data.tags
    assert int(resumed.get("sweeper.resumed_at_tokens", 0)) > 0, (resumed.get("sweeper.warning"), followed.stdout)
    assert resumed["nodes"].split(",")[0] == worker and resumed["node"] != worker, resumed
    history = client(setup).get_metric_history(runs[moved].info.run_id, "train/loss")
    steps = [m.step for m in history]
    assert steps == sorted(set(steps))  # continuous, no step twice
    assert s3_keys(setup, "sweeps/data/")  # token caches in S3 too


def test_stop_then_resubmit_continues(setup: local.LocalCluster, tmp_path: Path) -> None:
    spec = long_spec(tmp_path, "cluster-stop")
    submitted = sweeper(setup, "run", spec, "--backend", PROFILE, "--no-follow")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    deadline = time.monotonic() + 240
    stop_dir = f"s3://{local.BUCKET}/sweeps/cluster-stop"
    while not any(whole_checkpoint(setup, f"{stop_dir}/{r.data.tags['sweeper.trial_id']}")
                  for r in trial_runs(setup, "cluster-stop")):
        assert time.monotonic() < deadline
        time.sleep(1)

    stopped = sweeper(setup, "stop", spec, "--backend", PROFILE)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "job sweeper-cluster-stop-cluster-stop-1 stopped" in stopped.stdout
    assert {r.info.status for r in trial_runs(setup, "cluster-stop")} <= {"KILLED", "FINISHED"}

    resumed = sweeper(setup, "run", spec, "--backend", PROFILE)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "as job sweeper-cluster-stop-cluster-stop-2" in resumed.stdout
    runs = trial_runs(setup, "cluster-stop")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert any(int(r.data.tags.get("sweeper.resumed_at_tokens", 0)) > 0 for r in runs)


def test_prefix_sharing_on_the_cluster_keeps_branch_points_in_s3(setup: local.LocalCluster, tmp_path: Path) -> None:
    """Trunks and branches through a Ray Job on two nodes with S3 storage: the branch points are
    copied into the trunk's folder in S3, every branch starts from one, and every trial ends with the
    final loss of the same trial trained alone."""
    from test_share_prefix_run import wsd_spec

    finals = {}
    for shared in (True, False):
        folder = tmp_path / ("shared" if shared else "alone")
        folder.mkdir()
        experiment = f"cluster-wsd-{folder.name}"
        done = sweeper(setup, "run", wsd_spec(folder, shared=shared, experiment=experiment), "--backend", PROFILE)
        assert done.returncode == 0, done.stdout + done.stderr
        runs = {r.data.tags["sweeper.trial_id"]: r for r in trial_runs(setup, experiment)}
        assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs.values())
        finals[shared] = {i: r.data.metrics["final/val_loss"] for i, r in runs.items()}
        if shared:
            branches = [r for r in runs.values() if "sweeper.trunk" in r.data.tags]
            assert len(branches) == 4, done.stdout
            for run in branches:
                trunk = run.data.tags["sweeper.trunk"]
                assert s3_keys(setup, f"sweeps/{experiment}/{trunk}/branch_points/step_"), trunk
    assert finals[True].keys() == finals[False].keys()
    assert max(abs(finals[True][i] - finals[False][i]) for i in finals[True]) <= 1e-5
