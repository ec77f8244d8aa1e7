"""MLflow as the system of record: one parent run per sweep, one child run per trial.

A trial's run is found again by its `sweeper.trial_id` tag, so a resumed or retried trial keeps
writing the same run. Curves use step = tokens seen. Points are buffered and sent with
`log_batch`, together with a tag holding the last step written per metric. A continued run reads
the last step of each curve itself (the SQL store commits a batch's points before its tag, so a
crash between the two leaves the tag behind), and drops every point at or before it, so no step is
ever logged twice. Only the driver writes (trials report to it), so a sqlite store never sees two
writers. MLflow is imported inside this module's functions only.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.console import redact
from sweeper.spec.schema import plain
from sweeper.tracking.store import artifact_location, creating, schema_errors
from sweeper.tracking.store import check_reachable as check_reachable  # where callers have always found it

TAG_KIND = "sweeper.kind"  # "sweep" (parent) or "trial" (child)
TAG_SWEEP = "sweeper.sweep"
TAG_TRIAL = "sweeper.trial_id"
TAG_LAST_STEPS = "sweeper.last_steps"  # {"val/loss": 123456, ...}
TAG_FAILURE = "sweeper.failure"
TAG_SCHEMA = "sweeper.id_schema"  # the recipe version (sweeper.plan.ID_SCHEMA) a trial run trained under
OLDEST_SCHEMA = "sweeper.trial/1"  # what a trial run without TAG_SCHEMA trained under
TAG_PARENT = "mlflow.parentRunId"
TAG_SUPERSEDED = "sweeper.superseded_by"  # on a trial's run that `--rerun` replaced: the new run's id
TAG_SUPERSEDES = "sweeper.supersedes"  # on the new run: the ids it replaced, comma-separated
FLUSH_POINTS = 500  # below log_batch's 1000-metric limit
FLUSH_SECONDS = 10.0
FINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
# Curves are read 100 runs at a time, at most 25,000 points per answer: a server's limits for its
# bulk-history endpoint (the one its UI charts many runs with).
BULK_RUNS = 100
BULK_POINTS = 25_000
BULK_ENDPOINT = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialRecord:
    """What the store holds for one trial."""

    trial_id: str
    run_id: str
    status: str  # RUNNING, FINISHED, FAILED, KILLED
    tags: Mapping[str, str]
    metrics: Mapping[str, float]  # latest value of each metric
    last_steps: Mapping[str, int]

    @property
    def failure(self) -> str | None:
        return self.tags.get(TAG_FAILURE)


class Tracking:
    """One experiment of one tracking store."""

    def __init__(self, tracking_uri: str, experiment: str, *, create: bool = True):
        """`create` False: only read; an experiment that does not exist holds no runs. Processes that
        open one sqlite store at once create its tables and the experiment once, in turn
        (sweeper.tracking.store.creating). Raises UserError for a store of another MLflow version's schema
        (sweeper.tracking.store.schema_errors), else what MLflow raises for a store it cannot open."""
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "creating tables" chatter
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # our own lines say it
        self.tracking_uri, self.experiment = tracking_uri, experiment
        with creating(tracking_uri), schema_errors(tracking_uri):
            self.client = MlflowClient(tracking_uri=tracking_uri)  # creates a sqlite store's tables
            found = self.client.get_experiment_by_name(experiment)
            if found is None and create:
                self._create_experiment()
                found = self.client.get_experiment_by_name(experiment)
        self.experiment_id: str | None = found.experiment_id if found else None
        self.experiment_created: int | None = found.creation_time if found else None

    def _create_experiment(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_experiment(self.experiment, artifact_location=artifact_location(self.tracking_uri))
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":  # made a moment ago through a server
                raise

    # --- reading --------------------------------------------------------------------------------

    def run(self, run_id: str) -> Any | None:
        """One run of this experiment by its id, or None."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        return run if run.info.experiment_id == self.experiment_id else None

    def trial_records(self, trial_ids: Iterable[str] | None = None) -> dict[str, TrialRecord]:
        """Every trial run of the experiment (or of `trial_ids`), superseded runs (replaced by
        `--rerun`) left out. Where a trial has several runs, a FINISHED one wins, then the most recent.
        One trial is asked for alone, so opening a trial costs the same however many runs there are;
        more are read through the local cache of ended runs (sweeper.tracking.cache)."""
        from sweeper.tracking.cache import cache_file, read_rows, row

        wanted = set(trial_ids) if trial_ids is not None else None
        if self.experiment_id is None:
            return {}
        if wanted is not None and len(wanted) == 1:
            query = f"tags.`{TAG_KIND}` = 'trial' and tags.`{TAG_TRIAL}` = '{next(iter(wanted))}'"
            rows = [row(run) for run in self._search(query)]
        else:
            rows = read_rows(cache_file(self.tracking_uri, self.experiment_id, self.experiment_created),
                             search=lambda query, deleted: self._search(query, deleted=deleted),
                             keep=lambda run: run.data.tags.get(TAG_KIND) == "trial", get=self.run)
        replaced = {old for r in rows for old in r["tags"].get(TAG_SUPERSEDES, "").split(",") if old}
        records: dict[str, tuple[tuple[bool, int], TrialRecord]] = {}
        for r in rows:
            trial_id = r["tags"].get(TAG_TRIAL, "")
            if (wanted is not None and trial_id not in wanted) or TAG_SUPERSEDED in r["tags"] \
                    or r["run_id"] in replaced:
                continue
            record = _record(r)
            rank = (record.status == "FINISHED", r["start_time"])
            if trial_id not in records or rank > records[trial_id][0]:
                records[trial_id] = (rank, record)
        return {trial_id: record for trial_id, (_, record) in records.items()}

    def trial_states(self, trial_ids: Iterable[str]) -> dict[str, str]:
        """Each trial's state in the store (FINISHED, FAILED, KILLED, RUNNING); trials without a run
        are left out."""
        return {trial_id: record.status for trial_id, record in self.trial_records(trial_ids).items()}

    def finished_ids(self) -> set[str]:
        return {t for t, r in self.trial_records().items() if r.status == "FINISHED"}

    def sweep_run_id(self, sweep: str) -> str | None:
        """The sweep's parent run, or None when the sweep never ran; unlike `sweep_run`, this
        neither creates nor reopens it."""
        for run in self._search(f"tags.`{TAG_KIND}` = 'sweep' and tags.`{TAG_SWEEP}` = '{sweep}'"):
            return run.info.run_id
        return None

    def curves(self, run_ids: Iterable[str], key: str) -> dict[str, list[tuple[int, float]]]:
        """Each run's curve of metric `key` as (step, value), ascending by step; a run without
        that metric is left out. Read 100 runs per request where the store can (a SQL store's bulk
        query; a server's bulk-history endpoint, the one its UI charts with), else one run per request."""
        from concurrent.futures import ThreadPoolExecutor

        ids = list(dict.fromkeys(run_ids))
        chunks = [ids[i:i + BULK_RUNS] for i in range(0, len(ids), BULK_RUNS)]
        workers = 4 if self.tracking_uri.startswith(("http://", "https://")) else 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            found: dict[str, list[tuple[int, float]]] = {}
            for part in pool.map(lambda chunk: self._curves_of(chunk, key), chunks):
                found.update(part)
        return {run_id: points for run_id, points in found.items() if points}

    def _curves_of(self, run_ids: list[str], key: str) -> dict[str, list[tuple[int, float]]]:
        points: dict[str, list[tuple[int, int, float]]] = {run_id: [] for run_id in run_ids}
        bulk = self._bulk_history(run_ids, key)
        if bulk is None:  # the store has no bulk read, or the chunk's curves were too long for one answer
            for run_id in run_ids:
                points[run_id] = [(m.timestamp, m.step, m.value) for m in self.client.get_metric_history(run_id, key)]
        else:
            for run_id, timestamp, step, value in bulk:
                if run_id in points:
                    points[run_id].append((timestamp, step, value))
        # A step logged twice (a retried flush): the later value wins.
        return {run_id: sorted({int(s): float(v) for _, s, v in sorted(rows, key=lambda r: r[0])}.items())
                for run_id, rows in points.items()}

    def _bulk_history(self, run_ids: list[str], key: str) -> list[tuple[str, int, int, float]] | None:
        """(run_id, timestamp, step, value) of every point of `key` in these runs in one request, or
        None where the store cannot answer so (or the answer hit its limit and may be cut short)."""
        store = self.client._tracking_client.store  # MLflow's client exposes no bulk read of its own
        try:
            if hasattr(store, "get_metric_history_bulk"):  # a SQL store
                rows = [(m.run_id, m.timestamp, m.step, m.value)
                        for m in store.get_metric_history_bulk(run_ids, key, BULK_POINTS)]
            elif hasattr(store, "get_host_creds"):  # a server
                from mlflow.utils.rest_utils import http_request

                response = http_request(store.get_host_creds(), BULK_ENDPOINT, "GET",
                                        params={"run_id": run_ids, "metric_key": key, "max_results": BULK_POINTS})
                if response.status_code != 200:
                    return None
                rows = [(m["run_id"], int(m.get("timestamp", 0)), int(m.get("step", 0)), float(m["value"]))
                        for m in response.json().get("metrics", [])]
            else:
                return None
        except Exception:  # noqa: BLE001 (an older server without the endpoint: read run by run)
            return None
        return None if len(rows) >= BULK_POINTS else rows

    def _search(self, filter_string: str, *, deleted: bool = False) -> Iterable[Any]:
        from mlflow.entities import ViewType

        if self.experiment_id is None:
            return
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=1000,
                                           page_token=token,
                                           run_view_type=ViewType.DELETED_ONLY if deleted else ViewType.ACTIVE_ONLY)
            yield from page
            token = page.token
            if not token:
                return

    # --- writing --------------------------------------------------------------------------------

    def sweep_run(self, sweep: str, *, spec_texts: Mapping[str, str], plan: Mapping[str, Any]) -> str:
        """The sweep's parent run (reused when the sweep runs again), with the spec files and the
        resolved plan as artifacts."""
        existing = list(self._search(f"tags.`{TAG_KIND}` = 'sweep' and tags.`{TAG_SWEEP}` = '{sweep}'"))
        if existing:
            run_id = existing[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(self.experiment_id, run_name=f"sweep {sweep}",
                                         tags={TAG_KIND: "sweep", TAG_SWEEP: sweep, **provenance()})
            run_id = run.info.run_id
        for name, text in spec_texts.items():
            self.client.log_text(run_id, text, f"spec/{Path(name).name}")
        self.client.log_text(run_id, json.dumps(plan, indent=2), "plan.json")
        return run_id

    def open_trial(self, *, trial_id: str, run_name: str, parent_run_id: str, tags: Mapping[str, Any],
                   params: Mapping[str, Any], fresh: bool = False) -> TrialLog:
        """The trial's run: the existing one (continued, RUNNING again) or a new child of the sweep.
        `fresh` (`--rerun`): always a new run; the trial's earlier runs stay, tagged superseded by it."""
        existing = self.trial_records([trial_id]).get(trial_id)
        if existing is not None and not fresh:
            self.client.update_run(existing.run_id, status="RUNNING")
            if TAG_FAILURE in existing.tags:  # an earlier attempt's reason; this one may well finish
                self.client.delete_tag(existing.run_id, TAG_FAILURE)
            return TrialLog(self.client, existing.run_id, self._written_steps(existing))
        all_tags = {TAG_KIND: "trial", TAG_TRIAL: trial_id, TAG_PARENT: parent_run_id,
                    **{k: str(v) for k, v in tags.items()}}
        if fresh:  # the new run names the runs it replaces, so a reader's cache of ended runs drops them
            earlier = [old.info.run_id for old in self._search(
                f"tags.`{TAG_KIND}` = 'trial' and tags.`{TAG_TRIAL}` = '{trial_id}'")]
            if earlier:
                all_tags[TAG_SUPERSEDES] = ",".join(earlier)
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        _log_params(self.client, run.info.run_id, params)
        if fresh:
            for old_id in earlier:  # for the UI and any other reader
                self.client.set_tag(old_id, TAG_SUPERSEDED, run.info.run_id)
        return TrialLog(self.client, run.info.run_id, {})

    def _written_steps(self, record: TrialRecord) -> dict[str, int]:
        """The last step written per metric of a run being continued, read from its curves (one
        metric history per key), not from TAG_LAST_STEPS: that tag goes in the same `log_batch` as
        the points, but MLflow's SQL store commits the points first and the tag after, so a driver
        killed between the two leaves points the tag does not count; written again, they would be
        duplicates."""
        steps = {}
        for key in record.metrics:
            history = self.client.get_metric_history(record.run_id, key)
            if history:
                steps[key] = max(int(m.step) for m in history)
        return steps

    def finish_sweep(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status=status)

    def log_summary(self, run_id: str, *, metrics: Mapping[str, float], tags: Mapping[str, str],
                    texts: Mapping[str, str] | None = None,
                    files: Iterable[tuple[Path, str]] = ()) -> None:
        """Results about a run that is already there (a sweep's fit): metrics at step 0 and tags in
        one batch (at most 1000 metrics), text artifacts by name, and (local file, artifact folder)
        pairs. Logging again adds newer values, which the UI shows, and replaces same-named files."""
        from mlflow.entities import Metric, RunTag

        now_ms = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(key=k, value=float(v), timestamp=now_ms, step=0)
                                               for k, v in metrics.items()],
                              tags=[RunTag(k, str(v)) for k, v in tags.items()])
        for name, text in (texts or {}).items():
            self.client.log_text(run_id, text, name)
        for path, folder in files:
            self.client.log_artifact(run_id, str(path), artifact_path=folder or None)


