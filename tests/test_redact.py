"""Credentials in a URI never reach a message: the password of user:password@ and the values of
query parameters named like a credential are shown as ***, in errors, notes and run tags alike."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LOCAL_PROFILE, SMOKE_SPEC
from sweeper.console import UserError, redact

SECRET = "pa55-w0rd_that-must-not-show"


@pytest.mark.parametrize("text, shown", [
    ("MLflow at https://alice:s3cret@mlflow.example.org/ is unreachable",
     "MLflow at https://alice:***@mlflow.example.org/ is unreachable"),
    ("postgresql://me:pa:ss@db:5432/mlflow", "postgresql://me:***@db:5432/mlflow"),
    ("http://head:8265/?token=abc&x=1", "http://head:8265/?token=***&x=1"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA%2F2024&X-Amz-Signature=beef&X-Amz-Security-Token=zz&v=2",
     "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Security-Token=***&v=2"),
    ("https://h/?api_key=1&apikey=2&client_secret=3&sig=4&password=5&monkey=6&page=7",
     "https://h/?api_key=***&apikey=***&client_secret=***&sig=***&password=***&monkey=6&page=7"),
    # what carries no credential stays as it is
    ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ("ssh://git@github.com/org/repo", "ssh://git@github.com/org/repo"),
    ("s3://bucket/prefix and storage.path: /home/me/store", "s3://bucket/prefix and storage.path: /home/me/store"),
    ("'a?b=c' time 12:30@noon", "'a?b=c' time 12:30@noon"),
])
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_every_user_error_is_redacted_when_made() -> None:
    error = UserError(f"cannot reach http://u:{SECRET}@host:1")
    assert SECRET not in str(error) and SECRET not in repr(error.args)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_tracking_server_is_named_without_its_password(tmp_path: Path) -> None:
    # The profile takes the password from the environment, as a user would; the message keeps the
    # URI's shape (user, host, port) so the user can tell which server it means.
    port = closed_port()
    uri = "https://alice:${MLFLOW_TRACKING_PASSWORD}@127.0.0.1:" + f"{port}/?token=" + "${MLFLOW_TRACKING_TOKEN}"
    profile = tmp_path / "profile.yaml"
    profile.write_text(LOCAL_PROFILE.read_text()
                       .replace("tracking_uri: sqlite:///mlflow.db", f"tracking_uri: '{uri}'")
                       .replace("path: sweeper-store", f"path: {tmp_path / 'store'}"))
    env = {**os.environ, "MLFLOW_TRACKING_PASSWORD": SECRET, "MLFLOW_TRACKING_TOKEN": SECRET + "-token"}
    env.pop("RAY_ADDRESS", None)

    def sweeper(*args: object) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sweeper.cli", *map(str, args)], capture_output=True,
                              text=True, env=env, timeout=120, cwd=tmp_path)

    run = sweeper("run", SMOKE_SPEC, "--backend", profile)
    assert run.returncode == 2 and SECRET not in run.stdout + run.stderr, run.stdout + run.stderr
    assert run.stderr.startswith(f"error: MLflow at https://alice:***@127.0.0.1:{port}/?token=*** is unreachable (")
    assert "Traceback" not in run.stderr and run.stderr.count("\n") == 1
    plan = sweeper("plan", SMOKE_SPEC, "--backend", profile)
    assert plan.returncode == 0 and SECRET not in plan.stdout + plan.stderr
    assert f"https://alice:***@127.0.0.1:{port}/?token=***" in plan.stdout
