"""Stopping a running sweep cleanly, one way wherever its driver runs: a request file in the sweep's
storage, which every driver's StopWatcher polls (every STOP_POLL_S) and answers as Ctrl-C would, so
its running trials end KILLED and resume next run. `sweeper stop` writes the request for a driver
on this machine (found by its driver file) as for a cluster's job (found through the Jobs API,
sweeper.driver.cluster)."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

from sweeper.console import UserError
from sweeper.storage import experiment_folder, sweep_dir


DRIVER_FILE = "driver.json"  # whether and where a driver runs this sweep, for `sweeper stop`
STOP_FILE = "stop-requested"  # in storage: asks the sweep's driver, wherever it runs, to stop cleanly
STOP_POLL_S = 3.0


def _driver_file(root: str, experiment: str) -> Path:
    """Where a running driver records itself: beside the sweep's storage, or this machine's cache for s3://."""
    name = experiment_folder(experiment)
    folder = Path(root) / name if "://" not in root else Path.home() / ".cache" / "sweeper" / name
    return folder / DRIVER_FILE


def claim_driver(root: str, experiment: str) -> Path:
    """Record that this process drives the sweep (its host and PID), for `sweeper stop`."""
    path = _driver_file(root, experiment)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
    return path


def stop_sweep(root: str, experiment: str, endpoint: str | None) -> str:
    """Ask the driver running the sweep on this machine to stop (request_stop); it does so within
    STOP_POLL_S, and its running trials end KILLED."""
    path = _driver_file(root, experiment)
    if not path.is_file():
        raise UserError(f"no sweep of experiment {experiment!r} is running from {root}")
    info = json.loads(path.read_text())
    if info.get("host") != socket.gethostname():
        raise UserError(f"the sweep runs on {info.get('host')}; run `sweeper stop` there")
    if not _alive(int(info["pid"])):
        path.unlink(missing_ok=True)
        raise UserError(f"the sweep's driver (pid {info['pid']}) is gone; nothing to stop")
    request_stop(root, experiment, endpoint)
    return (f"asked the sweep's driver (pid {info['pid']}) to stop; running trials end KILLED and continue next run, "
            "from their checkpoints where they have one")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # no signal: only whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process
    return True


def request_stop(root: str, experiment: str, endpoint: str | None) -> None:
    """Ask the sweep's driver, wherever it runs, to stop as Ctrl-C would (see StopWatcher)."""
    from sweeper.storage import write_text

    write_text(f"{sweep_dir(root, experiment)}/{STOP_FILE}", endpoint, json.dumps({"requested": time.time()}))


class StopWatcher:
    """Interrupts this driver (SIGINT, as Ctrl-C) when a stop request appears in storage.

    A request older than this driver is stale (a driver that died before it read it) and is
    removed when the watcher is made: make it before the driver claims the sweep (claim_driver),
    so that no request sent once `sweeper stop` can find the driver is removed unread."""

    def __init__(self, uri: str, endpoint: str | None):
        import threading

        from sweeper.storage import delete

        self.uri, self.endpoint = uri, endpoint
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="sweeper-stop-watcher", daemon=True)
        delete(self.uri, self.endpoint)

    def __enter__(self) -> StopWatcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()

    def _watch(self) -> None:
        from sweeper.storage import delete, read_text

        while not self.done.wait(STOP_POLL_S):
            try:
                found = read_text(self.uri, self.endpoint)
            except OSError:
                continue  # storage briefly unreachable: look again later
            if found is not None:
                delete(self.uri, self.endpoint)
                os.kill(os.getpid(), signal.SIGINT)
                return
