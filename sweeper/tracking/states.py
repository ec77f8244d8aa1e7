"""Which planned trials the profile's MLflow already holds: done vs to run, for `sweeper plan`.

`plan` answers in well under a second, so the store is looked at only where one can be: a sqlite
file that exists, or a server that answers its health check at once. Otherwise one line says why
the states are unknown and every trial counts as to run; MLflow is not even imported then.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sweeper.plan import Trial
from sweeper.plan.documents import StoreStates

HEALTH_TIMEOUT_S = 0.5
# A trial's state in the plan, from its run's status; no run (or a KILLED one, which resumes): to run.
PLAN_STATES = {"FINISHED": "done", "FAILED": "failed", "RUNNING": "running"}


def store_states(profile: Any, experiment: str, trials: Sequence[Trial]) -> StoreStates:
    from sweeper.console import UserError, redact
    from sweeper.tracking import check_reachable

    try:
        uri = profile.tracking_uri()
        if uri.startswith("sqlite:///"):
            path = Path(uri.removeprefix("sqlite:///"))
            if not path.is_file():
                return StoreStates(states=None, note=f"no MLflow store at {path} yet: every trial is to run")
        else:
            check_reachable(uri, timeout_s=HEALTH_TIMEOUT_S)
    except UserError as error:
        return StoreStates(states=None, note=f"done vs to run unknown: {error}")
    from sweeper.tracking import Tracking
    from sweeper.tracking.results import joined

    try:
        tracking = Tracking(uri, experiment, create=False)
        states = {trial.id: PLAN_STATES.get(record.status, "to run")
                  for trial, record in joined(trials, tracking.trial_records([t.id for t in trials]))
                  if record is not None}
    except Exception as error:  # noqa: BLE001 (a view of the plan: any store failure is one line, not a crash)
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        return StoreStates(states=None, note=redact(f"done vs to run unknown: MLflow at {uri} answered: {first}"))
    if tracking.experiment_id is None:
        return StoreStates(states={}, note=f"MLflow at {redact(uri)} has no experiment {experiment!r} yet")
    return StoreStates(states=states, note=f"MLflow at {redact(uri)}, experiment {experiment!r}")
