"""Shared by the infra tests: the deployable files (YAML documents, the cluster profile they must fit,
a scan for literal secrets), and real services for the MLflow server test: a throwaway PostgreSQL
cluster and a SeaweedFS S3 server, on free loopback ports, in temporary folders, stopped by PID."""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from servers import SeaweedS3, free_port, seaweed_s3, stop

REPO = Path(__file__).resolve().parents[2]


def load_yaml(relative: str) -> list[dict]:
    """Every document of a YAML file under the repository root."""
    import yaml

    with open(REPO / relative) as file:
        return [doc for doc in yaml.safe_load_all(file) if doc is not None]


def profile_hardware() -> dict:
    """The hardware backends/cluster.yaml plans for: the deployments must provide at least that."""
    (profile,) = load_yaml("backends/cluster.yaml")
    return profile["hardware"]


def profile_variables() -> set[str]:
    """The environment variables backends/cluster.yaml reads (`${NAME}` and `${NAME:-default}`)."""
    return set(re.findall(r"\$\{(\w+)", json.dumps(load_yaml("backends/cluster.yaml"))))


_SECRET_PATTERNS = (
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),                       # an AWS access key id
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"://[^/\s:@]+:(?!PASSWORD@|\$)[^/\s@]+@"),              # a password inside a URI
    # a secret-looking key given a literal value (not a path, a reference or a placeholder)
    re.compile(r"(?im)^[ \t]*(?:-[ \t]*)?(?:export[ \t]+)?[\w.-]*(?:password|secret|token|access_key)[\w.-]*"
               r"[ \t]*[:=][ \t]*['\"]?(?![$~/{<])[^\s'\"#,}]{4,}"),
)


def find_literal_secrets(text: str) -> list[str]:
    """Strings in a deployable file that look like credentials written into it."""
    return [match.group(0) for pattern in _SECRET_PATTERNS for match in pattern.finditer(text)]


# --- PostgreSQL ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Postgres:
    port: int
    user: str
    password: str

    def uri(self, database: str) -> str:
        # Percent-encode the password the way operators must: it holds '%', '@', '/' and ':'.
        return f"postgresql://{self.user}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                               dbname=database, connect_timeout=5)


def _pg_bin() -> Path:
    """PostgreSQL's server programs: $PG_BIN, `initdb` on PATH, or Debian's /usr/lib/postgresql/N/bin."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    if found := shutil.which("initdb"):
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not versions:
        pytest.fail("PostgreSQL's server programs are missing: apt-get install postgresql (or set PG_BIN)")
    return versions[-1].parent


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A private cluster with password (SCRAM) authentication, a role `mlflow` and two databases."""
    import psycopg
    from psycopg import sql

    bin_dir = _pg_bin()
    # initdb refuses to run as root: as root, the cluster belongs to the `postgres` system user, in a
    # folder of its own (pytest's temporary folders are private to root).
    owner = "postgres" if os.geteuid() == 0 else None
    if owner:
        try:
            account = pwd.getpwnam(owner)
        except KeyError:
            pytest.fail("as root, PostgreSQL must run as the `postgres` user, which does not exist")
    root = Path(tempfile.mkdtemp(prefix="sweeper-pg-"))
    # extra_groups=[]: drop root's supplementary groups along with its user id.
    run_as = {"user": owner, "group": account.pw_gid, "extra_groups": []} if owner else {}
    process, log = None, open(root / "postgres.log", "wb")
    try:
        superuser_password = secrets.token_hex(16)
        (root / "pwfile").write_text(superuser_password + "\n")
        if owner:
            for path in (root, root / "pwfile"):
                os.chown(path, account.pw_uid, account.pw_gid)
        initdb = subprocess.run([str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", "postgres",
                                 "--auth=scram-sha-256", f"--pwfile={root / 'pwfile'}", "--encoding=UTF8",
                                 "--no-locale"], capture_output=True, text=True, cwd=root, **run_as)
        assert initdb.returncode == 0, f"initdb failed:\n{initdb.stderr[-3000:]}"
        port = free_port()
        # Loopback TCP only; the socket folder is ours, not /var/run/postgresql; fsync off: throwaway data.
        process = subprocess.Popen([str(bin_dir / "postgres"), "-D", str(root / "data"), "-p", str(port),
                                    "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root}",
                                    "-c", "fsync=off"],
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root, **run_as)
        deadline = time.monotonic() + 60
        while True:
            try:
                admin = psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=superuser_password,
                                        dbname="postgres", connect_timeout=2, autocommit=True)
                break
            except psycopg.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start:\n{(root / 'postgres.log').read_text()[-3000:]}")
                time.sleep(0.3)
        server = Postgres(port=port, user="mlflow", password=f"{secrets.token_hex(8)}%@/:")
        with admin:
            admin.execute(sql.SQL("CREATE ROLE mlflow LOGIN PASSWORD {}").format(sql.Literal(server.password)))
            for database in ("mlflow", "mlflow_auth"):
                admin.execute(sql.SQL("CREATE DATABASE {} OWNER mlflow").format(sql.Identifier(database)))
        yield server
    finally:
        # SIGINT is PostgreSQL's fast shutdown: it ends open sessions instead of waiting for them.
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stop(process)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


# --- S3 (SeaweedFS) -----------------------------------------------------------------------------

S3 = SeaweedS3


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    with seaweed_s3(tmp_path_factory.mktemp("seaweedfs"), bucket="mlflow-artifacts", access_key="mlflow-server") as server:
        yield server
