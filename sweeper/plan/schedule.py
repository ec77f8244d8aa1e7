"""A sweep's wall time: its trials placed on the profile's concurrent slots as the driver starts them.

The driver (sweeper.driver.sharing.StartQueue) starts trials in the planned order, longest first,
each as soon as a slot is free; under prefix sharing a branch waits until its trunk has stored the
checkpoint at its branch point, then trains only its own part (at once, when an earlier run stored that
checkpoint). `makespan` replays that with the plan's estimates (Trial.wall_seconds, branch_wall_seconds),
so it is as good as they are.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Sequence
from typing import Any


def starts_at_branch_point(trial: Any, trial_ids: Collection[str], stored: Collection[str] = ()) -> bool:
    """Whether `trial` (sweeper.plan.Trial) trains only its own part under prefix sharing: a branch
    whose trunk is among `trial_ids` (trained in the same run), or whose branch point is in `stored`
    (the ids of branches whose branch point an earlier run left in storage). Any other trains from step 0."""
    return trial.trunk_id is not None and (trial.trunk_id in trial_ids or trial.id in stored)


def makespan(trials: Sequence[Any], concurrency: int, *, shared: bool = False, stored: Collection[str] = ()) -> float:
    """Seconds from the first start to the last end of `trials` (sweeper.plan.Trial, in the planned
    order) on `concurrency` slots: list scheduling, each trial on the first free slot.

    `shared`: a branch whose trunk is among `trials` becomes ready when the trunk reaches its branch
    point, at the trunk's start plus its wall time times branch_step / steps, and then takes
    branch_wall_seconds; a branch in `stored` (ids of branches whose branch point an earlier run left
    in storage) is ready at once and takes branch_wall_seconds, whether or not its trunk is among
    `trials`; a free slot takes the first ready trial in the planned order, and idles while none is
    ready. Any other branch whose trunk is not among `trials` trains from step 0, and without `shared`
    every trial is ready at once and trains alone from step 0.
    """
    by_id = {t.id: t for t in trials}
    trunk_of = {t.id: t.trunk_id for t in trials if shared and starts_at_branch_point(t, by_id, stored)}
    started: dict[str, float] = {}

    def ready_at(trial: Any) -> float:
        trunk_id = trunk_of.get(trial.id)
        if trunk_id is None or trial.id in stored:
            return 0.0
        if trunk_id not in started:
            return math.inf
        trunk = by_id[trunk_id]
        return started[trunk_id] + trunk.wall_seconds * trial.branch_step / trunk.steps

    slots = [0.0] * max(1, concurrency)
    waiting = list(trials)
    while waiting:
        now = heapq.heappop(slots)
        trial = next((t for t in waiting if ready_at(t) <= now), None)
        if trial is None:  # every trial left waits for a branch point (a trunk, never a branch, has started)
            now = min(ready_at(t) for t in waiting)
            trial = next(t for t in waiting if ready_at(t) <= now)
        waiting.remove(trial)
        started[trial.id] = now
        heapq.heappush(slots, now + (trial.branch_wall_seconds if trial.id in trunk_of else trial.wall_seconds))
    return max(slots)
