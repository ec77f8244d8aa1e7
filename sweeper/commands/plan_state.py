"""Which planned trials the profile's MLflow already holds: done vs to run, for `sweeper plan`.

`plan` answers in well under a second, so the store is looked at only where one can be: a sqlite
file that exists, or a server that answers its health check at once. Otherwise one line says why
the states are unknown and every trial counts as to run; MLflow is not even imported then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEALTH_TIMEOUT_S = 0.5
# A trial's state in the plan, from its run's status; no run (or a KILLED one, which resumes): to run.
PLAN_STATES = {"FINISHED": "done", "FAILED": "failed", "RUNNING": "running"}


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreStates:
    states: dict[str, str] | None  # trial id -> done / failed / running / to run; None: unknown
    note: str  # one line: where the states come from, or why they are unknown

    def state(self, trial_id: str) -> str | None:
        return None if self.states is None else self.states.get(trial_id, "to run")

    def summary(self, trial_ids: Sequence[str]) -> str:
        if self.states is None:
            return self.note
        counts: dict[str, int] = {}
        for trial_id in trial_ids:
            state = self.state(trial_id) or "to run"
            counts[state] = counts.get(state, 0) + 1
        order = ("done", "running", "failed", "to run")
        return f"{self.note}: " + ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s))


def store_states(profile: Any, experiment: str, trial_ids: Sequence[str]) -> StoreStates:
    from sweeper.console import UserError
    from sweeper.run import tracking_uri
    from sweeper.tracking import check_reachable

    try:
        uri = tracking_uri(profile)
        if uri.startswith("sqlite:///"):
            path = Path(uri.removeprefix("sqlite:///"))
            if not path.is_file():
                return StoreStates(states=None, note=f"no MLflow store at {path} yet: every trial is to run")
        else:
            check_reachable(uri, timeout_s=HEALTH_TIMEOUT_S)
    except UserError as error:
        return StoreStates(states=None, note=f"done vs to run unknown: {error}")
    from sweeper.tracking import Tracking

    try:
        tracking = Tracking(uri, experiment, create=False)
        found = tracking.trial_states(trial_ids)
    except Exception as error:  # noqa: BLE001 (a view of the plan: any store failure is one line, not a crash)
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        return StoreStates(states=None, note=f"done vs to run unknown: MLflow at {uri} answered: {first}")
    if tracking.experiment_id is None:
        return StoreStates(states={}, note=f"MLflow at {uri} has no experiment {experiment!r} yet")
    return StoreStates(states={t: PLAN_STATES.get(s, "to run") for t, s in found.items()},
                       note=f"MLflow at {uri}, experiment {experiment!r}")
