"""One trial inside Ray Tune: take the planned TrialConfig, open the data, resume, train, report.

Checkpoints go to Tune (`tune.report(..., checkpoint=tune.Checkpoint)`), which persists them under
`{storage}/{experiment}/{trial_id}/` (the trial's folder is named by its id). A retry inside one
Tuner, and a later Tuner (the sweep run again after a crash or Ctrl-C), find the same folder by the
trial id and resume from the newest checkpoint there that is whole and loads: a torn or damaged one is
passed over for the one before it, or step 0, with a warning naming it (sweeper.driver.checkpoints).
A deterministic failure (a diverged loss, out of memory, a token cache that fails its checksums) is
reported as a result carrying `sweeper/failure` and ends the trial without raising, so Tune does not
retry what would fail the same way; anything else raises and Tune retries it from the last
checkpoint up to the profile's limit. A checkpoint that does not fit in storage (a full disk or
quota) ends the trial at once too, its cut-off copy removed, and tells the driver, which stops the
sweep (sweeper.driver.progress).

Every checkpoint keeps the trial's curve up to it (CURVE_FILE), and a trial that resumes hands
that curve to the driver with its first result: the driver writes the points MLflow lacks (a driver
killed before writing them, a lost store) and drops those it has, so a curve ends complete and
never holds a step twice.

Each process of a trial stages its checkpoints in a local scratch folder of its own, removed when it
ends; one that a kill left behind is removed when the trial next starts there (sweeper.driver.scratch).

A trial that spans several devices (`workers` > 1 in its payload: a model whose state does not fit
one GPU, or a CPU profile's `processes_per_trial`) runs as a Ray Train `TorchTrainer` launched from
its Tune trial, the pattern Ray recommends for Train inside Tune: the Tune trial is then only the
driver of the Train run, and each of its workers opens the data, restores the same checkpoint and
runs the trainer's DDP/FSDP path in the process group Train started. Its results reach Tune from
the trial function's own thread (sweeper.driver.train_reports), so the driver's MLflow logging sees
the same results as from one process; Train persists the checkpoints into the trial's own folder
(the Train run is named by the trial id under the experiment's folder) with the same metadata, so
resuming works the same either way.

Under prefix sharing (sweeper.driver.sharing) a trunk's payload carries its branches' extra evaluation
and keep steps, which it keeps when it resumes, and its reporter copies each branch point to storage; a
branch's carries its trunk's folder and branch step: without checkpoints of its own it starts from the
trunk's checkpoint there, else (none whole in storage) from step 0, said in its first result.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sweeper.console import UserError
from sweeper.driver.checkpoints import remove_torn_newest, resume_candidates, shown_path
from sweeper.driver.reporter import (CURVE_KEY, FAILURE_KEY, NODE_KEY, PROCESSES_KEY, RESUMED_KEY,  # noqa: F401
                                     STORAGE_FULL_KEY, WARNING_KEY, TrialReporter, kept_curve)
from sweeper.driver.scratch import trial_scratch
from sweeper.driver.sharing import BRANCH_STEP, TRUNK_DIR, TRUNK_NAME, branch_point, fetch_branch_point, \
    from_step_zero, persister, train_arguments


class StorageFull(RuntimeError):
    """Storage had no space left for a checkpoint (ENOSPC, a quota): retrying cannot help."""


def no_space(error: BaseException) -> bool:
    """Whether an OSError (from the OS, or pyarrow's wording of one) says the disk or quota is full."""
    text = str(error)
    return getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in text \
        or "Disk quota exceeded" in text


# Every ray.train.report waits until Train's controller polls the workers, every 2 s by default; a
# trial reports up to ~100 train points besides its evaluations, so its Train run polls faster.
TRAIN_POLL_INTERVAL_S = "0.1"


class TerminalFailure(RuntimeError):
    """A deterministic trial failure on a Train worker (a TrialFailure with `retryable` False, or a
    token cache that fails its checksums), as the one type the Train run's driver ends the trial on
    without a retry."""


def run_trial(config: dict[str, Any]) -> None:
    """The Ray Tune function trainable. `config["sweeper"]` holds the trial's payload: the planned
    TrialConfig as the planner made it (`trial_config`, an object: Ray pickles it), with where the
    trial runs beside it (its resources and threads, its data, its folder in storage)."""
    import torch  # before anything that might import Ray's native libraries again

    payload = config["sweeper"]
    if payload.get("workers", 1) > 1:
        _drive_train_run(payload)
        return

    from ray import tune

    trial_config = payload["trial_config"]
    torch.set_num_threads(max(1, int(payload["threads"])))
    if trial_config.compile:
        # Tune runs trials in turn in one process (reuse_actors): an earlier trial's compiled
        # graphs must neither linger nor count against dynamo's recompile limit.
        torch._dynamo.reset()
    try:
        train_tokens, val_tokens = open_data(payload)
    except UserError as error:  # a broken cache fails the same way on every retry
        tune.report({FAILURE_KEY: str(error)})
        return
    try:
        with trial_scratch(trial_config.trial_id) as scratch:
            failure, checkpoint = train_from_newest_whole(trial_config, train_tokens, val_tokens, payload, scratch)
            if failure is not None:
                tune.report({FAILURE_KEY: failure})
            elif payload.get("evals") and checkpoint is not None:
                evaluate_after_training(checkpoint, payload, lambda metrics: tune.report(metrics))
    except StorageFull as full:
        remove_torn_newest(payload["trial_dir"], payload.get("storage_endpoint"))
        tune.report({STORAGE_FULL_KEY: str(full)})
    finally:
        release_device_memory()


def evaluate_after_training(checkpoint: str, payload: dict[str, Any], send: Callable[[dict[str, Any]], None]) -> None:
    """The downstream tasks of the spec's `evals` block on the trial's last checkpoint, in this
    worker (the trial's resources), each outcome sent to the driver as soon as it exists (EVALS_KEY),
    which logs it to the trial's MLflow run. A task that fails is its outcome: the trial stays
    finished, and `sweeper eval` can try it again."""
    from sweeper.driver.evals import EVALS_KEY, evaluate_trained
    from sweeper.trainer.distributed import resolve_device

    device = str(resolve_device(payload["trial_config"].device))
    for outcome in evaluate_trained(checkpoint, payload, device):
        send({EVALS_KEY: outcome.to_json()})


def train_from_newest_whole(trial_config: Any, train_tokens: Any, val_tokens: Any, payload: dict[str, Any],
                            scratch: Path) -> tuple[str | None, str | None]:
    """Train the trial from its newest checkpoint that loads, else from step 0. A checkpoint that is
    torn in storage (see `resume_candidates`) is passed over, and so is one that does not load (a
    damaged state); the first result carries a warning naming each. Returns what
    `train_to_the_end` does."""
    from ray import tune

    from sweeper.trainer import CheckpointUnreadable

    candidates, passed_over = resume_candidates(payload["trial_dir"], payload.get("storage_endpoint"))
    # Its own checkpoints first; a branch then its trunk's at its branch point; then step 0.
    starts = [*((c, False) for c in candidates), *([(None, True)] if TRUNK_DIR in payload else []), (None, False)]
    for checkpoint, branch in starts:
        shutil.rmtree(scratch / "restored", ignore_errors=True)
        shutil.rmtree(scratch / "branch", ignore_errors=True)
        resume_from = checkpoint.to_directory(str(scratch / "restored")) if checkpoint is not None else None
        branch_from = fetch_branch_point(payload, scratch) if branch else None
        if branch and branch_from is None:
            continue  # not (whole) in storage: said with step 0
        reporter = TrialReporter(resume_from, tune.Checkpoint, _report_to_tune,
                                 warning=start_warning(passed_over, checkpoint, branch_from, payload),
                                 curve=kept_curve(checkpoint), persist=_persister(payload))
        try:
            return train_to_the_end(trial_config, train_tokens, val_tokens, reporter, scratch, resume_from,
                                    keep_best=(payload.get("evals") or {}).get("at") == "best",
                                    sharing={**train_arguments(payload), "branch_from": branch_from})
        except CheckpointUnreadable as error:
            where = shown_path(payload["trial_dir"], checkpoint.path) if checkpoint is not None else \
                f"of its trunk {payload[TRUNK_NAME]} at step {payload[BRANCH_STEP]}"
            passed_over.append(f"the checkpoint {where} {error.problem}")
    raise AssertionError("unreachable: training from step 0 reads no checkpoint")


def _persister(payload: dict[str, Any]) -> Callable[[str], None] | None:
    """sharing.persister, raising StorageFull when the branch point does not fit in storage."""
    persist = persister(payload)
    if persist is None:
        return None

    def persist_or_full(written: str) -> None:
        try:
            persist(written)
        except OSError as error:
            if not no_space(error):
                raise
            raise StorageFull(str(error).strip().splitlines()[0][:300]) from None
    return persist_or_full


def _report_to_tune(metrics: dict[str, Any], checkpoint: Any) -> None:
    """tune.report; raises StorageFull when the checkpoint does not fit in storage."""
    from ray import tune

    try:
        tune.report(metrics, checkpoint=checkpoint)
    except OSError as error:
        if checkpoint is None or not no_space(error):
            raise
        raise StorageFull(str(error).strip().splitlines()[0][:300]) from None


def fallback_warning(passed_over: list[str], resumed: Any, trial_dir: str) -> str | None:
    """One line for the driver: the checkpoints passed over, and where the trial goes on from."""
    if not passed_over:
        return None
    then = f"resuming from {shown_path(trial_dir, resumed.path)}" if resumed is not None else "training from step 0"
    return f"{'; '.join(passed_over)}: {then}"


def start_warning(passed_over: list[str], resumed: Any, branch_from: str | None, payload: dict[str, Any]) -> str | None:
    """fallback_warning, for a branch also when it starts from step 0 rather than its trunk's checkpoint."""
    if branch_from is not None:
        return f"{'; '.join(passed_over)}: starting from its trunk's checkpoint" if passed_over else None
    if resumed is None and TRUNK_DIR in payload:
        return "; ".join([*passed_over, from_step_zero(payload)])
    return fallback_warning(passed_over, resumed, payload["trial_dir"])


def train_to_the_end(trial_config: Any, train_tokens: Any, val_tokens: Any, reporter: Callable[..., None],
                     scratch: Path, resume_from: str | None, keep_best: bool = False,
                     sharing: dict[str, Any] | None = None) -> tuple[str | None, str | None]:
    """Train the trial, checkpointing under `scratch` (with the best-validation weights when
    `keep_best`, for evals.at: best; `sharing`: train()'s prefix-sharing keywords). Returns (failure,
    the last checkpoint): a deterministic failure
    (a TrialFailure that is not `retryable`: a diverged loss, out of memory) as its message, for the
    caller to end the trial with and Ray not to retry; any other failure raises, so Ray retries the
    trial from its last checkpoint."""
    from sweeper.trainer import TrialFailure, train

    try:
        result = train(trial_config, train_tokens, val_tokens, reporter, checkpoint_dir=str(scratch / "checkpoints"),
                       resume_from=resume_from, keep_best=keep_best, **(sharing or {}))
    except TrialFailure as failure:
        if failure.retryable:
            raise
        return str(failure), None
    return None, result.checkpoint_dir


def release_device_memory() -> None:
    """Return the finished trial's cached CUDA blocks to the device. Tune runs trials in turn in
    one reused process, and PyTorch's caching allocator keeps what a trial freed reserved for that
    process, so a next trial of another shape, or another process sharing the GPU, would find the
    memory taken. A no-op without CUDA."""
    import gc

    import torch

    gc.collect()  # the trial's model and optimizer may sit in reference cycles
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _drive_train_run(payload: dict[str, Any]) -> None:
    """The Tune trial of a trial over several devices: the driver of its Ray Train run."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    from sweeper.driver.train_reports import ForwardReports, report_while_training
    from sweeper.storage import filesystem_for

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", TRAIN_POLL_INTERVAL_S)  # read by Train's controller
    endpoint = payload.get("storage_endpoint")
    filesystem, trial_path = filesystem_for(payload["trial_dir"], endpoint)
    experiment_path, trial_id = trial_path.rsplit("/", 1)
    resources = dict(payload["worker_resources"])
    # Resolved once here, so that every worker restores the same checkpoint: the newest one whose files
    # match its completion marker in storage (its checksums are checked as the workers read it).
    candidates, passed_over = resume_candidates(payload["trial_dir"], endpoint)
    resume = candidates[0] if candidates else None
    # Without checkpoints of its own, a branch starts from its trunk's at its branch point, if whole in storage.
    branch = branch_point(payload[TRUNK_DIR], int(payload[BRANCH_STEP]), endpoint) \
        if resume is None and TRUNK_DIR in payload else None
    warning = start_warning(passed_over, resume, branch and "branch", payload)
    reports = Queue(actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"payload": payload, "resume": resume, "branch": branch, "warning": warning,
                           "curve": kept_curve(resume)},
        scaling_config=ray.train.ScalingConfig(num_workers=int(payload["workers"]), use_gpu="GPU" in resources,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            # The Train run's folder is the Tune trial's: its checkpoints land where latest_persisted
            # looks, and a retried or later run of the trial finds Train's own record of them there.
            name=trial_id, storage_path=experiment_path, storage_filesystem=filesystem,
            callbacks=[ForwardReports(reports)],
            # A failed worker fails the Train run, so Tune retries the whole trial from its last
            # checkpoint: one retry budget (the profile's `retries`) for every kind of trial, and the
            # driver's view sees each retry and each resume as it does for one process.
            failure_config=ray.train.FailureConfig(max_failures=0),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)))
    try:
        report_while_training(trainer.fit, reports, tune.report)
    except ray.train.WorkerGroupError as error:
        full = [str(e) for e in error.worker_failures.values() if isinstance(e, StorageFull)]
        if full:
            remove_torn_newest(payload["trial_dir"], endpoint)
            tune.report({STORAGE_FULL_KEY: full[0]})
            return
        terminal = [str(e) for e in error.worker_failures.values() if isinstance(e, TerminalFailure)]
        if not terminal:
            raise
        tune.report({FAILURE_KEY: terminal[0]})


def _train_worker(loop_config: dict[str, Any]) -> None:
    """One process of a trial over several devices, in the process group Ray Train started (gloo on
    CPUs, nccl on GPUs), which the trainer joins."""
    import torch
    import torch.distributed as dist

    import ray.train
    import ray.train.torch

    payload = loop_config["payload"]
    torch.set_num_threads(max(1, int(payload["threads"])))
    trial_config = payload["trial_config"]
    if trial_config.device != "cpu":  # this worker's GPU among those Train shows it
        trial_config = dataclasses.replace(trial_config, device=str(ray.train.torch.get_device()))
    rank = ray.train.get_context().get_world_rank()
    try:
        train_tokens, val_tokens = open_data(payload)
    except UserError as error:
        raise TerminalFailure(str(error)) from None
    with trial_scratch(trial_config.trial_id, rank) as scratch:
        saved = loop_config["resume"]
        resume_from = saved.to_directory(str(scratch / "restored")) if saved is not None else None
        branch = loop_config.get("branch")
        branch_from = None if branch is None else \
            branch.to_directory(str(scratch / "branch" / f"step_{int(payload[BRANCH_STEP]):08d}"))
        # called on rank 0 only; the size of the process group the trainer joined, not the one asked for
        reporter = TrialReporter(resume_from, ray.train.Checkpoint, _lead_report,
                                 processes=dist.get_world_size(), warning=loop_config.get("warning"),
                                 curve=loop_config.get("curve"), persist=_persister(payload))
        follower = None
        if rank != 0:
            follower = threading.Thread(target=_follow_reports, name="sweeper-report-follower", daemon=True)
            follower.start()
        evals = payload.get("evals")
        failure, checkpoint = train_to_the_end(trial_config, train_tokens, val_tokens, reporter, scratch,
                                               resume_from, keep_best=(evals or {}).get("at") == "best",
                                               sharing={**train_arguments(payload), "branch_from": branch_from})
        if failure is not None:
            raise TerminalFailure(failure)
        if evals and rank == 0 and checkpoint is not None:  # the other ranks follow its reports
            evaluate_after_training(checkpoint, payload, lambda metrics: _lead_report(metrics, None))
        # After a failure the followers are left waiting: Train ends the whole worker group then.
        if rank == 0:
            _broadcast(False)
        elif follower is not None:
            follower.join()


# ray.train.report is a collective: every worker of the run calls it, and Train hands rank 0's metrics
# (and its checkpoint) on to Tune. The trainer reports from rank 0 only, so on every other rank a
# follower thread takes part in each report of rank 0, which first tells them by a broadcast
# whether a report follows (True) or training is over (False).

def _broadcast(more: bool | None) -> bool:
    from ray.train import collective

    return bool(collective.broadcast_from_rank_zero(more))


def _lead_report(metrics: dict[str, Any], checkpoint: Any) -> None:
    import ray.train

    _broadcast(True)
    try:
        ray.train.report(metrics, checkpoint=checkpoint)
    except OSError as error:
        if checkpoint is None or not no_space(error):
            raise
        raise StorageFull(str(error).strip().splitlines()[0][:300]) from None


def _follow_reports() -> None:
    import ray.train

    while _broadcast(None):
        ray.train.report({})


def open_data(payload: dict[str, Any]) -> tuple[Any, Any]:
    """The trial's pool (exactly U tokens, memory-mapped) and the validation tokens, the chunks they
    span checked against the cache's checksums (once per process). Raises DataError for a cache file
    that is missing or does not match."""
    from sweeper.data import open_pool, open_validation

    location = payload["data"]
    return open_pool(location, payload["trial_config"].unique_tokens), open_validation(location)