class TrialLog:
    """Buffered, resume-safe writing of one trial's curves."""

    def __init__(self, client: Any, run_id: str, last_steps: dict[str, int]):
        self.client, self.run_id = client, run_id
        self.last_steps = last_steps
        self.buffer: list[Any] = []
        self.flushed_at = time.monotonic()

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        for key, value in metrics.items():
            if step <= self.last_steps.get(key, -1):
                continue  # already written before a crash or a retry
            self.buffer.append(Metric(key=key, value=float(value), timestamp=now_ms, step=int(step)))
            self.last_steps[key] = int(step)
        if len(self.buffer) >= FLUSH_POINTS or time.monotonic() - self.flushed_at > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        from mlflow.entities import RunTag

        if self.buffer:
            steps = RunTag(TAG_LAST_STEPS, json.dumps(self.last_steps, sort_keys=True))
            self.client.log_batch(self.run_id, metrics=self.buffer, tags=[steps])
            self.buffer = []
        self.flushed_at = time.monotonic()

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def finish(self, status: str, reason: str | None = None) -> None:
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {FINAL_STATUSES}, got {status}")
        self.flush()
        if reason:
            self.set_tags({TAG_FAILURE: redact(reason)[:5000]})
        self.client.set_terminated(self.run_id, status=status)


def _record(row: Mapping[str, Any]) -> TrialRecord:
    tags = dict(row["tags"])
    return TrialRecord(trial_id=tags.get(TAG_TRIAL, ""), run_id=row["run_id"], status=row["status"],
                       tags=tags, metrics=dict(row["metrics"]),
                       last_steps={k: int(v) for k, v in json.loads(tags.get(TAG_LAST_STEPS, "{}")).items()})


def _log_params(client: Any, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):  # log_batch takes at most 100 params
        client.log_batch(run_id, params=items[start:start + 100])


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A config as flat `a.b.c` keys, for MLflow params: the spec's plain data, its mappings dotted."""
    return _dotted(plain(value), prefix)


def _dotted(value: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, child in value.items():
        out.update(_dotted(child, f"{prefix}.{key}" if prefix else str(key)))
    return out


def provenance() -> dict[str, str]:
    """Versions and the source commit, so a curve can be traced to the code that made it."""
    tags = {}
    for package in ("sweeper", "torch", "ray", "mlflow"):
        try:
            tags[f"sweeper.version.{package}"] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent)
        if commit.returncode == 0:
            tags["sweeper.git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return tags
