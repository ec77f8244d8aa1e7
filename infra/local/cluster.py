#!/usr/bin/env python
"""A real multi-node setup on one machine, for tests and demos of `sweeper run SPEC --cluster`.

    .venv/bin/python infra/local/cluster.py up --dir DIR      # then: source DIR/env.sh
    .venv/bin/python infra/local/cluster.py status --dir DIR
    .venv/bin/python infra/local/cluster.py kill-node worker --dir DIR
    .venv/bin/python infra/local/cluster.py down --dir DIR

It starts a Ray head and one Ray worker node (1 CPU each, token auth on, Jobs API on the head's
dashboard), an MLflow server (sqlite in DIR, artifacts proxied to S3) and SeaweedFS (`weed mini`)
as the S3 server, all on free ports. Each service runs in a session of its own (setsid) and is
stopped through it alone: never `ray stop`, which stops every Ray on the host. DIR gets env.sh
(addresses and secrets, mode 0600), pids.json (sessions, ports, folders) and each service's log.
Tests import it with infra/local on sys.path: `LocalCluster(DIR)` is also a context manager.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from sessions import (free_port_pair, free_ports, port_open, processes_mentioning, session_members,
                      signal_session, wait_gone)

VENV_BIN = Path(sys.prefix) / "bin"
BUCKET = "sweeper"
REGION = "us-east-1"
OBJECT_STORE_BYTES = 256 * 2**20
WORKER_PORTS_PER_NODE = 50  # one per Ray worker process
# The GCS declares a silent node dead after ~5 s instead of the default ~15 s; still five missed
# checks in a row, so a busy shared machine does not lose a node by accident.
RAY_HEALTH_CHECK = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5"}
HEAD_PORTS = ("gcs", "dashboard", "client_server")
NODE_PORTS = ("node_manager", "object_manager", "dashboard_agent_listen", "dashboard_agent_grpc",
              "runtime_env_agent", "metrics_export", *(f"worker_{i}" for i in range(WORKER_PORTS_PER_NODE)))
WEED_PORTS = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc")
# weed's embedded admin worker dials the admin server at its HTTP port + 10000, whatever
# -admin.port.grpc says; any other gRPC port leaves it retrying (and logging) forever.
WEED_ADMIN_GRPC_OFFSET = 10000


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    """One started service: the PID we started leads its session and process group (setsid)."""

    name: str
    pid: int
    pgid: int
    sid: int
    ports: dict[str, int]
    log: str
    temp_dir: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Secrets:
    ray_token: str = field(default_factory=lambda: secrets.token_hex(32))
    access_key: str = field(default_factory=lambda: "SWL" + secrets.token_hex(8).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))


class LocalCluster:
    """Start, inspect and stop the setup whose files live in `folder`."""

    def __init__(self, folder: Path | str, *, timeout_s: float = 180) -> None:
        self.dir = Path(folder).resolve()
        self.timeout_s = timeout_s
        self.secrets = Secrets()
        self.services: dict[str, Service] = {}
        self.temp_root: str | None = None
        self.timings: dict[str, float] = {}  # seconds from the start of `up` until each answered
        self._started = 0.0
        self._children: list[subprocess.Popen] = []  # reaped, so that killed ones leave no zombie

    @property
    def ray_address(self) -> str:
        return f"http://127.0.0.1:{self.services['ray-head'].ports['dashboard']}"

    @property
    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.services['mlflow'].ports['http']}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.services['weed'].ports['s3']}"

    def env(self) -> dict[str, str]:
        """What a client needs: the contents of DIR/env.sh."""
        return {
            "RAY_ADDRESS": self.ray_address,
            # Ray's clients send RAY_AUTH_TOKEN only in token mode, and do not infer the mode from it.
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.secrets.ray_token,
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "SWEEPER_STORAGE": f"s3://{BUCKET}/sweeps",
            "SWEEPER_S3_ENDPOINT": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.secrets.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secrets.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
        }

    # ---- up ------------------------------------------------------------------------------------
    def start(self) -> LocalCluster:
        self.dir.mkdir(parents=True, exist_ok=True)
        if (self.dir / "pids.json").exists() and LocalCluster.from_dir(self.dir).running():
            raise RuntimeError(f"a setup is already running from {self.dir}: run `down` first")
        # Ray's unix sockets live under --temp-dir and must stay under ~107 characters, which a
        # pytest tmp_path does not: the node folders go under a short /tmp/swl-* instead.
        self.temp_root = tempfile.mkdtemp(prefix="swl-", dir="/tmp")
        self._started = time.monotonic()
        deadline = self._started + self.timeout_s
        try:
            ports = iter(free_ports(len(HEAD_PORTS) + 2 * len(NODE_PORTS) + len(WEED_PORTS) + 1))
            self._start_weed(ports)
            self._start_mlflow(ports)
            self._start_ray("ray-head", ports)
            self._wait(deadline, "ray-head", "the GCS port", lambda: port_open(self.services["ray-head"].ports["gcs"]))
            self._start_ray("ray-worker", ports)
            self._wait(deadline, "ray-head", "the Jobs API", lambda: self._http(self.ray_address + "/api/jobs/") == 200)
            self._wait(deadline, "weed", "S3 and the bucket", self._make_bucket)
            self._wait(deadline, "mlflow", "/health", lambda: self._http(self.mlflow_uri + "/health") == 200)
            self._wait(deadline, "ray-worker", "2 alive nodes", lambda: len(self.alive_nodes()) == 2)
            write_private(self.dir / "env.sh", "# source me: the local setup of infra/local/cluster.py\n"
                          + "".join(f"export {key}={shlex.quote(value)}\n" for key, value in self.env().items()))
        except BaseException:
            self.stop()
            raise
        return self

    def _start_weed(self, ports: Iterator[int]) -> None:
        named = {name: next(ports) for name in WEED_PORTS}
        named["admin"] = free_port_pair(WEED_ADMIN_GRPC_OFFSET, exclude=set(named.values()))
        named["admin.grpc"] = named["admin"] + WEED_ADMIN_GRPC_OFFSET
        data = self.dir / "weed"
        data.mkdir(exist_ok=True)
        identity = {"name": "sweeper", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    "credentials": [{"accessKey": self.secrets.access_key, "secretKey": self.secrets.secret_key}]}
        write_private(self.dir / "weed-s3.json", json.dumps({"identities": [identity]}))
        flags = [f"-{name.replace('.grpc', '')}.port{'.grpc' if name.endswith('.grpc') else ''}={port}"
                 for name, port in named.items()]
        command = [str(VENV_BIN / "weed"), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", *flags,
                   f"-s3.config={self.dir / 'weed-s3.json'}", "-admin.ui=false", "-webdav=false",
                   "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
                   f"-filer.localSocket={data}/filer.sock", f"-s3.localSocket={data}/s3.sock"]
        self._spawn("weed", command, self._base_env(), named)

    def _start_mlflow(self, ports: Iterator[int]) -> None:
        port = next(ports)
        command = [str(VENV_BIN / "mlflow"), "server", "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
                   "--backend-store-uri", f"sqlite:///{self.dir / 'mlflow.db'}",
                   "--artifacts-destination", f"s3://{BUCKET}/mlartifacts",
                   "--allowed-hosts", f"127.0.0.1:{port},localhost:{port}"]
        # No server-side jobs (GenAI scorers): they add seven processes, and a folder in /dev/shm
        # that a killed server leaves behind.
        env = self._base_env() | {"MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
                                  "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self._spawn("mlflow", command, env, {"http": port})

    def _start_ray(self, name: Literal["ray-head", "ray-worker"], ports: Iterator[int]) -> None:
        head = name == "ray-head"
        named = {port: next(ports) for port in (HEAD_PORTS if head else ()) + NODE_PORTS}
        named = {key: port for key, port in named.items() if not key.startswith("worker_")} | {
            "min_worker": named["worker_0"], "max_worker": named[f"worker_{WORKER_PORTS_PER_NODE - 1}"]}
        temp_dir = os.path.join(self.temp_root, name.removeprefix("ray-"))
        command = [str(VENV_BIN / "ray"), "start", "--block", "--disable-usage-stats", "--temp-dir", temp_dir,
                   "--num-cpus", "1", "--num-gpus", "0", "--object-store-memory", str(OBJECT_STORE_BYTES),
                   *(f"--{key.replace('_', '-')}-port={port}" for key, port in named.items() if key not in HEAD_PORTS)]
        if head:
            command += ["--head", f"--port={named['gcs']}", "--dashboard-host=127.0.0.1",
                        f"--dashboard-port={named['dashboard']}", f"--ray-client-server-port={named['client_server']}"]
        else:
            command += [f"--address=127.0.0.1:{self.services['ray-head'].ports['gcs']}"]
        # Token auth, explicitly: left unset, `ray start` turns it on only when it finds a token,
        # e.g. someone's ~/.ray/auth_token. The token goes in the environment, not on the command line.
        env = self._base_env() | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.secrets.ray_token,
                                  "RAY_USAGE_STATS_ENABLED": "0"} | (RAY_HEALTH_CHECK if head else {})
        self._spawn(name, command, env, named, temp_dir=temp_dir)

    def _base_env(self) -> dict[str, str]:
        """The caller's environment without its Ray, MLflow, sweeper or AWS settings, plus ours.

        Every service gets the bucket's credentials, the way cluster machines get an instance role,
        and the venv first on PATH, so Ray jobs run `python` with the project installed.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "SWEEPER_", "AWS_"))}
        # Unbuffered, so that a log holds everything up to a SIGKILL.
        return env | {"PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", "VIRTUAL_ENV": sys.prefix,
                      "PYTHONUNBUFFERED": "1",
                      "AWS_ACCESS_KEY_ID": self.secrets.access_key, "AWS_SECRET_ACCESS_KEY": self.secrets.secret_key,
                      "AWS_DEFAULT_REGION": REGION}

    def _spawn(self, name: str, command: list[str], env: dict[str, str], ports: dict[str, int],
               temp_dir: str | None = None) -> None:
        log = self.dir / f"{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(command, env=env, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self._children.append(process)
        self.services[name] = Service(name=name, pid=process.pid, pgid=process.pid, sid=process.pid, ports=ports,
                                      log=str(log), temp_dir=temp_dir)
        # At once, so that `down` can clean up after an `up` that died half-way.
        state = {"temp_root": self.temp_root, "services": {key: asdict(s) for key, s in self.services.items()}}
        (self.dir / "pids.json").write_text(json.dumps(state, indent=2) + "\n")

    def _wait(self, deadline: float, name: str, what: str, ready: Callable[[], bool]) -> None:
        service = self.services[name]
        while time.monotonic() < deadline:
            if not session_members(service.sid):
                raise RuntimeError(f"{name} exited while starting; the end of {service.log}:\n{tail(service.log)}")
            try:
                if ready():
                    self.timings[f"{name}: {what}"] = round(time.monotonic() - self._started, 1)
                    return
            except Exception:  # not up yet: connection refused, a 5xx, the filer behind S3 still starting
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{name}: {what} did not answer within {self.timeout_s:.0f} s; "
                           f"the end of {service.log}:\n{tail(service.log)}")

    def _make_bucket(self) -> bool:
        s3 = self.s3_client()
        if BUCKET not in {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}:
            s3.create_bucket(Bucket=BUCKET)
        return True

    # ---- clients -------------------------------------------------------------------------------
    def s3_client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.s3_endpoint, region_name=REGION,
                            aws_access_key_id=self.secrets.access_key, aws_secret_access_key=self.secrets.secret_key,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))

    def _http(self, url: str) -> int:
        """The status of a GET, with the Ray token (which MLflow ignores)."""
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.secrets.ray_token}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    def alive_nodes(self) -> list[dict]:
        """The Ray nodes the GCS counts alive, from the state API."""
        request = urllib.request.Request(self.ray_address + "/api/v0/nodes?limit=100",
                                         headers={"Authorization": f"Bearer {self.secrets.ray_token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            nodes = json.load(response)["data"]["result"]["result"]
        return [node for node in nodes if node["state"] == "ALIVE"]

    @classmethod
    def from_dir(cls, folder: Path | str) -> LocalCluster:
        """The setup that `up` recorded in `folder`, to inspect or stop it from another process."""
        cluster = cls(folder)
        state = json.loads((cluster.dir / "pids.json").read_text())
        cluster.temp_root = state["temp_root"]
        cluster.services = {name: Service(**fields) for name, fields in state["services"].items()}
        if (env_sh := cluster.dir / "env.sh").exists():
            env = dict(shlex.split(line)[1].split("=", 1) for line in env_sh.read_text().splitlines()
                       if line.startswith("export "))
            cluster.secrets = Secrets(ray_token=env["RAY_AUTH_TOKEN"], access_key=env["AWS_ACCESS_KEY_ID"],
                                      secret_key=env["AWS_SECRET_ACCESS_KEY"])
        return cluster

    # ---- status, kill, down --------------------------------------------------------------------
    def processes(self) -> dict[str, list[int]]:
        """The live processes of each service: the members of its session."""
        return {name: session_members(service.sid) for name, service in self.services.items()}

    def running(self) -> bool:
        return any(self.processes().values())

    def status(self) -> dict:
        report: dict = {name: {"pid": service.pid, "processes": len(session_members(service.sid)),
                               "ports": service.ports} for name, service in self.services.items()}
        probes = {"ray alive nodes": lambda: len(self.alive_nodes()),
                  "mlflow /health": lambda: self._http(self.mlflow_uri + "/health"),
                  "s3 bucket": lambda: self.s3_client().head_bucket(Bucket=BUCKET) and BUCKET}
        for key, probe in probes.items():
            try:
                report[key] = probe()
            except Exception as error:  # a stopped service: say so rather than fail
                report[key] = f"unreachable ({type(error).__name__})"
        return report

    def kill_node(self, node: Literal["worker", "head"] = "worker", timeout_s: float = 10) -> list[int]:
        """SIGKILL a Ray node's whole session (raylet, GCS on the head, agents, Ray workers):
        a lost node. Returns the PIDs killed."""
        service = self.services[f"ray-{node}"]
        killed = signal_session(service.sid, signal.SIGKILL)
        self._reap()
        if not wait_gone(service.sid, timeout_s):
            raise RuntimeError(f"{service.name} processes survived SIGKILL: {session_members(service.sid)}")
        return killed

    def kill_worker(self) -> list[int]:
        return self.kill_node("worker")

    def stop(self, timeout_s: float = 20) -> list[int]:
        """SIGTERM each service, SIGKILL what is left of its session after `timeout_s`, then remove
        the node folders under /tmp. Returns the PIDs that were running.

        A Ray node's SIGTERM goes to `ray start` alone, which drains the node, then stops its GCS,
        raylet and agents in order: signalled all at once, the GCS dies under the drain request and
        `ray start` waits out its 30 s drain timeout. With the head gone, a worker node has no GCS to
        drain with and would wait just as long: it gets SIGKILL. MLflow and weed get SIGTERM as a
        process group."""
        order = [name for name in ("ray-worker", "ray-head", "mlflow", "weed") if name in self.services]
        running = [pid for name in order for pid in session_members(self.services[name].sid)]
        head_up = "ray-head" in self.services and self.services["ray-head"].pid in running
        for name in order:
            service = self.services[name]
            try:
                if name == "ray-worker" and not head_up:
                    signal_session(service.sid, signal.SIGKILL)
                elif service.pid not in running:  # the leader is gone, and its PID may be reused
                    signal_session(service.sid, signal.SIGTERM)
                elif name.startswith("ray-"):
                    os.kill(service.pid, signal.SIGTERM)
                else:
                    os.killpg(service.pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout_s
        for name in order:
            self._reap()
            if not wait_gone(self.services[name].sid, max(0.0, deadline - time.monotonic())):
                signal_session(self.services[name].sid, signal.SIGKILL)
                wait_gone(self.services[name].sid, 10)
        if self.temp_root:
            for pid in processes_mentioning(self.temp_root):  # none expected: belt and braces
                os.kill(pid, signal.SIGKILL)
            shutil.rmtree(self.temp_root, ignore_errors=True)
        self._reap()
        return running

    def _reap(self) -> None:
        for process in self._children:
            process.poll()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, never readable by others even for a moment."""
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        file.write(text)


def tail(path: str, chars: int = 3000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("up", "start everything, wait until it answers, write DIR/env.sh"),
                       ("status", "each service's processes and ports, and whether it answers"),
                       ("down", "stop every process of the setup")):
        commands.add_parser(name, help=text).add_argument("--dir", required=True, type=Path)
    kill = commands.add_parser("kill-node", help="SIGKILL a Ray node's processes, to test a lost node")
    kill.add_argument("node", choices=["worker", "head"])
    kill.add_argument("--dir", required=True, type=Path)
    args = parser.parse_args(argv)

    started = time.monotonic()
    if args.command == "up":
        cluster = LocalCluster(args.dir).start()
        for key, value in cluster.env().items():
            print(f"{key}={'(in env.sh)' if 'SECRET' in key or 'TOKEN' in key else value}")
        steps = ", ".join(f"{what} {seconds} s" for what, seconds in cluster.timings.items())
        print(f"up in {time.monotonic() - started:.1f} s ({steps}); now: source {cluster.dir / 'env.sh'}")
        return 0
    if not (args.dir / "pids.json").exists():
        print(f"no setup in {args.dir}: no pids.json", file=sys.stderr)
        return 1
    cluster = LocalCluster.from_dir(args.dir)
    if args.command == "status":
        print(json.dumps(cluster.status(), indent=2))
        return 0 if cluster.running() else 1
    if args.command == "kill-node":
        killed = cluster.kill_node(args.node)
        print(f"killed the {args.node} node's {len(killed)} processes: {killed}")
        return 0
    stopped = cluster.stop()
    print(f"stopped {len(stopped)} processes in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
