"""The driver's view of a running sweep: every Tune result goes to MLflow and to the screen.

`SweepCallback` is the only MLflow writer of a sweep (trials report to the driver through Tune),
so a sqlite store never sees two writers. On a terminal it keeps a live rich view of the trials
(pending / running / finished / failed), tokens and FLOPs done against the plan, elapsed time
and the time left (the plan's estimate, then the pace measured so far); when stdout is not a
terminal it prints plain log lines instead.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.live import Live
from rich.table import Table

from ray.tune import Callback

from sweeper.console import console, is_terminal, redact
from sweeper.plan import ID_SCHEMA
from sweeper.plan.schedule import starts_at_branch_point
from sweeper.tracking import TAG_SCHEMA, TrialLog, Tracking, flatten, provenance
from sweeper.trainer.branch import BRANCHED_KEY
from sweeper.trial import training_flops
from sweeper.units import fmt_count, fmt_duration, fmt_sci
from sweeper.driver.evals import EVALS_KEY, TaskOutcome
from sweeper.driver.sharing import started_from_step_zero
from sweeper.evals.stage import TAG_PREFIX as EVAL_TAG_PREFIX
from sweeper.driver.worker import CURVE_KEY, FAILURE_KEY, NODE_KEY, RESUMED_KEY, STORAGE_FULL_KEY, WARNING_KEY

PLAIN_LOG_EVERY_S = 30.0


MEASURED_FROM = 0.1  # the share of the planned work done before the pace so far is trusted


def time_left(elapsed_s: float, done_s: float, planned_s: float, estimate_s: float) -> str:
    """What the live view says of the time to go. Work is counted in the plan's own seconds
    (`planned_s`: every trial's planned time; `done_s`: each trial's share of it by the tokens it
    has trained, all of it once finished), so per-step and per-trial overheads weigh as the plan
    weighs them, which FLOPs alone do not. Until MEASURED_FROM of the work is done the line gives
    the plan's estimate for the sweep; then the rest at the pace measured so far,
    elapsed · (planned − done) / done, since the plan's hardware figures are often another
    machine's. One long trial left running alone takes longer than that."""
    if planned_s > 0 and done_s >= MEASURED_FROM * planned_s:
        rest = elapsed_s * max(planned_s - done_s, 0.0) / done_s
        return f"≈{fmt_duration(rest)} left at the pace so far (plan: {fmt_duration(estimate_s)})"
    return f"≈{fmt_duration(estimate_s)} estimated"


@dataclass(slots=True)
class TrialState:
    trial: Any  # the planned sweeper.plan.Trial
    state: str = "pending"  # pending, running, retrying, finished, failed, killed
    tokens: int = 0
    val_loss: float | None = None
    reason: str | None = None
    log: TrialLog | None = None
    node: str | None = None
    nodes: list[str] = field(default_factory=list)
    from_step_zero: bool = False  # a branch started without its branch point (sharing.started_from_step_zero)


