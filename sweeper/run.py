"""The driver: preflight, dedupe, data, then Ray Tune over the trials still to train.

Order matters for a user's trust: everything that can fail on their input (spec, profile, MLflow,
storage, data) is checked before Ray starts, and trials that MLflow holds as FINISHED are left
out before Ray starts too, so a finished sweep answers "nothing to train" in seconds. Tune runs
the remaining trials as an explicit list (the planner owns expansion), each with its planned
resources, under the profile's concurrency; its storage keeps checkpoints under
`{storage}/{experiment folder}/{trial_id}/` so any later run resumes them (see sweeper.worker). The
experiment folder is the experiment's name when that is a safe folder name (every name today's
validator accepts), else a safe form of it (`experiment_folder`), so no name reaches outside storage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.console import UserError, console
from sweeper.plan import Plan, Trial
from sweeper.profile import Profile, resolve_env
from sweeper.spec import SweepSpec
from sweeper.tracking import Tracking, check_reachable
from sweeper.units import fmt_duration

DRIVER_FILE = "driver.json"  # who is running this sweep, for `sweeper stop`
STOP_FILE = "stop-requested"  # in storage: asks a driver anywhere (a cluster's job) to stop cleanly
STOP_POLL_S = 3.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """Which planned trials this run trains, and why the others are left out."""

    to_run: tuple[Trial, ...]
    finished: tuple[Trial, ...]
    failed: tuple[tuple[Trial, str], ...]  # left out: FAILED before, no --retry-failed

    def summary(self, total: int) -> str:
        parts = [f"{len(self.finished)} finished"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed before (skipped; --retry-failed runs them again)")
        parts.append(f"{len(self.to_run)} to run")
        return f"{total} trials: " + ", ".join(parts)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.+=@,-]+")
MAX_FOLDER_BYTES = 255


def experiment_folder(experiment: str) -> str:
    """The sweep's folder under storage: the experiment's name when it is one safe folder name (so
    existing checkpoints are found where they are), else a readable slug of it and a hash of the
    whole name: never a separator, '.', '..', a control character or an edge space, at most 255 bytes."""
    safe = (experiment not in ("", ".", "..") and "/" not in experiment and "\\" not in experiment
            and experiment.isprintable() and experiment == experiment.strip()
            and len(experiment.encode()) <= MAX_FOLDER_BYTES)
    if safe:
        return experiment
    slug = _UNSAFE.sub("-", experiment).strip("-.")[:100] or "experiment"
    return f"{slug}-{hashlib.sha256(experiment.encode()).hexdigest()[:12]}"


def sweep_dir(root: str, experiment: str) -> str:
    return f"{root}/{experiment_folder(experiment)}"


def trial_dir(root: str, experiment: str, trial_id: str) -> str:
    return f"{sweep_dir(root, experiment)}/{trial_id}"


def storage_root(profile: Profile) -> str:
    """The profile's storage as a URI Ray and pyarrow understand (absolute path or s3://)."""
    path = resolve_env(profile.storage.path, f"{profile.file} storage.path")
    if "://" in path:
        return path.rstrip("/")
    return str(Path(path).expanduser().resolve())


def storage_endpoint(profile: Profile) -> str | None:
    """The S3-compatible endpoint of the profile's storage, as the data layer resolves it."""
    from sweeper.data.storage import StorageLocation

    return StorageLocation.from_profile(profile).endpoint


def tracking_uri(profile: Profile) -> str:
    return resolve_env(profile.mlflow.tracking_uri, f"{profile.file} mlflow.tracking_uri")


