"""The local cache of ended trial runs: a second read asks only for what can have changed, and sees
every change a sweep or a user makes (runs ending, reruns, deletions, restores)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sweeper.tracking import Tracking


def trial(tracking: Tracking, parent: str, trial_id: str, status: str | None = "FINISHED", loss: float = 3.0,
          fresh: bool = False):
    log = tracking.open_trial(trial_id=trial_id, run_name=trial_id, parent_run_id=parent, tags={}, params={},
                              fresh=fresh)
    log.log({"final/val_loss": loss}, step=100)
    if status:
        log.finish(status)
    return log


@pytest.fixture
def store(tmp_path: Path):
    tracking = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", "cache")
    parent = tracking.sweep_run("cache", spec_texts={}, plan={})
    return tracking, parent


def spy(tracking: Tracking, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    queries: list[tuple[str, bool]] = []
    search = tracking._search

    def recorded(query: str, *, deleted: bool = False):
        queries.append((query, deleted))
        return search(query, deleted=deleted)

    monkeypatch.setattr(tracking, "_search", recorded)
    return queries


def test_a_second_read_asks_only_for_what_can_have_changed(store, monkeypatch) -> None:
    tracking, parent = store
    for i in range(5):
        trial(tracking, parent, f"t{i}", "FINISHED" if i < 4 else "KILLED", loss=float(i))
    first = tracking.trial_records()
    queries = spy(tracking, monkeypatch)
    assert tracking.trial_records() == first and ("", False) not in queries  # never a full read again
    assert {q for q, _ in queries} == {"", "attributes.status = 'RUNNING'"} | {q for q, _ in queries
                                                                              if q.startswith("attributes.end_time >")}


def test_changes_after_the_first_read_are_seen(store) -> None:
    tracking, parent = store
    trial(tracking, parent, "done", "FINISHED", 2.0)
    killed = trial(tracking, parent, "killed", "KILLED")
    running = trial(tracking, parent, "running", None)
    gone = trial(tracking, parent, "gone", "FINISHED")
    assert {t: r.status for t, r in tracking.trial_records().items()} == {
        "done": "FINISHED", "killed": "KILLED", "running": "RUNNING", "gone": "FINISHED"}

    resumed = tracking.open_trial(trial_id="killed", run_name="killed", parent_run_id=parent, tags={}, params={})
    assert resumed.run_id == killed.run_id
    resumed.finish("FINISHED")
    running.finish("FAILED", "diverged")
    tracking.client.delete_run(gone.run_id)
    rerun = trial(tracking, parent, "done", None, fresh=True)  # a rerun, still running
    records = tracking.trial_records()
    assert {t: r.status for t, r in records.items()} == {"done": "RUNNING", "killed": "FINISHED", "running": "FAILED"}
    assert records["done"].run_id == rerun.run_id and records["running"].failure == "diverged"

    tracking.client.restore_run(gone.run_id)  # restored: its end is old, so only a full read finds it
    assert tracking.trial_records()["gone"].run_id == gone.run_id


def test_a_run_that_ended_under_a_slow_clock_is_read_again(store, monkeypatch) -> None:
    tracking, parent = store
    trial(tracking, parent, "early", "FINISHED")
    late = trial(tracking, parent, "late", None)
    assert tracking.trial_records()["late"].status == "RUNNING"
    # Its writer's clock is an hour behind: it ends "before" the watermark.
    tracking.client.set_terminated(late.run_id, "FINISHED", end_time=int(time.time() * 1000) - 3_600_000)
    assert tracking.trial_records()["late"].status == "FINISHED"


def test_a_damaged_cache_file_is_read_again_whole(store) -> None:
    from sweeper.tracking.cache import cache_dir

    tracking, parent = store
    trial(tracking, parent, "a", "FINISHED")
    first = tracking.trial_records()
    for path in cache_dir().glob("*.json"):
        path.write_text("{not json")
    assert tracking.trial_records() == first
