"""`sweeper eval`: downstream tasks (lm-evaluation-harness) for finished trials that lack them.

A trial's final checkpoint is found as `sweeper sample RUN_ID` finds it (its latest in storage),
loaded as `sweeper sample` loads it, and scored by sweeper.evals; results land in the trial's MLflow
run. A task the run already holds is not evaluated again, so a second call does nothing and says
so. A task that fails (its dataset missing offline, text its tokenizer cannot read) is one line and
costs only itself: the command still exits 0 and the trial stays FINISHED.
"""

from __future__ import annotations

import argparse
from typing import Any

from sweeper.cli.context import Context
from sweeper.cli.spec import add_profile_arguments
from sweeper.cli.train import DEVICE_HELP


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("eval", help="downstream tasks (lm-eval) for finished trials that lack them",
                              description="Evaluate the final checkpoint of every finished trial of SPEC on the "
                                          "lm-eval tasks of its `evals` block that its MLflow run does not hold "
                                          "yet, and log eval/<task>/<metric> to that run.")
    p.add_argument("spec", metavar="SPEC")
    add_profile_arguments(p)
    p.add_argument("--where", action="append", default=[], metavar="EXPR",
                   help="only matching trials: family=ar, model=7M,14M, epochs>=100 (repeatable)")
    p.add_argument("--tasks", metavar="A,B", help="these lm-eval tasks instead of the spec's evals.tasks")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(handler=run_eval)


def eval_settings(spec: Any, tasks_option: str | None) -> Any:
    """The spec's EvalsSpec, its tasks replaced by --tasks when given. Raises UserError when there
    are no tasks to run."""
    import dataclasses

    from sweeper.console import UserError
    from sweeper.spec.evals import EvalsSpec

    settings = spec.evals
    if tasks_option is not None:
        tasks = tuple(dict.fromkeys(t.strip() for t in tasks_option.split(",") if t.strip()))
        if not tasks:
            raise UserError(f"--tasks {tasks_option!r}: expected task names separated by commas")
        return dataclasses.replace(settings, tasks=tasks) if settings else EvalsSpec(tasks=tasks)
    if settings is None:
        raise UserError(f"{spec.file} has no `evals` block: add one (evals: {{tasks: [...]}}) or pass --tasks")
    return settings


