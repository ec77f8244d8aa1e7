"""infra/mlflow/serve.sh: the team's MLflow server on PostgreSQL and S3 with basic auth, brought up for
real (throwaway PostgreSQL, SeaweedFS) and checked the way a team uses it."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import stat
import subprocess
import sys
import textwrap
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from servers import free_port, stop, wait_http

from .conftest import REPO, S3, Postgres

SERVE = REPO / "infra" / "mlflow" / "serve.sh"
BIN = Path(sys.executable).parent
REQUIRED = ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION", "MLFLOW_ALLOWED_HOSTS",
            "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_DATABASE_URI")


def base_env(home: Path) -> dict[str, str]:
    """A clean environment: nothing MLflow or AWS from the caller's shell leaks into the server."""
    return {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(home),
            "LANG": "C.UTF-8", "MLFLOW_DISABLE_TELEMETRY": "true"}


# --- the script's contract, without servers -----------------------------------------------------

def settings(tmp_path: Path) -> dict[str, str]:
    return base_env(tmp_path) | {
        "MLFLOW_BACKEND_STORE_URI": "postgresql://mlflow:secret@db:5432/mlflow",
        "MLFLOW_AUTH_DATABASE_URI": "postgresql://mlflow:p%40ss%25word@db:5432/mlflow_auth",
        "MLFLOW_ARTIFACTS_DESTINATION": "s3://bucket/mlartifacts",
        "MLFLOW_ALLOWED_HOSTS": "mlflow.example.org",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 32,
        "MLFLOW_RUNTIME_DIR": str(tmp_path / "run"),
    }


