"""The driver's side of prefix sharing without Ray running: which trial starts next, and branch points in storage."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from sweeper.driver.sharing import BRANCH_STEP, DONE, TRUNK_DIR, TRUNK_ID, StartQueue, branch_point, \
    branch_point_path, persist_branch_point, started_from_step_zero, train_arguments


def trunk(trial_id: str) -> dict:
    return {"trial_id": trial_id, "extra_eval_steps": [3], "keep_steps": [10, 20]}


def branch(trial_id: str, trunk_id: str, step: int) -> dict:
    return {"trial_id": trial_id, TRUNK_ID: trunk_id, "trunk_name": f"name-{trunk_id}", TRUNK_DIR: f"/s/{trunk_id}",
            BRANCH_STEP: step, "branch_name": f"name-{trial_id}"}


def drain(queue: StartQueue) -> list[str]:
    out = []
    while isinstance(started := queue.next(), dict):
        out.append(started["trial_id"])
    return out


def test_trials_start_in_planned_order_and_branches_once_their_branch_point_is_stored() -> None:
    said: list[str] = []
    queue = StartQueue([trunk("t"), branch("b20", "t", 20), branch("b10", "t", 10), {"trial_id": "x"}],
                       ready=lambda p: False, say=said.append)
    assert drain(queue) == ["t", "x"] and queue.next() is None  # the branches wait, Tune asks again
    queue.branch_point("t", 10)
    assert drain(queue) == ["b10"] and queue.next() is None
    queue.branch_point("t", 20)
    started = queue.next()
    assert started["trial_id"] == "b20" and started[TRUNK_DIR] == "/s/t"  # it branches
    assert queue.next() == DONE and said == []


def test_a_branch_whose_trunk_ended_without_its_branch_point_starts_from_step_zero() -> None:
    said: list[str] = []
    queue = StartQueue([trunk("t"), branch("b", "t", 10)], ready=lambda p: False, say=said.append)
    assert drain(queue) == ["t"]
    queue.trunk_ended("t")
    started = queue.next()
    assert started["trial_id"] == "b" and TRUNK_DIR not in started and BRANCH_STEP not in started
    assert said == ["started name-b from step 0: its trunk name-t has no checkpoint at step 10"]
    assert queue.next() == DONE
    # what the progress line reads off the payload it started with (sweeper.plan.Trial's trunk_id)
    planned = SimpleNamespace(trunk_id="t")
    assert started_from_step_zero(planned, started) and not started_from_step_zero(planned, branch("b", "t", 10))
    assert not started_from_step_zero(SimpleNamespace(trunk_id=None), trunk("t"))


def test_a_branch_whose_trunk_is_not_run_starts_at_once_from_storage_or_step_zero() -> None:
    said: list[str] = []
    stored = {"b1"}  # its branch point is in storage (or it has checkpoints of its own)
    queue = StartQueue([branch("b1", "gone", 10), branch("b2", "gone", 20)], ready=lambda p: p["trial_id"] in stored,
                       say=said.append)
    first, second = queue.next(), queue.next()
    assert first[TRUNK_DIR] == "/s/gone" and TRUNK_DIR not in second
    assert said == ["started name-b2 from step 0: its trunk name-gone has no checkpoint at step 20"]


def test_a_trunk_that_ends_after_storing_its_branch_point_lets_the_branch_branch() -> None:
    checks = iter([False, True])  # at the start not yet, when the trunk ends it is there
    queue = StartQueue([trunk("t"), branch("b", "t", 10)], ready=lambda p: next(checks), say=print)
    assert drain(queue) == ["t"]
    queue.trunk_ended("t")
    assert queue.next()[TRUNK_DIR] == "/s/t"


def test_a_trunk_payload_gives_train_its_extra_evals_and_keep_steps() -> None:
    assert train_arguments(trunk("t")) == {"extra_eval_steps": frozenset({3}), "keep_steps": frozenset({10, 20})}
    assert train_arguments(branch("b", "t", 10)) == {} and train_arguments({"trial_id": "x"}) == {}


def test_a_branch_point_in_storage_is_whole_only_with_its_marker(tmp_path: Path) -> None:
    written = tmp_path / "local" / "step_00000010"
    written.mkdir(parents=True)
    (written / "state.pt").write_bytes(b"x" * 100)
    (written / "complete.json").write_text(json.dumps({"files": {"state.pt": {"bytes": 100}}}))
    trunk_dir = str(tmp_path / "store" / "t")
    assert branch_point(trunk_dir, 10, None) is None
    persist_branch_point(str(written), trunk_dir, None)
    assert branch_point_path(trunk_dir, 10).endswith("t/branch_points/step_00000010")
    assert branch_point(trunk_dir, 10, None) is not None
    (Path(branch_point_path(trunk_dir, 10)) / "state.pt").write_bytes(b"x" * 50)  # cut off
    assert branch_point(trunk_dir, 10, None) is None
