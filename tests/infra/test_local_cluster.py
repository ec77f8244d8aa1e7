"""infra/local/cluster.py: a Ray head and a Ray worker node, MLflow and S3 brought up for real on
this machine, then checked the way `sweeper run --cluster` and the tests of a lost node use them."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "local" / "cluster.py"
sys.path.insert(0, str(SCRIPT.parent))
import cluster as local  # noqa: E402  (infra/local is no package: a script and its helpers)
from sessions import is_alive, processes_mentioning, session_members  # noqa: E402

ENV_KEYS = {"RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "MLFLOW_TRACKING_URI", "SWEEPER_STORAGE",
            "SWEEPER_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
            "MLFLOW_S3_ENDPOINT_URL"}

pytestmark = pytest.mark.slow


def cli(*args: str, timeout_s: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout_s)


def timed(label: str, started: float) -> None:
    print(f"[local cluster] {label}: {time.monotonic() - started:.1f} s")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    folder = tmp_path_factory.mktemp("local-cluster")
    started = time.monotonic()
    up = cli("up", "--dir", str(folder))
    assert up.returncode == 0, up.stdout + up.stderr
    timed(f"up ({up.stdout.splitlines()[-1]})", started)
    setup = local.LocalCluster.from_dir(folder)
    yield setup
    setup.stop()  # a safety net: the last test checks `down` itself


def in_env_sh(folder: Path, code: str, timeout_s: float = 120) -> str:
    """Run python `code` in a shell that sourced env.sh and holds no Ray settings of its own."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RAY_", "AWS_", "MLFLOW_"))}
    command = f"source {shlex.quote(str(folder / 'env.sh'))} && exec {shlex.quote(sys.executable)} -c {shlex.quote(code)}"
    done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_up_gives_two_alive_nodes_and_a_private_env_sh(cluster) -> None:
    assert len(cluster.alive_nodes()) == 2
    env_sh = cluster.dir / "env.sh"
    assert stat.S_IMODE(env_sh.stat().st_mode) == 0o600
    exported = dict(line.removeprefix("export ").split("=", 1) for line in env_sh.read_text().splitlines()
                    if line.startswith("export "))
    assert set(exported) == ENV_KEYS
    assert exported["RAY_ADDRESS"] == cluster.ray_address
    assert exported["SWEEPER_STORAGE"] == "s3://sweeper/sweeps"
    pids = json.loads((cluster.dir / "pids.json").read_text())
    assert set(pids["services"]) == {"weed", "mlflow", "ray-head", "ray-worker"}
    assert all(service["pgid"] == service["pid"] for service in pids["services"].values())


JOB = """
import json, sys, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init()
@ray.remote(num_cpus=1)
def where():
    import sweeper  # the project imports on every node
    return ray.get_runtime_context().get_node_id()
nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
pinned = [where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)) for n in nodes]
print("RESULT " + json.dumps({"ran_on": sorted(ray.get([task.remote() for task in pinned])),
                              "python": sys.executable}))
"""

SUBMIT = f"""
import json, shlex, time
from ray.job_submission import JobStatus, JobSubmissionClient
client = JobSubmissionClient()  # RAY_ADDRESS, RAY_AUTH_MODE and RAY_AUTH_TOKEN from env.sh
client.list_jobs()
job = client.submit_job(entrypoint="python -c " + shlex.quote({JOB!r}))
deadline = time.monotonic() + 90
while (status := client.get_job_status(job)) not in {{JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}}:
    assert time.monotonic() < deadline, "the job did not finish in 90 s"
    time.sleep(0.3)
logs = client.get_job_logs(job)
print(status.value)
print(next((line for line in logs.splitlines() if line.startswith("RESULT ")), logs[-3000:]))
"""


def test_a_job_submitted_with_env_sh_runs_tasks_on_both_nodes(cluster) -> None:
    started = time.monotonic()
    status, result = in_env_sh(cluster.dir, SUBMIT).splitlines()[-2:]
    timed("job with a task pinned to each node", started)
    assert status == "SUCCEEDED", result
    outcome = json.loads(result.removeprefix("RESULT "))
    assert outcome["ran_on"] == sorted(node["node_id"] for node in cluster.alive_nodes())
    assert outcome["python"].startswith(sys.prefix)


