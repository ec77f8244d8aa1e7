"""One driver per sweep: an exclusive lock per (storage, experiment), held for the driver's life.

Two drivers on one sweep would train every trial twice into the same runs, log duplicate points
and each answer only part of a `sweeper stop`. So a driver takes the sweep's lock before it opens
MLflow, and a second driver exits at once, naming the first (pid, host, start). The lock is an
`flock` on `driver.lock` beside the sweep's storage (this machine's cache for s3:// storage,
where the cluster's Jobs API refuses a second submission): the kernel releases it when its holder
dies however it dies, so a dead holder's lock is simply taken over; its file, which is never
removed (removing a lock file lets two processes lock two files), keeps the last holder's pid and
host for that message.

flock rather than the `filelock` package: filelock truncates the file when it opens it, before it
holds the lock, which would wipe the holder's pid and host that a second driver must name.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from sweeper.console import UserError
from sweeper.storage import experiment_folder

LOCK_FILE = "driver.lock"


def lock_path(root: str, experiment: str) -> Path:
    """Where the sweep's lock lives: in its storage folder, or for s3:// storage in this machine's
    cache under a name that keeps the bucket and prefix apart (two storages, two locks)."""
    name = experiment_folder(experiment)
    if "://" not in root:
        return Path(root) / name / LOCK_FILE
    digest = hashlib.sha256(root.encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "sweeper" / "locks" / f"{name}-{digest}" / LOCK_FILE


class SweepLock:
    """The sweep's lock, held from `acquire` until `release` (or this process ends).

    `acquire` raises UserError when another live process holds it, naming that process; `taken_over`
    is then the previous holder's record when that holder is gone (it died without releasing)."""

    def __init__(self, root: str, experiment: str, spec_file: str) -> None:
        self.path, self.root, self.experiment, self.spec_file = lock_path(root, experiment), root, experiment, spec_file
        self.fd: int | None = None
        self.taken_over: dict[str, Any] | None = None

    def acquire(self) -> SweepLock:
        """Raises UserError when another driver runs the sweep."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # never O_TRUNC: the holder's record is in it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise UserError(self._held_by(holder)) from None
        previous = _record(fd)
        if previous.get("pid") is not None and (previous.get("pid"), previous.get("host")) != \
                (os.getpid(), socket.gethostname()) and not previous.get("released"):
            self.taken_over = previous
        try:
            _rewrite(fd, {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise UserError(f"storage full at {self.root}: free space there and run the same command again") \
                    from None
            raise
        self.fd = fd
        return self

    def release(self) -> None:
        """Mark the record released (so the next driver takes over nothing) and let go."""
        if self.fd is None:
            return
        try:
            _rewrite(self.fd, {**_record(self.fd), "released": time.time()})
        except OSError:
            pass  # a full disk: the next driver then says it takes over, which is harmless
        os.close(self.fd)  # closing the one descriptor releases the flock
        self.fd = None

    def __enter__(self) -> SweepLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _held_by(self, holder: dict[str, Any]) -> str:
        if holder.get("pid") is None:
            who = "another driver (it is just starting)"
        else:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("started", 0))))
            who = f"another driver, pid {holder['pid']} on {holder.get('host', '?')} (since {since})"
        return (f"experiment {self.experiment!r} with storage {self.root} is already being run by {who}; "
                f"wait for it to end or stop it with `sweeper stop {self.spec_file}`")


def _rewrite(fd: int, record: dict[str, Any]) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    os.fsync(fd)


def _record(fd: int) -> dict[str, Any]:
    try:
        found = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _holder(fd: int) -> dict[str, Any]:
    """The holder's record; a holder that has the lock but has not written its record yet gets a
    moment to do so."""
    for _ in range(20):
        record = _record(fd)
        if record.get("pid") is not None and not record.get("released"):
            return record
        time.sleep(0.05)
    return {}
