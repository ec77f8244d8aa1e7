"""The eval stage: lm-eval tasks on one loaded model, and what of them a trial's MLflow run holds.

A task runs alone (`lm_eval.simple_evaluate` with one task), so one that fails (its dataset missing
offline, text its tokenizer cannot read) costs only itself, and each result can be recorded as soon
as it exists. Results land in the trial's run as `eval/<task>/<metric>` and
`eval/<task>/<metric>_stderr` (a metric of a filter other than lm-eval's `none` is named
`<metric>.<filter>`), with a tag `sweeper.eval/<task>` holding how it was evaluated; that tag is what
marks a task as done.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

TAG_PREFIX = "sweeper.eval/"
BOOTSTRAP_ITERS = 1000  # stderr of the metrics lm-eval bootstraps (perplexity); closed forms need none


class TaskFailed(Exception):
    """One task could not be evaluated; the message says why in one line."""


def quiet() -> None:
    """lm-eval and datasets say only warnings, and draw no progress bars of their own."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    for name in ("lm_eval", "lm-eval", "datasets", "evaluate", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import datasets

        datasets.disable_progress_bars()
    except (ImportError, AttributeError):
        pass


def task_manager(task_dirs: Sequence[str], tasks: Sequence[str]) -> Any:
    """An lm-eval TaskManager that knows `tasks`: the YAML files of `task_dirs` only when they hold
    every task (fast), else lm-eval's own tasks too (indexing them takes ~10 s)."""
    from lm_eval.tasks import TaskManager

    paths = [os.path.abspath(d) for d in task_dirs]
    if paths:
        manager = TaskManager(include_path=paths, include_defaults=False)
        if set(tasks) <= set(manager.all_tasks):
            return manager
    return TaskManager(include_path=paths or None)


def unknown_tasks(manager: Any, tasks: Iterable[str]) -> list[str]:
    known = set(manager.all_tasks)
    return [t for t in tasks if t not in known]


def evaluate_task(lm: Any, task: str, manager: Any, *, num_fewshot: int, limit: int | None) -> dict[str, float]:
    """One task's metrics on `lm` as MLflow metric names (module docstring). Raises TaskFailed with
    the reason in one line."""
    from lm_eval import simple_evaluate

    try:
        results = simple_evaluate(model=lm, tasks=[task], num_fewshot=num_fewshot, limit=limit, task_manager=manager,
                                  log_samples=False, bootstrap_iters=BOOTSTRAP_ITERS)
    except Exception as error:  # noqa: BLE001 (lm-eval and datasets raise anything; the task fails, not the run)
        raise TaskFailed(reason(error)) from None
    if not results or task not in results.get("results", {}):
        raise TaskFailed("lm-eval returned no results for it")
    return metric_names(task, results["results"][task])


def reason(error: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first[:300]}" if first else type(error).__name__


def metric_names(task: str, values: Mapping[str, Any]) -> dict[str, float]:
    """lm-eval's `{"acc,none": 0.5, "acc_stderr,none": 0.1, "alias": ...}` -> `{"eval/<task>/acc": 0.5,
    "eval/<task>/acc_stderr": 0.1}`, finite numbers only (a stderr lm-eval did not compute is "N/A")."""
    out = {}
    for key, value in values.items():
        name, _, filter_name = key.partition(",")
        if not filter_name or isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            continue
        if filter_name != "none":
            stem, stderr = (name[:-len("_stderr")], "_stderr") if name.endswith("_stderr") else (name, "")
            name = f"{stem}.{filter_name}{stderr}"
        out[f"eval/{task}/{name}"] = float(value)
    return out


def recorded_tasks(tags: Mapping[str, str]) -> set[str]:
    """The tasks a run's tags say are evaluated."""
    return {key[len(TAG_PREFIX):] for key in tags if key.startswith(TAG_PREFIX)}


def record(client: Any, run_id: str, task: str, metrics: Mapping[str, float], how: Mapping[str, Any],
           step: int) -> None:
    """Log one task's metrics at `step` (the tokens the evaluated checkpoint had trained on) and its
    tag in one batch, then end the run FINISHED again: a finished run keeps its status, and its new
    end time tells readers that cache ended runs (sweeper.tracking.cache) to read it again."""
    from mlflow.entities import Metric, RunTag

    now_ms = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(key=k, value=v, timestamp=now_ms, step=int(step))
                                      for k, v in metrics.items()],
                     tags=[RunTag(f"{TAG_PREFIX}{task}", json.dumps(dict(how), sort_keys=True))])
    client.set_terminated(run_id, status="FINISHED")
