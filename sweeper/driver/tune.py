"""The sweep on Ray Tune: one Tune trial per sweeper trial, its resources, and the run's outcome."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from typing import Any

from sweeper.console import UserError, console, redact
from sweeper.driver.stop import STOP_FILE, StopWatcher, claim_driver
from sweeper.plan import Plan, Trial
from sweeper.profile import Profile
from sweeper.spec import SweepSpec
from sweeper.storage import experiment_folder, sweep_dir, trial_dir
from sweeper.tracking import Tracking
from sweeper.tracking.results import Selection


def run_tune(spec: SweepSpec, profile: Profile, selection: Selection, tracking: Tracking, parent: str, data: Any,
          root: str, estimate_s: float, *, in_cluster: bool, fresh: frozenset[str] = frozenset(),
          plan: Plan | None = None, stored: frozenset[str] = frozenset()) -> int:
    """`plan`: the whole plan, whose trunks and branches (prefix sharing) the payloads carry; `stored`:
    the branches whose branch point an earlier run left in storage (sweeper.driver.preflight)."""
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

    from sweeper.driver.checkpoints import resume_candidates
    from sweeper.driver.evals import evals_payload
    from sweeper.driver.progress import SweepCallback
    from sweeper.driver.searcher import TrialSearcher
    from sweeper.driver.sharing import sharing_payload
    from sweeper.trainer import METRICS
    from sweeper.driver.worker import no_space, run_trial

    from sweeper.storage import filesystem_for

    hardware = profile.hardware
    endpoint = profile.storage_endpoint()
    # The planner's TrialConfig goes to the worker as it is (Ray pickles it); the rest says where it
    # runs. Tune holds objects in a config as placeholders until a trial is added, so what Tune itself
    # reads (the trial's name and folder) is the plain `trial_id`.
    evals = evals_payload(spec.evals) if spec.evals is not None else None
    payloads = [{
        "trial_id": t.id,
        "trial_config": t.config,
        **trial_resources(t),
        "data": data.location,
        "trial_dir": trial_dir(root, spec.experiment, t.id),
        "storage_endpoint": endpoint,
        **({"evals": evals} if evals else {}),  # absent without an evals block: payloads as they were
        **(sharing_payload(plan, t, lambda i: trial_dir(root, spec.experiment, i)) if plan is not None else {}),
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
        ray.init(address=profile.ray_address(), **quiet)

    # Tune takes S3 storage as a filesystem (which knows the endpoint) and a path without s3://.
    filesystem, storage_path = filesystem_for(root, endpoint) if root.startswith("s3://") else (None, root)
    trainable = tune.with_resources(run_trial, lambda config: tune.PlacementGroupFactory(
        [config["sweeper"]["resources"]]))
    callback = SweepCallback(tracking=tracking, parent_run_id=parent,
                             trials={t.id: t for t in selection.to_run}, extra_tags=data.tags,
                             metric_names=frozenset(METRICS), estimate_s=estimate_s, fresh=fresh,
                             stored=stored)
    tuner = tune.Tuner(
        trainable,
        # Trials in the planned order, a branch once its trunk's checkpoint at its branch point is in storage.
        tune_config=tune.TuneConfig(search_alg=TrialSearcher(payloads, callback._say), num_samples=len(payloads),
                                    max_concurrent_trials=max_concurrent_trials(profile, selection.to_run),
                                    # A new worker process per trial costs ~3.5 s (actor start, imports):
                                    # 12% of a 30 s trial (benchmarks/ray_overhead.py). Trials with the
                                    # same resources run in one process in turn (run_trial starts clean).
                                    reuse_actors=True,
                                    trial_name_creator=lambda t: t.config["sweeper"]["trial_id"],
                                    trial_dirname_creator=lambda t: t.config["sweeper"]["trial_id"]),
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
    full_log = StorageFullLog(callback)
    for name in StorageFullLog.LOGGERS:
        logging.getLogger(name).addFilter(full_log)
    status = "FINISHED"
    previous = signal.signal(signal.SIGTERM, _stop_as_ctrl_c)
    driver_file = None
    try:
        watcher = StopWatcher(f"{sweep_dir(root, spec.experiment)}/{STOP_FILE}", endpoint)
        driver_file = claim_driver(root, spec.experiment)
        with callback, watcher:
            tuner.fit()
    except KeyboardInterrupt:
        status = "KILLED"
    except OSError as error:  # this driver's own writes to storage (Tune's experiment state)
        if not no_space(error):
            raise
        callback.storage_full = callback.storage_full or str(error).strip().splitlines()[0][:300]
    finally:
        signal.signal(signal.SIGTERM, previous)
        callback.close_open("killed")
        if driver_file is not None:
            driver_file.unlink(missing_ok=True)
        ray.shutdown()
        for name in StorageFullLog.LOGGERS:
            logging.getLogger(name).removeFilter(full_log)
    counts = callback.counts()
    if counts["killed"] or counts["pending"] or callback.storage_full:
        status = "KILLED"
    elif counts["failed"]:
        status = "FAILED"
    tracking.finish_sweep(parent, status)
    unfinished = [t for t, s in callback.states.items() if s.state in ("killed", "pending")]
    with_checkpoint = sum(1 for t in unfinished if resume_candidates(trial_dir(root, spec.experiment, t), endpoint)[0])
    if callback.storage_full is not None:
        raise UserError(f"storage full at {root}: free space there and run the same command again; "
                        f"{_resumes(len(unfinished), with_checkpoint)}")
    return _report(callback, status, with_checkpoint)



def _resumes(unfinished: int, with_checkpoint: int) -> str:
    """How the trials not finished resume, promising no checkpoint that storage does not hold."""
    if unfinished == 1:
        return "the trial not finished resumes " + ("from its checkpoint" if with_checkpoint else
                                                    "from step 0 (it has no checkpoint yet)")
    if with_checkpoint == unfinished:
        return f"the {unfinished} trials not finished resume from their checkpoints"
    return (f"of the {unfinished} trials not finished, {with_checkpoint} resume{'s' if with_checkpoint == 1 else ''} from a "
            "checkpoint, the others from step 0")


def _stop_as_ctrl_c(signum: int, frame: Any) -> None:
    """SIGTERM (a job scheduler, `kill`, a closing session) stops the sweep as Ctrl-C and `sweeper stop`
    do: Tune's SIGINT handler ends the running trials, which end KILLED and resume next run; a second
    signal interrupts at once."""
    os.kill(os.getpid(), signal.SIGINT)


class StorageFullLog(logging.Filter):
    """Tune logs, with a traceback, and goes on when it cannot save its experiment state to storage.
    On a full disk that stops the sweep as a checkpoint that does not fit does (one line, the trials
    resumable), and neither that log nor Tune's later one about the trial files it then cannot read
    reaches the console."""

    LOGGERS = ("ray.tune.execution.experiment_state", "ray.tune.analysis.experiment_analysis")

    def __init__(self, callback: Any) -> None:
        super().__init__()
        self.callback = callback

    def filter(self, record: logging.LogRecord) -> bool:
        from sweeper.driver.worker import no_space

        error = record.exc_info[1] if record.exc_info else None
        if error is not None and no_space(error) or "No space left on device" in record.getMessage():
            if self.callback.storage_full is None:
                self.callback.storage_full = str(error or record.getMessage()).strip().splitlines()[0][:300]
                os.kill(os.getpid(), signal.SIGINT)
            return False
        return not (self.callback.storage_full is not None and "Failed to fetch metrics" in record.getMessage())


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



def _report(callback: Any, status: str, with_checkpoint: int = 0) -> int:
    """The sweep's last lines; `with_checkpoint`: how many unfinished trials have a whole checkpoint."""
    from rich.markup import escape

    counts = callback.counts()
    console.print(callback.summary_line())
    failed = [s for s in callback.states.values() if s.state == "failed"]
    for state in failed:
        console.print(f"[red]failed[/] {state.trial.name} ({state.trial.id}): {escape(redact(str(state.reason)))}")
    if status == "KILLED":
        unfinished = counts["killed"] + counts["pending"]
        how = "from their checkpoints" if with_checkpoint == unfinished else \
            f"({with_checkpoint} from a checkpoint, {unfinished - with_checkpoint} from step 0: no checkpoint yet)"
        console.print(f"stopped: {unfinished} trials not finished; run the same command again to resume them {how}")
    return 0 if status == "FINISHED" else 1
