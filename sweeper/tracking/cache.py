"""A local copy of the trial runs a tracking store holds, so that reading 10,000 of them costs one
file and a few small queries instead of every run again.

MLflow answers a search with each run's params, tags and metrics; a server loads ~65 rows per
trial run to do so, about 3 ms a run on a small machine, so a sweep of 10,000 trials took minutes
to read for every `run`, `status`, `results`, `plan` and `fit`. A run that has ended (FINISHED,
FAILED, KILLED) changes again only when sweeper reopens it (it is RUNNING then), when a rerun
replaces it (the new run names it in `sweeper.supersedes`), or when someone deletes it. So a
reader keeps what it saw in a file per store and experiment, and asks the store only for the runs
that are RUNNING, those that ended after the newest end it holds (less CLOCK_SKEW_MS, for writers
whose clocks disagree), and the deleted ones. Anything unexpected (a deleted run restored, a file
from another version, an experiment recreated under the same name) falls back to reading it all.
The store stays the system of record: the file only saves asking it again for what cannot change.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

CACHE_VERSION = 1
CLOCK_SKEW_MS = 5 * 60 * 1000
ENDED = ("FINISHED", "FAILED", "KILLED")

Search = Callable[[str, bool], Iterable[Any]]  # (filter string, deleted only) -> MLflow runs


def cache_dir() -> Path:
    if os.environ.get("SWEEPER_CACHE_DIR"):
        return Path(os.environ["SWEEPER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sweeper" / "runs"


def cache_file(tracking_uri: str, experiment_id: str, created_ms: int | None) -> Path:
    key = json.dumps([tracking_uri, experiment_id, created_ms])
    return cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def row(run: Any) -> dict[str, Any]:
    """What sweeper reads of a run, as plain data."""
    return {"run_id": run.info.run_id, "status": run.info.status, "start_time": run.info.start_time or 0,
            "end_time": run.info.end_time, "tags": dict(run.data.tags), "metrics": dict(run.data.metrics)}


def read_rows(path: Path, search: Search, keep: Callable[[Any], bool],
              get: Callable[[str], Any | None]) -> list[dict[str, Any]]:
    """Every kept run of the experiment as a row: from the cache file brought up to date, or read
    whole (and the file written) when there is none or it cannot be trusted."""
    cached = _load(path)
    rows = _refresh(cached, search, keep, get) if cached is not None else None
    if rows is None:
        rows = {r.info.run_id: row(r) for r in search("", False) if keep(r)}
        deleted = {r.info.run_id for r in search("", True)}
    else:
        rows, deleted = rows
    _save(path, rows, deleted)
    return list(rows.values())


def _refresh(cached: dict[str, Any], search: Search, keep: Callable[[Any], bool],
             get: Callable[[str], Any | None]) -> tuple[dict[str, dict[str, Any]], set[str]] | None:
    rows: dict[str, dict[str, Any]] = cached["rows"]
    deleted = {r.info.run_id for r in search("", True)}
    if set(cached["deleted"]) - deleted:
        return None  # a deleted run was restored: its end is old, so only a full read finds it
    since = max((r["end_time"] or 0 for r in rows.values()), default=0) - CLOCK_SKEW_MS
    fresh = {r.info.run_id: r for r in search("attributes.status = 'RUNNING'", False)}
    fresh.update({r.info.run_id: r for r in search(f"attributes.end_time > {since}", False)})
    for run_id in [i for i, r in rows.items() if r["status"] not in ENDED and i not in fresh]:
        run = get(run_id)  # was running when read, ended before the watermark (a writer's slow clock)
        if run is not None:
            fresh[run_id] = run
    for run_id, run in fresh.items():
        if keep(run):
            rows[run_id] = row(run)
    for run_id in deleted:
        rows.pop(run_id, None)
    return rows, deleted


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return None
    return data


def _save(path: Path, rows: dict[str, dict[str, Any]], deleted: set[str]) -> None:
    """Written whole into a temporary file and renamed, so a reader never sees half of it; a cache
    that cannot be written only costs the next reader a full read."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"version": CACHE_VERSION, "rows": rows, "deleted": sorted(deleted)}))
        tmp.replace(path)
    except OSError:
        pass
