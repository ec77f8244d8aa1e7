"""`sweeper ui`: the MLflow UI on the profile's tracking store, opened on the sweep's runs.

Two addresses are printed: the experiment's runs, where each sweep is one row whose trials unfold
under it, and a saved view of every trial side by side, sorted by final validation loss, with the
columns a scaling-law study reads (family, model, unique data, epochs, FLOPs, losses). The saved
view is MLflow's own shared-view mechanism: an experiment tag holding the view's state, opened
with `?viewStateShareKey=`. Filters such as `tags.family = 'mdm' and tags.epochs = '4'` work in
both.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from pathlib import Path
from typing import IO

from sweeper.console import UserError, console, redact


TRIALS_VIEW = "sweeper-trials"  # the saved view's key
TRIALS_VIEW_STATE = {
    "orderByKey": "metrics.`final/val_loss`",
    "orderByAsc": True,
    "selectedColumns": ["metrics.`final/val_loss`", "metrics.`final/val_loss_best`", "tags.`family`",
                        "tags.`model`", "tags.`num_params`", "tags.`unique_tokens`", "tags.`epochs`",
                        "tags.`tokens`", "tags.`flops`"],
}


def experiment_url(base: str, experiment_id: str, view: str | None = None) -> str:
    """The experiment's run table (MLflow 3 would otherwise open its GenAI traces view)."""
    url = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
    return f"{url}?viewStateShareKey={view}" if view else url


def save_trials_view(client: object, experiment_id: str) -> str | None:
    """Store the every-trial view on the experiment; None where the store refuses (read-only access)."""
    try:
        client.set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{TRIALS_VIEW}",  # type: ignore[attr-defined]
                                  json.dumps(TRIALS_VIEW_STATE))
    except Exception:  # noqa: BLE001  (a permission error on a team server must not stop the UI)
        return None
    return TRIALS_VIEW


def print_urls(base: str, experiment_id: str, view: str | None) -> None:
    # soft_wrap: a terminal narrower than the address must not break it into two lines
    console.print(f"MLflow UI, each sweep with its trials nested: {experiment_url(base, experiment_id)}",
                  soft_wrap=True)
    if view:
        console.print(f"every trial, by final validation loss: {experiment_url(base, experiment_id, view)}",
                      soft_wrap=True)


def serve_ui(tracking_uri: str, *, port: int, experiment: str | None) -> int:
    from mlflow.tracking import MlflowClient

    from sweeper.tracking.store import schema_errors

    with schema_errors(tracking_uri):
        client = MlflowClient(tracking_uri=tracking_uri)
        experiments = [e for e in client.search_experiments() if e.name != "Default"]
    chosen = next((e for e in experiments if e.name == experiment), None) if experiment else \
        (experiments[0] if experiments else None)
    if experiment and chosen is None:
        raise UserError(f"no experiment {experiment!r} in {tracking_uri}")
    view = save_trials_view(client, chosen.experiment_id) if chosen else None
    if tracking_uri.startswith(("http://", "https://")):
        if chosen:
            print_urls(redact(tracking_uri), chosen.experiment_id, view)
        else:
            console.print(redact(tracking_uri))
        return 0
    mlflow = Path(sys.executable).parent / "mlflow"
    command = [str(mlflow), "server", "--backend-store-uri", tracking_uri, "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # the UI needs no background job runners
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                               env=env)
    # The server writes a traceback to stderr for each request it fails (some MLflow versions fail a
    # few on every page load): read it all the time, keeping the last lines, or a full pipe would
    # stop the server mid-request after a few pages.
    errors: deque[str] = deque(maxlen=50)
    reader = threading.Thread(target=_drain, args=(process.stderr, errors), daemon=True)
    reader.start()
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the server with us, as Ctrl-C does
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(base + "/health", process, reader, errors)
        if chosen:
            print_urls(base, chosen.experiment_id, view)
        else:
            console.print(f"MLflow UI: {base}")
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


def _drain(stream: IO[bytes], lines: deque[str]) -> None:
    for line in stream:
        if line.strip():
            lines.append(line.decode(errors="replace").strip())


def _wait(url: str, process: subprocess.Popen, reader: threading.Thread, errors: deque[str],
          timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            reader.join(timeout=2)  # the last lines the server wrote
            raise UserError(f"the MLflow UI did not start: {errors[-1] if errors else 'exited'}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise UserError(f"the MLflow UI did not answer on {url} within {timeout_s:.0f} s")