def run_eval(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's and datasets' bars; ours is rich's
    from sweeper.console import console
    from sweeper.plan.where import parse_where, select
    from sweeper.spec import TRAIN_KEYS

    filters = parse_where(args.where, train_keys=TRAIN_KEYS)
    ctx = Context(args)
    spec, plan = ctx.spec, ctx.plan
    settings = eval_settings(spec, args.tasks)
    trials = select(plan.trials, filters) if filters else list(plan.trials)
    todo, finished = to_evaluate(ctx, trials, settings.tasks)
    if not finished:
        console.print(f"no finished trial of {spec.name} to evaluate ({len(trials)} planned); "
                      f"`sweeper run {spec.file}` trains them", soft_wrap=True)
        return 0
    if not todo:
        console.print(f"nothing to evaluate: {finished} finished trial{'s' * (finished != 1)} already "
                      f"hold{'s' * (finished == 1)} {', '.join(settings.tasks)}", soft_wrap=True)
        return 0
    return evaluate(ctx, settings, todo, args.device)


def to_evaluate(ctx: Context, trials: list[Any],
                tasks: tuple[str, ...]) -> tuple[list[tuple[Any, Any, list[str]]], int]:
    """([(trial, its run, the tasks it lacks)], finished trials): each run read afresh, since tasks
    recorded after a run ended are newer than a cache of ended runs may be."""
    from sweeper.evals.stage import recorded_tasks

    tracking = ctx.tracking()
    records = tracking.trial_records([t.id for t in trials])
    todo, finished = [], 0
    for trial in trials:
        record = records.get(trial.id)
        if record is None or record.status != "FINISHED":
            continue
        finished += 1
        run = tracking.run(record.run_id)
        if run is None:
            continue
        missing = [task for task in tasks if task not in recorded_tasks(run.data.tags)]
        if missing:
            todo.append((trial, run, missing))
    return todo, finished


def evaluate(ctx: Context, settings: Any, todo: list[tuple[Any, Any, list[str]]], device: str) -> int:
    import tempfile
    from pathlib import Path

    from sweeper.cli.train import check_device, check_vocab, checkpoint_of_run, read_weights
    from sweeper.console import UserError, console, err_console
    from sweeper.driver.evals import check_evals, evals_payload, score
    from sweeper.evals.stage import record

    spec, profile = ctx.spec, ctx.profile
    check_device(device)
    wanted = tuple(sorted({task for _, _, missing in todo for task in missing}))
    import dataclasses

    manager = check_evals(spec, dataclasses.replace(settings, tasks=wanted),
                          "--tasks" if ctx.args.tasks is not None else f"{spec.file} evals.tasks")
    from sweeper.data import find, open_tokenizer

    manifest = find(spec.data, profile.storage_location())
    if manifest is None:
        raise UserError(f"{spec.file}: its data is not prepared here; run `sweeper data {spec.file}`")
    tokenizer = open_tokenizer(manifest)
    payload = evals_payload(settings)
    total = sum(len(missing) for _, _, missing in todo)
    done = failed = 0
    with _Progress(err_console, total) as progress:
        for trial, run, missing in todo:
            with tempfile.TemporaryDirectory(prefix="sweeper-eval-") as scratch:
                try:
                    checkpoint = checkpoint_of_run(run.info.run_id, ctx, Path(scratch))
                    model, config, tokens = read_weights(checkpoint, f"run {run.info.run_id}", device, settings.at)
                except UserError as error:
                    err_console.print(f"{trial.name} ({trial.id}): not evaluated, {error}", markup=False,
                                      soft_wrap=True)
                    failed += len(missing)
                    progress.advance(len(missing))
                    continue
            check_vocab(config, tokenizer, f"trial {trial.id}", spec.file)
            outcomes = score(model, config, tokenizer, payload, missing, manager, tokens,
                             on_start=lambda task, name=trial.name: progress.start(f"{name} {task}"),
                             on_requests=progress.requests)
            for outcome in outcomes:
                progress.advance(1)
                if outcome.failure is not None or outcome.metrics is None:
                    err_console.print(f"{trial.name} ({trial.id}) {outcome.task}: failed, {outcome.failure}",
                                      markup=False, soft_wrap=True)
                    failed += 1
                    continue
                record(ctx.tracking().client, run.info.run_id, outcome.task, outcome.metrics, outcome.how or {},
                       outcome.tokens)
                done += 1
                seconds = (outcome.how or {}).get("seconds", 0.0)
                console.print(f"{trial.name} ({trial.id}) {outcome.task}: {_summary(outcome.task, outcome.metrics)} "
                              f"({seconds:.1f} s)", markup=False, soft_wrap=True)
    tail = f", {failed} failed" if failed else ""
    console.print(f"evaluated {done} task{'s' * (done != 1)} on {len(todo)} trial{'s' * (len(todo) != 1)}{tail}",
                  soft_wrap=True)
    return 0


def _summary(task: str, metrics: dict[str, float]) -> str:
    prefix = f"eval/{task}/"
    shown = []
    for key, value in metrics.items():
        name = key[len(prefix):]
        if name.endswith("_stderr"):
            continue
        stderr = metrics.get(f"{key}_stderr")
        shown.append(f"{name} {value:.4g}" + (f" ± {stderr:.2g}" if stderr is not None else ""))
    return ", ".join(shown) or "no numeric metrics"


class _Progress:
    """A rich progress bar over the (trial, task) pairs on a terminal, with the requests answered in
    the current one; nothing when output is piped."""

    def __init__(self, console: Any, total: int) -> None:
        self.console, self.total = console, total
        self.bar: Any = None
        self.answered = 0

    def __enter__(self) -> _Progress:
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=self.console, transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task("tasks", total=self.total)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def start(self, what: str) -> None:
        self.what, self.answered = what, 0
        if self.bar is not None:
            self.bar.update(self.task, description=what)

    def requests(self, count: int) -> None:
        self.answered += count
        if self.bar is not None:
            self.bar.update(self.task, description=f"{self.what}: {self.answered:,} requests")

    def advance(self, count: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, count)