def select_to_run(plan: Plan, tracking: Tracking, *, rerun: Sequence[str], retry_failed: bool,
           trials: Sequence[Trial]) -> Selection:
    unknown = [i for i in rerun if i not in {t.id for t in plan.trials}]
    if unknown:
        raise UserError(f"--rerun {unknown[0]}: no trial with this id in the plan of {plan.spec_name}")
    records = tracking.trial_records([t.id for t in trials])
    to_run, finished, failed = [], [], []
    for trial in trials:
        record = records.get(trial.id)
        status = record.status if record else None
        if trial.id in rerun:
            to_run.append(trial)
        elif status == "FINISHED":
            finished.append(trial)
        elif status == "FAILED" and not retry_failed:
            failed.append((trial, record.failure or "no reason recorded"))  # type: ignore[union-attr]
        else:
            to_run.append(trial)
    return Selection(to_run=tuple(to_run), finished=tuple(finished), failed=tuple(failed))


def preflight_storage(root: str, endpoint: str | None = None, where: str = "storage.path") -> None:
    """Storage is writable: a probe file written and removed (for S3: bucket, credentials, endpoint)."""
    if root.startswith("s3://"):
        from botocore.exceptions import ClientError

        from sweeper.data.errors import DataError
        from sweeper.data.storage import s3_client, s3_errors, split_s3

        bucket, prefix = split_s3(root)
        key = f"{prefix.strip('/')}/.write-probe-{os.getpid()}".lstrip("/")
        with s3_errors(where, root, endpoint, endpoint_key=where.replace("path", "endpoint")):
            client = s3_client(endpoint)
            try:  # first, as some S3-compatible stores create a missing bucket on a put
                client.head_bucket(Bucket=bucket)
            except ClientError as error:
                if str(error.response.get("Error", {}).get("Code")) in ("404", "NoSuchBucket", "NotFound"):
                    raise DataError(where, f"there is no bucket '{bucket}' at {endpoint or 'AWS S3'}") from None
                raise
            client.put_object(Bucket=bucket, Key=key, Body=b"ok")
            client.delete_object(Bucket=bucket, Key=key)
        return
    if "://" in root:
        raise UserError(f"{where}: {root} is neither a folder nor s3://bucket/prefix")
    folder = Path(root)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise UserError(f"storage {root} is not writable ({error.strerror})") from None


def run_sweep(spec: SweepSpec, plan: Plan, profile: Profile, *, trials: Sequence[Trial], rerun: Sequence[str] = (),
              retry_failed: bool = False, max_device_hours: float | None = None, in_cluster: bool = False) -> int:
    """Train what is left of the sweep. `in_cluster`: this process is the sweep's Ray Job on a
    cluster (see sweeper.cluster), so Ray is the cluster this job runs in."""
    checked = _preflight(spec, plan, profile, trials=trials, rerun=rerun, retry_failed=retry_failed,
                         max_device_hours=max_device_hours)
    if isinstance(checked, int):
        return checked
    tracking, selection, root, estimate_s = checked
    data = prepare_data(spec, [t.unique_tokens for t in trials], profile)
    plan_json = _plan_json(spec, plan)
    parent = tracking.sweep_run(spec.name, spec_texts={f: Path(f).read_text() for f in spec.files}, plan=plan_json)
    fresh = frozenset(t.id for t in selection.to_run if t.id in rerun)
    if fresh:
        forget_checkpoints(root, spec.experiment, fresh, storage_endpoint(profile))
        console.print(f"--rerun: {len(fresh)} trial{'s train' if len(fresh) > 1 else ' trains'} from step 0 into a new "
                      "run; earlier runs stay in MLflow, tagged superseded")
    return _tune(spec, profile, selection, tracking, parent, data, root, estimate_s, in_cluster=in_cluster,
                 fresh=fresh)


def forget_checkpoints(root: str, experiment: str, trial_ids: Sequence[str] | frozenset[str],
                       endpoint: str | None) -> None:
    """Remove the trials' folders from storage, so `--rerun` trains them from step 0 and nothing,
    now or after a crash, resumes from a checkpoint of the runs they replace."""
    import pyarrow.fs

    from sweeper.storage import filesystem_for

    for trial_id in trial_ids:
        filesystem, path = filesystem_for(trial_dir(root, experiment, trial_id), endpoint)
        if filesystem.get_file_info(path).type == pyarrow.fs.FileType.Directory:
            filesystem.delete_dir(path)


