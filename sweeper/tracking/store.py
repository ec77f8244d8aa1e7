"""Opening an MLflow tracking store: whether it can be used at all (preflight), creating a sqlite
store one process at a time, a store of another MLflow version's schema in one sentence, and where
a sqlite store's artifacts go. MLflow is imported only where a store is opened."""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sweeper.console import UserError


def check_reachable(tracking_uri: str, *, timeout_s: float = 5.0) -> None:
    """Fail fast with one sentence when the tracking store cannot be used (preflight)."""
    if tracking_uri.startswith(("http://", "https://")):
        url = tracking_uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (user's own server)
                if response.status != 200:
                    raise UserError(f"MLflow at {tracking_uri} answered {response.status} on /health")
        except urllib.error.HTTPError as error:
            raise UserError(f"MLflow at {tracking_uri} answered {error.code} on /health") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise UserError(f"MLflow at {tracking_uri} is unreachable ({reason})") from None
    elif tracking_uri.startswith("sqlite:///"):
        folder = Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent
        if not folder.is_dir():
            raise UserError(f"MLflow store {tracking_uri}: folder {folder} does not exist")
    elif tracking_uri.startswith(("file:", "/", ".")) or "://" not in tracking_uri:
        raise UserError(f"MLflow tracking URI {tracking_uri!r}: use sqlite:///FILE.db or an http(s) server "
                        "(MLflow 3 no longer accepts a ./mlruns file store)")


@contextmanager
def creating(tracking_uri: str) -> Iterator[None]:
    """Around opening a sqlite store: only one process at a time, so that two commands started
    together on a fresh folder do not both create its tables and run its migrations (which fails
    one of them inside alembic). An flock on the store's folder: nothing is left behind, and the
    kernel lets go when a holder dies. A server serialises its own creation."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    folder = Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def artifact_location(tracking_uri: str) -> str | None:
    """Beside a sqlite store, not in ./mlruns of whatever folder the command ran in; a server decides
    for itself."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return None


@contextmanager
def schema_errors(tracking_uri: str) -> Iterator[None]:
    """Around opening a database store (sqlite, postgresql, ...): MLflow refuses one whose schema
    revision is not its own newest, with a traceback; this says in one sentence which way the two
    differ and what to do. A store older than the installed MLflow (an upgraded environment)
    needs `mlflow db upgrade`, which changes it in place, so sweeper leaves that to the user; one
    written by a newer MLflow needs that MLflow.

    Raises:
        UserError: the store's schema is another MLflow version's.
    """
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        found = re.search(r"found version (\w+), but expected (\w+)", str(error))
        if found is None:
            raise
        import mlflow

        store, version = f"MLflow store {tracking_uri}", f"the installed MLflow {mlflow.__version__}"
        if _known_revision(found[1]):
            raise UserError(f"{store} has an older schema (revision {found[1]}) than {version} reads ({found[2]}): "
                            f"back it up, then run `mlflow db upgrade {tracking_uri}`") from None
        raise UserError(f"{store} was written by a newer MLflow than {version} (its schema revision {found[1]} is "
                        "unknown to it): install that MLflow, e.g. `pip install -U mlflow`") from None


def _known_revision(revision: str) -> bool:
    """Whether the installed MLflow's migrations know this schema revision (an older store's)."""
    try:
        from alembic.script import ScriptDirectory
        from mlflow.store.db.utils import _get_alembic_config

        return ScriptDirectory.from_config(_get_alembic_config(db_url="")).get_revision(revision) is not None
    except Exception:  # noqa: BLE001  (an unknown revision, or MLflow's layout changed: not known)
        return False