@dataclass(eq=False)
class SweepCallback(Callback):
    tracking: Tracking
    parent_run_id: str
    trials: Mapping[str, Any]  # id -> planned Trial, only those this run trains
    extra_tags: Mapping[str, str]  # data manifest fingerprint, unique_tokens_actual per U, ...
    metric_names: frozenset[str]
    estimate_s: float
    fresh: frozenset[str] = frozenset()  # `--rerun` ids: a new run each, from step 0
    stored: frozenset[str] = frozenset()  # branches whose branch point an earlier run stored
    started: float = field(default_factory=time.monotonic)
    states: dict[str, TrialState] = field(default_factory=dict)
    live: Live | None = None
    last_plain: float = 0.0
    storage_full: str | None = None  # what a trial's worker said when a checkpoint did not fit

    def __post_init__(self) -> None:
        Callback.__init__(self)
        self.states = {trial_id: TrialState(trial) for trial_id, trial in self.trials.items()}
        self.versions = provenance()

    # --- Tune hooks -----------------------------------------------------------------------------

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        state = self._state(trial)
        if state.log is None:
            planned = state.trial
            tags = {"family": planned.family, "model": planned.model.name, "num_params": planned.num_params,
                    "unique_tokens": planned.unique_tokens, "epochs": planned.epochs, "tokens": planned.tokens,
                    "tokens_trained": planned.tokens_trained, "epochs_trained": planned.epochs_trained,
                    "flops": planned.flops, "sweeper.sweep": self.extra_tags.get("sweeper.sweep", ""),
                    TAG_SCHEMA: ID_SCHEMA,
                    **self.versions, **{k: v for k, v in self.extra_tags.items() if not k.startswith("pool.")},
                    "unique_tokens_actual": self.extra_tags.get(f"pool.{planned.unique_tokens}", "")}
            params = flatten({"family": planned.family, "model": {"name": planned.model.name,
                                                                  **planned.model.dimensions()},
                              "unique_tokens": planned.unique_tokens, "epochs": planned.epochs,
                              "tokens": planned.tokens, "steps": planned.steps,
                              "tokens_trained": planned.tokens_trained, "epochs_trained": planned.epochs_trained,
                              "train": planned.train,
                              "data": planned.data})
            state.log = self.tracking.open_trial(trial_id=planned.id, run_name=planned.name,
                                                 parent_run_id=self.parent_run_id, tags=tags, params=params,
                                                 fresh=planned.id in self.fresh)
        state.state = "running"
        state.from_step_zero = started_from_step_zero(state.trial, trial.config["sweeper"])
        self._say(f"started {state.trial.name} ({state.trial.id})")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        state = self._state(trial)
        if FAILURE_KEY in result:
            state.reason = str(result[FAILURE_KEY])
            return
        if STORAGE_FULL_KEY in result:  # stop the sweep, as `sweeper stop` does: its trials resume
            state.state = "storage full"
            if self.storage_full is None:
                self.storage_full = str(result[STORAGE_FULL_KEY])
                os.kill(os.getpid(), signal.SIGINT)
            return
        if NODE_KEY in result and state.log is not None and result[NODE_KEY] != state.node:
            # The Ray node it runs on; a trial that resumed elsewhere keeps the list of its nodes.
            state.node = str(result[NODE_KEY])
            state.nodes.append(state.node)
            state.log.set_tags({"node": state.node, "nodes": ",".join(state.nodes),
                                "node_ip": str(result.get("node_ip", "")), "hostname": str(result.get("hostname", ""))})
        if WARNING_KEY in result:  # checkpoints passed over as torn or damaged
            self._say(f"warning: {state.trial.name} ({state.trial.id}): {result[WARNING_KEY]}")
            if state.log is not None:
                state.log.set_tags({"sweeper.warning": str(result[WARNING_KEY])[:5000]})
        if EVALS_KEY in result:
            self._record_eval(state, TaskOutcome.from_json(result[EVALS_KEY]))
            return
        if "tokens" not in result or state.log is None:
            return
        if RESUMED_KEY in result:
            state.log.set_tags({"sweeper.resumed_at_tokens": int(result[RESUMED_KEY])})
            self._say(f"resumed {state.trial.name} from its checkpoint at {fmt_count(result[RESUMED_KEY])} tokens")
        if BRANCHED_KEY in result:  # its points up to there are its trunk's (SHARED_KEY)
            state.log.set_tags({"sweeper.trunk": state.trial.trunk_id or "",
                                "sweeper.branched_at_tokens": int(result[BRANCHED_KEY])})
            self._say(f"branched {state.trial.name} from its trunk at {fmt_count(result[BRANCHED_KEY])} tokens")
        for tokens, point in result.get(CURVE_KEY) or ():  # the curve up to that checkpoint: points it lacks
            state.log.log({k: v for k, v in point.items() if k in self.metric_names}, int(tokens))
        step = int(result["tokens"])
        state.tokens = step
        if "val/loss" in result:
            state.val_loss = float(result["val/loss"])
        state.log.log({k: v for k, v in result.items() if k in self.metric_names and k != "tokens"}, step)
        self._refresh()

    def _record_eval(self, state: TrialState, outcome: TaskOutcome) -> None:
        """A downstream task the trial's worker evaluated after training: its metrics at the tokens
        the evaluated weights had trained on, then its tag (sweeper.evals.stage), which marks it done;
        a failed task is one line, and the trial stays finished."""
        what = f"{state.trial.name} ({state.trial.id}) {outcome.task}"
        if outcome.failure is not None or outcome.metrics is None or state.log is None:
            self._say(f"{what}: not evaluated, {outcome.failure}")
            return
        state.log.log(outcome.metrics, outcome.tokens)
        state.log.flush()
        state.log.set_tags({f"{EVAL_TAG_PREFIX}{outcome.task}": json.dumps(outcome.how, sort_keys=True)})
        shown = ", ".join(f"{k.rsplit('/', 1)[1]} {v:.4g}" for k, v in outcome.metrics.items() if not k.endswith("_stderr"))
        self._say(f"{what}: {shown or 'no numeric metrics'}")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        state = self._state(trial)
        state.state = "retrying"
        if state.log is not None:
            state.log.flush()
        self._say(f"retrying {state.trial.name} from its last checkpoint")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        state = self._state(trial)
        self._close(state, "killed" if state.state == "storage full" else "failed" if state.reason else "finished")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        state = self._state(trial)
        if state.reason is None and _lost_while_starting(trial):
            self._say(f"{state.trial.name} ({state.trial.id}) lost its worker while starting, which Tune "
                      "does not retry: it ends KILLED, and the next `sweeper run` resumes it")
            self._close(state, "killed")
            return
        state.reason = state.reason or _error_summary(trial)
        self._close(state, "failed")

    # --- bookkeeping ----------------------------------------------------------------------------

    def close_open(self, state_name: str = "killed") -> None:
        """Runs still open when the driver stops (Ctrl-C, `sweeper stop`) end KILLED: resumable."""
        for state in self.states.values():
            if state.log is not None and state.state in ("running", "retrying", "storage full"):
                self._close(state, state_name)

    def _close(self, state: TrialState, outcome: str) -> None:
        state.state = outcome
        if state.log is not None:
            state.log.finish({"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}[outcome],
                             state.reason)
        loss = f", val loss {state.val_loss:.4f}" if state.val_loss is not None else ""
        reason = f": {state.reason}" if state.reason else ""
        self._say(f"{outcome} {state.trial.name} ({state.trial.id}){loss}{reason}")

    def _state(self, trial: Any) -> TrialState:
        return self.states[trial.config["sweeper"]["trial_id"]]

    def counts(self) -> dict[str, int]:
        out = {name: 0 for name in ("pending", "running", "retrying", "storage full", "finished", "failed", "killed")}
        for state in self.states.values():
            out[state.state] += 1
        return out

    # --- display --------------------------------------------------------------------------------

    def __enter__(self) -> SweepCallback:
        if is_terminal():
            self.live = Live(self.view(), console=console, refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.update(self.view())
            self.live.__exit__(*exc)
            self.live = None

    def _say(self, line: str) -> None:
        out = console if self.live is None else self.live.console
        out.print(redact(line), markup=False, highlight=False, soft_wrap=True)  # one line, however long
        self._refresh()

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.view())
        elif time.monotonic() - self.last_plain > PLAIN_LOG_EVERY_S:
            self.last_plain = time.monotonic()
            console.print(self.summary_line())

    def summary_line(self) -> str:
        """Counts by state, then tokens, FLOPs and time done against the plan. Each counts what this run
        trains, as the estimate does: a branch (prefix sharing) whose trunk trains in this run, or whose
        branch point is in `stored`, starts there, so the tokens it takes from the trunk, tokens_shared,
        are neither planned nor done here, and its time is its own part's; any other trains from step 0,
        as does one the driver started without its branch point (its trunk failed before it)."""
        counts = self.counts()
        done_tokens = planned_tokens = 0
        done_flops = planned_flops = done_s = planned_s = 0.0
        for s in self.states.values():
            trial = s.trial
            branched = not s.from_step_zero and starts_at_branch_point(trial, self.trials, self.stored)
            shared = trial.tokens_shared if branched else 0
            own = trial.tokens - shared
            done = own if s.state == "finished" else min(max(s.tokens - shared, 0), own)
            done_tokens, planned_tokens = done_tokens + done, planned_tokens + own
            done_flops += training_flops(trial.num_params, done)
            planned_flops += training_flops(trial.num_params, own)
            seconds = trial.branch_wall_seconds if branched else trial.wall_seconds
            planned_s += seconds
            done_s += seconds * done / own if own else 0.0
        planned_tokens = planned_tokens or 1
        states = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        elapsed = time.monotonic() - self.started
        return (f"{states} · tokens {fmt_count(done_tokens)}/{fmt_count(planned_tokens)} "
                f"({done_tokens / planned_tokens:.0%}) · FLOPs {fmt_sci(done_flops or 0)}/{fmt_sci(planned_flops)} · "
                f"{fmt_duration(elapsed)} elapsed, {time_left(elapsed, done_s, planned_s, self.estimate_s)}")

    def view(self) -> Table:
        table = Table(title=self.summary_line(), title_justify="left", header_style="bold")
        for column in ("trial", "id", "state", "tokens", "val loss"):
            table.add_column(column, no_wrap=True)
        active = [s for s in self.states.values() if s.state in ("running", "retrying")]
        for state in active[:16]:
            progress = f"{fmt_count(state.tokens)}/{fmt_count(state.trial.tokens)}"
            loss = f"{state.val_loss:.4f}" if state.val_loss is not None else ""
            table.add_row(state.trial.name, state.trial.id, state.state, progress, loss)
        return table


def _lost_while_starting(trial: Any) -> bool:
    """Whether Tune ended the trial, retries left, because its worker process died while the trial
    was starting or restarting. Tune retries a failure only while the trial runs; one that comes
    while it is pending ends it (ray.tune's TuneController._process_trial_failure), however many
    retries the profile allows."""
    from ray import cloudpickle
    from ray.exceptions import RayActorError

    if not trial.should_recover() or not trial.pickled_error_file:
        return False
    try:
        with open(trial.pickled_error_file, "rb") as file:
            error = cloudpickle.load(file)
    except (OSError, EOFError, AttributeError, ImportError, pickle.UnpicklingError):
        return False
    return isinstance(error, RayActorError)


def _error_summary(trial: Any) -> str:
    """The last line of the trial's error file: the exception that ended it."""
    path = getattr(trial, "error_file", None)
    try:
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()] if path else []
    except OSError:
        lines = []
    return lines[-1].strip()[:1000] if lines else "the trial's worker failed"