def submit_sweep(spec: SweepSpec, plan: Plan, profile: Profile, *, trials: Sequence[Trial], rerun: Sequence[str] = (),
                 retry_failed: bool = False, max_device_hours: float | None = None, passthrough: Sequence[str] = (),
                 follow: bool = True) -> int:
    """`--cluster`: the same checks from here, then the driver goes to the cluster as a Ray Job."""
    from sweeper import cluster

    cluster.job_client(cluster.cluster_address(profile))  # reachable, and the token is accepted
    path = resolve_env(profile.storage.path, f"{profile.file} storage.path")
    if "://" not in path and not Path(path).is_absolute():
        raise UserError(f"{profile.file} storage.path: {path!r} is a folder on this machine; the cluster's nodes need "
                        "s3://bucket/prefix or an absolute path on a disk they all mount")
    checked = _preflight(spec, plan, profile, trials=trials, rerun=rerun, retry_failed=retry_failed,
                         max_device_hours=max_device_hours)
    if isinstance(checked, int):
        return checked
    return cluster.submit(spec, profile, passthrough=passthrough, follow=follow)


def _preflight(spec: SweepSpec, plan: Plan, profile: Profile, *, trials: Sequence[Trial], rerun: Sequence[str],
               retry_failed: bool, max_device_hours: float | None) -> tuple[Tracking, Selection, str, float] | int:
    """Everything that can fail on the user's input, before anything trains; then what is left
    to train. An int is the exit code when nothing is."""
    uri = tracking_uri(profile)
    check_reachable(uri)
    root = storage_root(profile)
    preflight_storage(root, storage_endpoint(profile), f"{profile.file} storage.path")
    tracking = Tracking(uri, spec.experiment)
    selection = select_to_run(plan, tracking, rerun=rerun, retry_failed=retry_failed, trials=trials)
    console.print(selection.summary(len(trials)))
    if not selection.to_run:
        console.print("nothing to train" + (f"; `sweeper results {spec.file}` lists them" if selection.finished else ""))
        return 0 if not selection.failed else 1
    device_hours = sum(t.device_seconds for t in selection.to_run) / 3600
    if max_device_hours is not None and device_hours > max_device_hours:
        raise UserError(f"the {len(selection.to_run)} trials to run need an estimated {device_hours:,.2f} "
                        f"device-hours, more than --max-device-hours {max_device_hours:g}")
    concurrent = max_concurrent_trials(profile, selection.to_run)
    estimate_s = _makespan(plan, selection.to_run, concurrent)
    console.print(f"estimated {fmt_duration(estimate_s)} on {profile.name} ({profile.hardware.name}, "
                  f"{concurrent} concurrent; {profile.hardware.assumption()})")
    _bf16_hint(profile, selection.to_run)
    return tracking, selection, root, estimate_s


def _bf16_hint(profile: Profile, to_run: Sequence[Trial]) -> None:
    """One line when bf16 trials are about to train on this machine's CPU and a bf16 matmul is
    slower than fp32 here (no bf16 instructions): the estimate above assumes the CPU's fp32 speed."""
    bf16 = sum(1 for t in to_run if t.train.precision == "bf16")
    if not bf16 or profile.hardware.accelerator != "cpu" or profile.ray.address != "embedded":
        return
    from sweeper.trainer.precision import bf16_matmul_speed_ratio

    ratio = bf16_matmul_speed_ratio()
    if ratio < 1.0:
        console.print(f"note: a bf16 matmul runs at {ratio:.2f}x the speed of fp32 on this CPU, so the {bf16} "
                      "bf16 trials will take longer than estimated; `precision: fp32` trains faster here "
                      "(it is part of the trial ids)")