def test_a_wrong_or_missing_ray_token_is_refused(cluster) -> None:
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    with pytest.raises(AuthenticationError, match="Forbidden: Invalid authentication token"):
        JobSubmissionClient(cluster.ray_address, headers={"Authorization": "Bearer not-the-token"}).list_jobs()
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(cluster.ray_address + "/api/jobs/", timeout=5)
    assert missing.value.code == 401
    token = {"Authorization": f"Bearer {cluster.secrets.ray_token}"}
    assert JobSubmissionClient(cluster.ray_address, headers=token).list_jobs() is not None


def test_mlflow_answers_and_stores_artifacts_in_the_bucket(cluster, tmp_path: Path) -> None:
    import mlflow
    from botocore.exceptions import ClientError

    assert urllib.request.urlopen(cluster.mlflow_uri + "/health", timeout=5).read() == b"OK"
    s3 = cluster.s3_client()
    s3.put_object(Bucket="sweeper", Key="sweeps/probe.txt", Body=b"probe")
    assert s3.get_object(Bucket="sweeper", Key="sweeps/probe.txt")["Body"].read() == b"probe"

    # Artifacts go through the server, which alone holds the bucket's credentials.
    client = mlflow.MlflowClient(tracking_uri=cluster.mlflow_uri)
    run = client.create_run(client.create_experiment("local-cluster-check"))
    (tmp_path / "curve.txt").write_text("loss 1.0")
    client.log_artifact(run.info.run_id, str(tmp_path / "curve.txt"))
    keys = [obj["Key"] for obj in s3.list_objects_v2(Bucket="sweeper", Prefix="mlartifacts/")["Contents"]]
    assert any(key.endswith(f"{run.info.run_id}/artifacts/curve.txt") for key in keys)

    import boto3

    intruder = boto3.client("s3", endpoint_url=cluster.s3_endpoint, region_name="us-east-1",
                            aws_access_key_id=cluster.secrets.access_key, aws_secret_access_key="wrong")
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        intruder.list_objects_v2(Bucket="sweeper")


HOLD_A_WORKER = """
import ray, time
ray.init()
worker = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" not in n["Resources"])
@ray.remote(num_cpus=1, max_retries=0)
def hold():
    time.sleep(600)
ray.get(hold.options(scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(worker, soft=False)).remote())
"""


def _ray_workers(pids: list[int]) -> list[int]:
    """The Ray worker processes (tasks, actors, idle) among `pids`, not the node's agents."""
    found = []
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        if name.startswith("ray::") and name not in ("ray::DashboardAgent", "ray::RuntimeEnvAgent"):
            found.append(pid)
    return found


def test_a_killed_worker_node_is_lost_then_down_leaves_nothing(cluster) -> None:
    from ray.job_submission import JobSubmissionClient

    token = {"Authorization": f"Bearer {cluster.secrets.ray_token}"}
    JobSubmissionClient(cluster.ray_address, headers=token).submit_job(entrypoint=f"python -c {shlex.quote(HOLD_A_WORKER)}")
    worker_sid = cluster.services["ray-worker"].sid
    started = time.monotonic()
    while not (held := _ray_workers(session_members(worker_sid))):
        assert time.monotonic() - started < 60, "no Ray worker process started on the worker node"
        time.sleep(0.3)
    timed("a task running on the worker node", started)
    worker_pids = session_members(worker_sid)

    started = time.monotonic()
    killed = cli("kill-node", "worker", "--dir", str(cluster.dir))
    assert killed.returncode == 0, killed.stdout + killed.stderr
    assert not [pid for pid in worker_pids if is_alive(pid)], "the raylet or its workers survived"
    assert set(held) <= set(worker_pids)
    while len(cluster.alive_nodes()) != 1:
        assert time.monotonic() - started < 30, "the head still counts 2 alive nodes after 30 s"
        time.sleep(0.3)
    timed("kill-node worker until the head counts 1 alive node", started)
    assert session_members(cluster.services["ray-head"].sid), "killing the worker hurt the head"

    every_pid = [pid for pids in cluster.processes().values() for pid in pids]
    started = time.monotonic()
    down = cli("down", "--dir", str(cluster.dir))
    assert down.returncode == 0, down.stdout + down.stderr
    timed("down", started)
    assert not [pid for pid in every_pid if is_alive(pid)]
    assert not any(cluster.processes().values())
    assert not processes_mentioning(str(cluster.dir))
    assert not processes_mentioning(cluster.temp_root)
    assert not Path(cluster.temp_root).exists()
    assert cli("status", "--dir", str(cluster.dir)).returncode == 1
