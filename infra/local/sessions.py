"""What a local service is made of: the processes of its session, and the ports it may take.

Each service of infra/local/cluster.py is started with setsid, so its session id is the PID we
started. The session, not the process group, is what holds all of it: Ray's worker processes put
themselves in process groups of their own (setpgrp) but stay in the raylet's session.
"""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path

# Below the ephemeral range (32768+, where free_port() of other tests and client sockets land) and
# above Ray's default worker ports (10002-19999), so an embedded Ray in a test session cannot collide.
PORT_LOW, PORT_HIGH = 20000, 30000
EPHEMERAL_LOW = 32768


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # [0] state, [1] ppid, [2] pgrp, [3] session


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def is_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie waiting for its parent counts as gone."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in "ZX"


def session_members(sid: int) -> list[int]:
    """The live processes of session `sid`."""
    return [pid for pid in _pids() if (fields := _stat(pid)) and fields[0] not in "ZX" and int(fields[3]) == sid]


def signal_session(sid: int, signum: int) -> list[int]:
    """Send `signum` to every process of the session; returns the PIDs signalled."""
    members = session_members(sid)
    for pid in members:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    return members


def wait_gone(sid: int, timeout_s: float) -> bool:
    """Wait until no process of the session is left; False if some still are after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while session_members(sid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains `text`, other than this one and its ancestors."""
    mine, pid = set(), os.getpid()
    while pid > 1 and (fields := _stat(pid)):
        mine.add(pid)
        pid = int(fields[1])
    found = []
    for pid in _pids():
        if pid in mine or not is_alive(pid):
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(pid)
    return found


def port_free(port: int) -> bool:
    with socket.socket() as sock:  # without SO_REUSEADDR: a port in TIME_WAIT counts as taken
        try:
            sock.bind(("0.0.0.0", port))  # Ray listens on every interface; this clashes with loopback too
        except OSError:
            return False
    return True


def free_ports(count: int, attempts: int = 200) -> list[int]:
    """`count` consecutive free ports at a random place in [PORT_LOW, PORT_HIGH), so that two setups
    started at once are unlikely to pick the same ones."""
    rng = random.SystemRandom()
    for _ in range(attempts):
        base = rng.randrange(PORT_LOW, PORT_HIGH - count)
        if all(port_free(port) for port in range(base, base + count)):
            return list(range(base, base + count))
    raise RuntimeError(f"no {count} consecutive free ports in [{PORT_LOW}, {PORT_HIGH})")


def free_port_pair(offset: int, exclude: set[int]) -> int:
    """A free port p, not in `exclude`, with p + offset free too, both below the ephemeral range."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(PORT_LOW, EPHEMERAL_LOW - offset)
        if not {port, port + offset} & exclude and port_free(port) and port_free(port + offset):
            return port
    raise RuntimeError(f"no free ports p and p + {offset} below {EPHEMERAL_LOW}")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