@dataclass(frozen=True, slots=True, kw_only=True)
class PreparedData:
    location: Any  # what a worker opens its pool from (the data manifest)
    tags: dict[str, str]  # for every trial's MLflow run


def prepare_data(spec: SweepSpec, unique_tokens: Sequence[int], profile: Profile) -> PreparedData:
    from sweeper.console import console as out
    from sweeper.data import StorageLocation
    from sweeper.data.command import prepare_with_progress

    prepared = prepare_with_progress(spec, unique_tokens, StorageLocation.from_profile(profile), console=out)
    manifest = prepared.manifest
    tags = {"sweeper.sweep": spec.name, "data.cache": manifest.uri, "data.key": manifest.key,
            "data.tokenizer_fingerprint": manifest.tokenizer.fingerprint}
    tags.update({f"pool.{pool.unique_tokens}": str(pool.tokens) for pool in manifest.pools})
    return PreparedData(location=manifest, tags=tags)


def _tune(spec: SweepSpec, profile: Profile, selection: Selection, tracking: Tracking, parent: str, data: Any,
          root: str, estimate_s: float, *, in_cluster: bool, fresh: frozenset[str] = frozenset()) -> int:
    import torch  # noqa: F401  (torch before Ray: Ray first can break torch's oneMKL loading)

    # Our own view and MLflow replace Tune's console reporter and its TensorBoard and CSV files;
    # its result.json per trial stays (added below), for Tune's own bookkeeping and for debugging.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Many short trials finishing together trip Tune's checkpoint-sync warning; it is harmless here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if profile.ray.address == "embedded" and not in_cluster:
        # In-process and bound to loopback: Ray's token auth guards nothing here. Set before Ray is
        # imported, which reads it once: a shell with RAY_AUTH_MODE=token (say, one that sourced a
        # cluster's env.sh) would otherwise leave this driver and its workers disagreeing.
        os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from sweeper.progress import SweepCallback
    from sweeper.trainer import METRICS
    from sweeper.worker import build_trial_config, run_trial

    from sweeper.storage import filesystem_for

    hardware = profile.hardware
    device = "cpu" if hardware.accelerator == "cpu" else "auto"
    endpoint = storage_endpoint(profile)
    payloads = [{
        "trial_config": build_trial_config(t, vocab_size=spec.vocab_size, device=device,
                                           peak_flops=hardware.peak_flops),
        **trial_resources(t),
        "data": data.location,
        "trial_dir": trial_dir(root, spec.experiment, t.id),
        "storage_endpoint": endpoint,
    } for t in selection.to_run]
    spans_devices = any(t.sizing.devices > 1 for t in selection.to_run)

    address = profile.ray.address
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if in_cluster:
        ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), **quiet)  # the job's own cluster
    elif address == "embedded":
        # On CPUs the trial slots are all the CPUs Ray sees, plus one for the Train drivers of trials
        # over several processes (TRAIN_DRIVER_RESOURCES each): workers take whole CPUs, and with a
        # driver running that extra CPU is never whole, so the workers still get exactly the slots.
        cpus = hardware.devices_per_node * hardware.cpus_per_trial + (1 if spans_devices else 0)
        ray.init(address="local", include_dashboard=False, **quiet,
                 num_cpus=cpus if hardware.accelerator == "cpu" else None)
    else:
        ray.init(address=resolve_env(address, f"{profile.file} ray.address"), **quiet)

    # Tune takes S3 storage as a filesystem (which knows the endpoint) and a path without s3://.
    filesystem, storage_path = filesystem_for(root, endpoint) if root.startswith("s3://") else (None, root)
    trainable = tune.with_resources(run_trial, lambda config: tune.PlacementGroupFactory(
        [config["sweeper"]["resources"]]))
    callback = SweepCallback(tracking=tracking, parent_run_id=parent,
                             trials={t.id: t for t in selection.to_run}, extra_tags=data.tags,
                             metric_names=frozenset(METRICS), estimate_s=estimate_s, fresh=fresh)
    tuner = tune.Tuner(
        trainable,
        param_space={"sweeper": tune.grid_search(payloads)},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent_trials(profile, selection.to_run),
                                    # A new worker process per trial costs ~3.5 s (actor start, imports):
                                    # 12% of a 30 s trial (benchmarks/ray_overhead.py). Trials with the
                                    # same resources run in one process in turn (run_trial starts clean).
                                    reuse_actors=True,
                                    trial_name_creator=lambda t: t.config["sweeper"]["trial_config"]["trial_id"],
                                    trial_dirname_creator=lambda t: t.config["sweeper"]["trial_config"]["trial_id"]),
        run_config=tune.RunConfig(name=experiment_folder(spec.experiment), storage_path=storage_path, storage_filesystem=filesystem,
                                  verbose=0,
                                  callbacks=[callback, JsonLoggerCallback()],
                                  failure_config=tune.FailureConfig(max_failures=profile.retries),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                  progress_reporter=None),
    )
    # Tune's own farewell on Ctrl-C or `sweeper stop` ("Resume experiment with: Tuner.restore(...)")
    # is not how a sweep resumes; _report says how.
    logging.getLogger("ray.tune.tune").addFilter(_drop_tune_resume_hint)
    driver_file = _claim(root, spec.experiment)
    watcher = StopWatcher(f"{sweep_dir(root, spec.experiment)}/{STOP_FILE}", endpoint)
    status = "FINISHED"
    try:
        with callback, watcher:
            tuner.fit()
    except KeyboardInterrupt:
        status = "KILLED"
    finally:
        callback.close_open("killed")
        driver_file.unlink(missing_ok=True)
        ray.shutdown()
    counts = callback.counts()
    if counts["killed"] or counts["pending"]:
        status = "KILLED"
    elif counts["failed"]:
        status = "FAILED"
    tracking.finish_sweep(parent, status)
    return _report(callback, status)


