"""`sweeper ui`: the MLflow UI on the profile's tracking store, opened on the sweep's runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sweeper.console import UserError, console


def experiment_url(base: str, experiment_id: str) -> str:
    """The experiment's run table (MLflow 3 would otherwise open its GenAI traces view)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"


def serve_ui(tracking_uri: str, *, port: int, experiment: str | None) -> int:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [e for e in client.search_experiments() if e.name != "Default"]
    chosen = next((e for e in experiments if e.name == experiment), None) if experiment else \
        (experiments[0] if experiments else None)
    if experiment and chosen is None:
        raise UserError(f"no experiment {experiment!r} in {tracking_uri}")
    if tracking_uri.startswith(("http://", "https://")):
        console.print(experiment_url(tracking_uri, chosen.experiment_id) if chosen else tracking_uri)
        return 0
    mlflow = Path(sys.executable).parent / "mlflow"
    command = [str(mlflow), "server", "--backend-store-uri", tracking_uri, "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the server with us, as Ctrl-C does
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(base + "/health", process)
        console.print(f"MLflow UI: {experiment_url(base, chosen.experiment_id) if chosen else base}")
        console.print("Ctrl-C stops it.")
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait(url: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            detail = process.stderr.read().decode(errors="replace").strip().splitlines() if process.stderr else []
            raise UserError(f"the MLflow UI did not start: {detail[-1] if detail else 'exited'}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise UserError(f"the MLflow UI did not answer on {url} within {timeout_s:.0f} s")