@pytest.mark.parametrize("name", REQUIRED)
def test_refuses_to_start_without_a_required_setting(tmp_path: Path, name: str) -> None:
    env = settings(tmp_path)
    del env[name]
    result = subprocess.run(["bash", str(SERVE)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert name in result.stderr


def test_auth_config_is_private_and_store_uris_stay_off_the_command_line(tmp_path: Path) -> None:
    # A stand-in for `mlflow` that reports what the real server would read.
    probe = tmp_path / "mlflow"
    probe.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import importlib.util, json, os, sys
        # MLflow's own config reader, loaded alone: importing mlflow.server.auth starts the whole app.
        folder = importlib.util.find_spec("mlflow").submodule_search_locations[0]
        spec = importlib.util.spec_from_file_location("auth_config", f"{{folder}}/server/auth/config.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.read_auth_config()
        print(json.dumps({{"argv": sys.argv[1:], "database_uri": config.database_uri,
                          "admin": config.admin_username, "cache_s": config.auth_cache_ttl_seconds, "config": os.environ["MLFLOW_AUTH_CONFIG_PATH"],
                          "backend": os.environ["MLFLOW_BACKEND_STORE_URI"]}}))
        """))
    probe.chmod(0o755)
    env = settings(tmp_path) | {"MLFLOW_BIN": str(probe)}
    result = subprocess.run(["bash", str(SERVE)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    # configparser would expand a bare '%': the percent-encoded password must survive intact.
    assert seen["database_uri"] == env["MLFLOW_AUTH_DATABASE_URI"]
    assert seen["admin"] == "admin"
    assert seen["cache_s"] == 60
    assert seen["backend"] == env["MLFLOW_BACKEND_STORE_URI"]
    assert not any("postgresql://" in arg or "s3://" in arg for arg in seen["argv"])
    assert seen["argv"][:2] == ["server", "--app-name"] and "basic-auth" in seen["argv"]
    assert seen["argv"][seen["argv"].index("--allowed-hosts") + 1] == "mlflow.example.org"
    config = Path(seen["config"])
    assert config.parent == tmp_path / "run"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700


# --- the real server ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Server:
    url: str
    port: int
    admin_password: str


@pytest.fixture(scope="module")
def server(postgres: Postgres, s3: S3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    admin_password = secrets.token_urlsafe(18)
    env = base_env(folder) | {
        "MLFLOW_BACKEND_STORE_URI": postgres.uri("mlflow"),
        "MLFLOW_AUTH_DATABASE_URI": postgres.uri("mlflow_auth"),
        "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{s3.bucket}/mlartifacts",
        "MLFLOW_S3_ENDPOINT_URL": s3.endpoint,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_ALLOWED_HOSTS": f"127.0.0.1:{port},localhost:{port}",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
        "MLFLOW_RUNTIME_DIR": str(folder / "run"),
    }
    log = folder / "mlflow-server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(["bash", str(SERVE)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=folder)
    try:
        url = f"http://127.0.0.1:{port}"
        # The first start migrates both empty databases, which takes a while on a busy machine.
        wait_http(url + "/health", process, 300, log)
        yield Server(url=url, port=port, admin_password=admin_password)
    finally:
        stop(process)


SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def get(server: Server, path: str, *, user: tuple[str, str] | None = None,
        host: str | None = None) -> tuple[int, dict[str, str]]:
    """GET with an explicit Host header (urllib would always send the one it connects to)."""
    headers = {"Host": host or f"127.0.0.1:{server.port}"}
    if user:
        headers["Authorization"] = "Basic " + b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


@pytest.mark.slow
def test_refuses_anonymous_and_wrong_passwords(server: Server) -> None:
    status, headers = get(server, SEARCH)
    assert status == 401
    assert headers.get("www-authenticate", "").startswith("Basic")
    assert get(server, SEARCH, user=("admin", "not-the-password"))[0] == 401
    assert get(server, SEARCH, user=("admin", server.admin_password))[0] == 200


@pytest.mark.slow
def test_rejects_unknown_host_headers(server: Server) -> None:
    # DNS rebinding protection: valid credentials do not help a request addressed to another name.
    admin = ("admin", server.admin_password)
    assert get(server, SEARCH, user=admin, host="evil.example.org")[0] == 403
    assert get(server, SEARCH, user=admin, host=f"localhost:{server.port}")[0] == 200


@pytest.mark.slow
def test_a_team_member_logs_a_run_whose_artifact_lands_in_s3(
        server: Server, postgres: Postgres, s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    # The admin creates an account for the sweeps, the way infra/README.md shows.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.admin_password)
    password = secrets.token_urlsafe(18)
    get_app_client("basic-auth", tracking_uri=server.url).create_user(username="sweeper", password=password)

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "sweeper")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    client = MlflowClient(tracking_uri=server.url)
    experiment_id = client.create_experiment("infra-check")
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    for step, loss in enumerate([2.5, 1.75]):
        client.log_metric(run_id, "val_loss", loss, step=step)
    curve = tmp_path / "curve.txt"
    curve.write_text("step,val_loss\n0,2.5\n1,1.75\n")
    client.log_artifact(run_id, str(curve))
    client.set_terminated(run_id)

    assert [m.value for m in client.get_metric_history(run_id, "val_loss")] == [2.5, 1.75]
    assert [a.path for a in client.list_artifacts(run_id)] == ["curve.txt"]

    # The artifact went through the server into the bucket; the client never saw S3 credentials.
    bucket = s3.client()
    keys = [o["Key"] for o in bucket.list_objects_v2(Bucket=s3.bucket, Prefix="mlartifacts/").get("Contents", [])]
    key = next(k for k in keys if k.endswith(f"{run_id}/artifacts/curve.txt"))
    assert bucket.get_object(Bucket=s3.bucket, Key=key)["Body"].read() == curve.read_bytes()

    # Runs live in the tracking database and accounts in the auth database, both in PostgreSQL.
    with postgres.connect("mlflow") as db:
        assert db.execute("SELECT status FROM runs WHERE run_uuid = %s", (run_id,)).fetchall() == [("FINISHED",)]
    with postgres.connect("mlflow_auth") as db:
        users = db.execute("SELECT username, is_admin FROM users ORDER BY username").fetchall()
        assert users == [("admin", True), ("sweeper", False)]