TUNE_RESUME_HINTS = ("Tuner.restore", "Resume experiment with", "Resume training with", "Stop signal received",
                     "Trials did not complete")


def _drop_tune_resume_hint(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(hint in message for hint in TUNE_RESUME_HINTS)


# What the Tune trial of a trial over several devices reserves: it only drives the trial's Ray Train
# run, whose workers reserve the devices and CPUs themselves, so nothing is counted twice. Tune needs
# some resource to place a trial; a hundredth of a CPU leaves the workers all but nothing to wait for.
TRAIN_DRIVER_RESOURCES = {"CPU": 0.01}


def trial_resources(trial: Trial) -> dict[str, Any]:
    """The payload keys that say where a trial runs: Tune's reservation, and for a trial over several
    devices its Ray Train workers, each with an equal part of the trial's resources (a GPU each)."""
    resources, workers = dict(trial.sizing.resources), trial.sizing.devices
    if workers == 1:
        return {"resources": resources, "workers": 1, "threads": resources.get("CPU", 1)}
    per_worker = {name: amount / workers for name, amount in resources.items()}
    return {"resources": dict(TRAIN_DRIVER_RESOURCES), "workers": workers, "worker_resources": per_worker,
            "threads": per_worker.get("CPU", 1)}


def max_concurrent_trials(profile: Profile, trials: Sequence[Trial]) -> int:
    """How many trials Tune runs at once: the profile's concurrency, and for sweeps with trials over
    several devices at most as many as the devices hold.

    A trial on one device (or a share of one) reserves it in its own Tune placement group, so Tune's
    accounting already keeps those within the hardware. A trial over several devices reserves almost
    nothing in Tune (TRAIN_DRIVER_RESOURCES), while Ray Train reserves all its workers at once or
    none, so no trial ever holds devices while it waits for more (no deadlock); but Tune would start
    more such trials than the devices hold, each then idling until its workers fit. So the cap is
    also the number of trials that fit on all the devices together when each holds what the
    narrowest trial holds (devices x share): exact when the trials are alike (every trial of a CPU
    profile with processes_per_trial), and never below what the single-device trials of a mixed
    sweep can use, whose wider trials then wait in Train without holding anything.
    """
    if not any(t.sizing.devices > 1 for t in trials):
        return profile.concurrency
    narrowest = min(t.sizing.devices * t.sizing.device_share for t in trials)
    return max(1, min(profile.concurrency, int(profile.hardware.total_devices // narrowest)))


def _report(callback: Any, status: str) -> int:
    from rich.markup import escape

    counts = callback.counts()
    console.print(callback.summary_line())
    failed = [s for s in callback.states.values() if s.state == "failed"]
    for state in failed:
        console.print(f"[red]failed[/] {state.trial.name} ({state.trial.id}): {escape(str(state.reason))}")
    if status == "KILLED":
        console.print(f"stopped: {counts['killed'] + counts['pending']} trials not finished; "
                      "run the same command again to resume them from their checkpoints")
    return 0 if status == "FINISHED" else 1


def _driver_file(root: str, experiment: str) -> Path:
    """Where a running driver records itself: beside the sweep's storage, or this machine's cache for s3://."""
    name = experiment_folder(experiment)
    folder = Path(root) / name if "://" not in root else Path.home() / ".cache" / "sweeper" / name
    return folder / DRIVER_FILE


def _claim(root: str, experiment: str) -> Path:
    """Record this driver's PID so `sweeper stop` can interrupt it gracefully."""
    path = _driver_file(root, experiment)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
    return path


def stop_sweep(root: str, experiment: str) -> str:
    """Interrupt a running driver on this machine as Ctrl-C would; running trials end KILLED."""
    path = _driver_file(root, experiment)
    if not path.is_file():
        raise UserError(f"no sweep of experiment {experiment!r} is running from {root}")
    info = json.loads(path.read_text())
    if info.get("host") != socket.gethostname():
        raise UserError(f"the sweep runs on {info.get('host')}; run `sweeper stop` there")
    try:
        os.kill(int(info["pid"]), signal.SIGINT)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        raise UserError(f"the sweep's driver (pid {info['pid']}) is gone; nothing to stop") from None
    return f"asked the sweep's driver (pid {info['pid']}) to stop; running trials end KILLED and resume next run"


def request_stop(root: str, experiment: str, endpoint: str | None) -> None:
    """Ask the sweep's driver, wherever it runs, to stop as Ctrl-C would (see StopWatcher)."""
    from sweeper.storage import write_text

    write_text(f"{sweep_dir(root, experiment)}/{STOP_FILE}", endpoint, json.dumps({"requested": time.time()}))


class StopWatcher:
    """Interrupts this driver (SIGINT, as Ctrl-C) when a stop request appears in storage.

    A request older than this driver is stale (a driver that died before it read it) and is
    removed at the start."""

    def __init__(self, uri: str, endpoint: str | None):
        import threading

        self.uri, self.endpoint = uri, endpoint
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="sweeper-stop-watcher", daemon=True)

    def __enter__(self) -> StopWatcher:
        from sweeper.storage import delete

        delete(self.uri, self.endpoint)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()

    def _watch(self) -> None:
        from sweeper.storage import delete, read_text

        while not self.done.wait(STOP_POLL_S):
            try:
                found = read_text(self.uri, self.endpoint)
            except OSError:
                continue  # storage briefly unreachable: look again later
            if found is not None:
                delete(self.uri, self.endpoint)
                os.kill(os.getpid(), signal.SIGINT)
                return


def _makespan(plan: Plan, trials: Sequence[Trial], concurrency: int) -> float:
    import dataclasses

    return dataclasses.replace(plan, trials=tuple(trials), concurrency=concurrency).makespan_seconds()


def _plan_json(spec: SweepSpec, plan: Plan) -> dict[str, Any]:
    from sweeper.commands.plan_output import plan_json

    return plan_json(spec, plan)
