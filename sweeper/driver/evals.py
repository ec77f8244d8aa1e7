"""Downstream evaluation of a trained trial: its checkpoint loaded, scored on lm-eval tasks.

One path for both places evals run: inside the trial's own Ray worker right after training (same
resources; sweeper.driver.worker), and `sweeper eval` for finished trials that lack a task. The
model comes from the trainer (`load_weights`, final or best-validation weights), the lm-eval model
class and the task runner from sweeper.evals, which imports no trainer.

The settings travel to a worker as plain data (`evals_payload`): the spec's `evals` block with its
task folders made absolute and the driver's working folder, since a Ray worker runs in a folder of
Tune's and a task file names its data relative to where it is read (lm-eval's `data_files`); the
worker evaluates from that folder (on a cluster: the job's working directory, which Ray unpacks on
every node).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EVALS_KEY = "sweeper/evals"  # a worker's result: one task's outcome (TaskOutcome.to_json)


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """One task on one checkpoint: its metrics (MLflow names, sweeper.evals.stage) and how it was
    evaluated, or why it failed (one line)."""

    task: str
    metrics: dict[str, float] | None
    how: dict[str, Any] | None
    failure: str | None
    tokens: int  # the evaluated weights had trained on this many tokens (the metrics' step)

    def to_json(self) -> str:
        return json.dumps({"task": self.task, "metrics": self.metrics, "how": self.how, "failure": self.failure,
                           "tokens": self.tokens})

    @classmethod
    def from_json(cls, text: str) -> TaskOutcome:
        return cls(**json.loads(text))


def evals_payload(settings: Any) -> dict[str, Any]:
    """The spec's EvalsSpec as plain data for a worker, task folders absolute."""
    return {"tasks": list(settings.tasks), "task_dirs": [str(Path(d).resolve()) for d in settings.task_dirs],
            "working_folder": os.getcwd(),  # task files name their data relative to it (lm-eval's data_files)
            "num_fewshot": settings.num_fewshot, "limit": settings.limit, "at": settings.at,
            "mc_samples": settings.mc_samples}


def score(model: Any, config: Any, tokenizer: Any, settings: dict[str, Any], tasks: Sequence[str], manager: Any,
          tokens: int, *, on_start: Callable[[str], None] = lambda task: None,
          on_requests: Callable[[int], None] = lambda n: None) -> Iterator[TaskOutcome]:
    """Each task of `tasks` on one loaded model, in turn, as soon as it is done. A task that fails
    (TaskFailed: its dataset missing offline, text the tokenizer cannot read) is an outcome with
    its reason; nothing raises for one task."""
    import importlib.metadata

    from sweeper.evals.harness import Samplers, SweeperLM
    from sweeper.evals.stage import TaskFailed, evaluate_task
    from sweeper.trainer import sample_ar, sample_bd3lm, sample_mdm

    lm = SweeperLM(model, config, tokenizer, samplers=Samplers(ar=sample_ar, mdm=sample_mdm, bd3lm=sample_bd3lm),
                   mc_samples=settings["mc_samples"], on_progress=on_requests)
    version = importlib.metadata.version("lm_eval")
    for task in tasks:
        on_start(task)
        started = time.monotonic()
        try:
            metrics = evaluate_task(lm, task, manager, num_fewshot=settings["num_fewshot"], limit=settings["limit"])
        except TaskFailed as error:
            yield TaskOutcome(task, None, None, str(error), tokens)
            continue
        how = {"at": settings["at"], "num_fewshot": settings["num_fewshot"], "limit": settings["limit"],
               "read_as": lm.kind, "lm_eval": version, "seconds": round(time.monotonic() - started, 2),
               **({"mc_samples": settings["mc_samples"]} if lm.kind != "ar" else {})}
        yield TaskOutcome(task, metrics, how, None, tokens)


def evaluate_trained(checkpoint: str, payload: dict[str, Any], device: str) -> Iterator[TaskOutcome]:
    """In a trial's worker, after training: every task of `payload["evals"]` on `checkpoint` (the
    trial's last), the tokenizer opened from the trial's data, read from the driver's working folder.
    A checkpoint whose weights do not load fails every task with that reason."""

    settings = payload["evals"]
    folder = settings.get("working_folder")
    if folder and Path(folder).is_dir():
        with _working_folder(folder):
            yield from _evaluate_trained(checkpoint, payload, device)
    else:
        yield from _evaluate_trained(checkpoint, payload, device)


@contextlib.contextmanager
def _working_folder(folder: str) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def _evaluate_trained(checkpoint: str, payload: dict[str, Any], device: str) -> Iterator[TaskOutcome]:
    from sweeper.data import open_tokenizer
    from sweeper.evals.stage import quiet, reason, task_manager, unknown_tasks
    from sweeper.trainer import CheckpointUnreadable, load_weights

    settings = payload["evals"]
    tasks = list(settings["tasks"])
    quiet()
    try:
        model, config, tokens = load_weights(checkpoint, device, settings["at"])
    except CheckpointUnreadable as error:
        for task in tasks:
            yield TaskOutcome(task, None, None, f"not evaluated: {error}", 0)
        return
    try:
        manager = task_manager(settings["task_dirs"], tasks)
    except Exception as error:  # noqa: BLE001 (lm-eval reading task folders raises anything)
        for task in tasks:
            yield TaskOutcome(task, None, None, f"lm-eval could not read the task folders: {reason(error)}", tokens)
        return
    unknown = set(unknown_tasks(manager, tasks))
    for task in sorted(unknown, key=tasks.index):
        yield TaskOutcome(task, None, None, f"lm-eval knows no task {task!r} here", tokens)
    yield from score(model, config, open_tokenizer(payload["data"]), settings, [t for t in tasks if t not in unknown],
                     manager, tokens)


def check_evals(spec: Any, settings: Any, where: str) -> Any:
    """Before anything is trained or evaluated: lm-eval installed, every task folder there, every task
    known to lm-eval. Returns the TaskManager. Raises UserError naming `where` (the spec's key, or
    --tasks) otherwise."""
    import importlib.util

    from sweeper.console import UserError
    from sweeper.evals.stage import quiet, task_manager, unknown_tasks
    from sweeper.spec.schema import suggest

    if importlib.util.find_spec("lm_eval") is None:
        raise UserError(f"{spec.file} evals: downstream tasks need lm-evaluation-harness, which is not installed "
                        "here: pip install -e '.[evals]' (or lm_eval==0.4.13)")
    for i, folder in enumerate(settings.task_dirs):
        if not Path(folder).is_dir():
            raise UserError(f"{spec.file} evals.task_dirs[{i}]: no folder {folder} here (relative paths are "
                            "relative to the working folder)")
    quiet()  # before lm-eval is imported: its progress bars read the environment then
    manager = task_manager(settings.task_dirs, settings.tasks)
    for task in unknown_tasks(manager, settings.tasks):
        raise UserError(f"{where}: lm-eval knows no task {task!r}{suggest(task, manager.all_tasks)}")
    return manager
