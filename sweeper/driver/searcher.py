"""The Tune searcher of a sweep: suggests each planned trial once, a branch only once it can start.

Tune asks `suggest` whenever it may start a trial (ConcurrencyLimiter, from TuneConfig's
max_concurrent_trials, asks only while a slot is free) and asks again later on None; the order is
sweeper.driver.sharing.StartQueue's. Without branches it suggests the trials in the planned order,
as the grid search it replaces did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ray.tune.search import Searcher

from sweeper.driver.sharing import BRANCH_STEP, DONE, TRUNK_DIR, StartQueue, branch_point
from sweeper.trainer.branch import BRANCH_POINT_KEY


class TrialSearcher(Searcher):
    def __init__(self, payloads: Sequence[dict[str, Any]], say: Callable[[str], None]) -> None:
        super().__init__()
        self.queue = StartQueue(payloads, ready=can_start, say=say)
        self.trial_ids: dict[str, str] = {}  # Tune's trial id -> sweeper's

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        payload = self.queue.next()
        if payload == DONE:
            return Searcher.FINISHED
        if payload is None:
            return None
        assert isinstance(payload, dict)
        self.trial_ids[trial_id] = payload["trial_id"]
        return {"sweeper": payload}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if BRANCH_POINT_KEY in result and trial_id in self.trial_ids:
            self.queue.branch_point(self.trial_ids[trial_id], int(result[BRANCH_POINT_KEY]))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self.trial_ids:
            self.queue.trunk_ended(self.trial_ids[trial_id])

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: a sweep run again starts a new Tuner, which plans from storage and MLflow."""


def can_start(payload: dict[str, Any]) -> bool:
    """A branch may start when its trunk's branch point is whole in storage, or it has checkpoints of its own."""
    from sweeper.driver.checkpoints import latest_persisted

    endpoint = payload.get("storage_endpoint")
    return (branch_point(payload[TRUNK_DIR], int(payload[BRANCH_STEP]), endpoint) is not None
            or latest_persisted(payload["trial_dir"], endpoint) is not None)
