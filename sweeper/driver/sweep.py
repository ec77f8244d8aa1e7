"""The driver: preflight, dedupe, data, then Ray Tune over the trials still to train.

Order matters for a user's trust: everything that can fail on their input (spec, profile, MLflow,
storage, data) is checked before Ray starts, and trials that MLflow holds as FINISHED are left
out before Ray starts too, so a finished sweep answers "nothing to train" in seconds. Tune runs
the remaining trials as an explicit list (the planner owns expansion), each with its planned
resources, under the profile's concurrency; its storage keeps checkpoints under
`{storage}/{experiment folder}/{trial_id}/` so any later run resumes them (see sweeper.driver.worker). The
experiment folder is the experiment's name when that is a safe folder name (every name today's
validator accepts), else a safe form of it (`experiment_folder`), so no name reaches outside storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.console import UserError, console
from sweeper.driver.lock import SweepLock
from sweeper.driver.preflight import preflight
from sweeper.driver.tune import run_tune
from sweeper.plan import Plan, Trial
from sweeper.profile import Profile
from sweeper.spec import SweepSpec
from sweeper.storage import sweep_dir, trial_dir


def run_sweep(spec: SweepSpec, plan: Plan, profile: Profile, *, trials: Sequence[Trial], rerun: Sequence[str] = (),
              retry_failed: bool = False, max_device_hours: float | None = None, in_cluster: bool = False) -> int:
    """Train what is left of the sweep. `in_cluster`: this process is the sweep's Ray Job on a
    cluster (see sweeper.driver.cluster), so Ray is the cluster this job runs in.

    Holds the sweep's lock (sweeper.driver.lock) from before MLflow is opened to the end; raises
    UserError, naming the other driver, when one already runs the sweep."""
    lock = SweepLock(profile.storage_root(), spec.experiment, spec.file)
    try:
        checked = preflight(spec, plan, profile, trials=trials, rerun=rerun, retry_failed=retry_failed,
                            max_device_hours=max_device_hours, claim=lambda: _claim(lock))
        if isinstance(checked, int):
            return checked
        return _train(spec, plan, profile, checked, trials=trials, rerun=rerun, in_cluster=in_cluster)
    finally:
        lock.release()


def _claim(lock: SweepLock) -> None:
    lock.acquire()
    gone = lock.taken_over
    if gone is not None:
        console.print(f"the sweep's previous driver (pid {gone.get('pid')} on {gone.get('host')}) ended without "
                      "finishing; this one takes over")


def _train(spec: SweepSpec, plan: Plan, profile: Profile, checked: tuple[Any, ...], *, trials: Sequence[Trial],
           rerun: Sequence[str], in_cluster: bool) -> int:
    tracking, selection, root, estimate_s, stored = checked
    data = prepare_data(spec, [t.unique_tokens for t in trials], profile)
    plan_json = _plan_json(spec, plan)
    parent = tracking.sweep_run(spec.name, spec_texts={f: Path(f).read_text() for f in spec.files}, plan=plan_json)
    fresh = frozenset(t.id for t in selection.to_run if t.id in rerun)
    retrain = _lost_runs(tracking, selection.to_run, root, spec.experiment, profile.storage_endpoint(), fresh)
    if retrain:
        forget_checkpoints(root, spec.experiment, retrain, profile.storage_endpoint())
    if fresh:
        forget_checkpoints(root, spec.experiment, fresh, profile.storage_endpoint())
        console.print(f"--rerun: {len(fresh)} trial{'s train' if len(fresh) > 1 else ' trains'} from step 0 into a new "
                      "run; earlier runs stay in MLflow, tagged superseded")
    return run_tune(spec, profile, selection, tracking, parent, data, root, estimate_s, in_cluster=in_cluster,
                 fresh=fresh, plan=plan, stored=stored)


def _lost_runs(tracking: Any, to_run: Sequence[Trial], root: str, experiment: str, endpoint: str | None,
               fresh: frozenset[str]) -> frozenset[str]:
    """Trials that storage holds finished but MLflow holds no run of (a lost or replaced store): one
    line says what happens to them. Their runs are rebuilt whole from their final checkpoints, which
    keep their curves; those written before checkpoints kept curves retrain from step 0 (returned,
    for their checkpoints to be removed), since a run without its curve would be a result without
    its evidence."""
    from sweeper.driver.checkpoints import finished_in_storage

    steps = {t.id: t.steps for t in to_run if t.id not in fresh}
    found = finished_in_storage(sweep_dir(root, experiment), steps, endpoint) if steps else {}
    if found:
        known = tracking.trial_records(list(found))
        found = {trial_id: kept for trial_id, kept in found.items() if trial_id not in known}
    rebuilt = sum(found.values())
    retrain = frozenset(trial_id for trial_id, kept in found.items() if not kept)
    if rebuilt:
        console.print(f"MLflow holds no run of {_trials(rebuilt)} that storage holds finished: rebuilding "
                      f"{'its run' if rebuilt == 1 else 'their runs'} from the final checkpoint, curve included, "
                      "without training again")
    if retrain:
        console.print(f"MLflow holds no run of {_trials(len(retrain))} that storage holds finished in checkpoints "
                      "that keep no curve: training again from step 0")
    return retrain


def _trials(count: int) -> str:
    return f"{count} trial{'s' if count != 1 else ''}"


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
    from sweeper.driver import cluster

    cluster.job_client(cluster.cluster_address(profile))  # reachable, and the token is accepted
    path = profile.storage_path()
    if "://" not in path and not Path(path).is_absolute():
        raise UserError(f"{profile.file} storage.path: {path!r} is a folder on this machine; the cluster's nodes need "
                        "s3://bucket/prefix or an absolute path on a disk they all mount")
    checked = preflight(spec, plan, profile, trials=trials, rerun=rerun, retry_failed=retry_failed,
                         max_device_hours=max_device_hours)
    if isinstance(checked, int):
        return checked
    return cluster.submit(spec, profile, passthrough=passthrough, follow=follow)


@dataclass(frozen=True, slots=True, kw_only=True)
class PreparedData:
    location: Any  # what a worker opens its pool from (the data manifest)
    tags: dict[str, str]  # for every trial's MLflow run


def prepare_data(spec: SweepSpec, unique_tokens: Sequence[int], profile: Profile) -> PreparedData:
    from sweeper.console import console as out
    from sweeper.data.progress import prepare_with_progress

    storage = profile.storage_location()
    # A cache in a local folder is checked whole here (~2 ms per MB) and rebuilt if broken; an
    # s3:// one would be read whole from the bucket to check it, so its trials check what they read.
    prepared = prepare_with_progress(spec, unique_tokens, storage, console=out, verify=not storage.is_s3)
    manifest = prepared.manifest
    tags = {"sweeper.sweep": spec.name, "data.cache": manifest.uri, "data.key": manifest.key,
            "data.tokenizer_fingerprint": manifest.tokenizer.fingerprint}
    tags.update({f"pool.{pool.unique_tokens}": str(pool.tokens) for pool in manifest.pools})
    return PreparedData(location=manifest, tags=tags)


def _plan_json(spec: SweepSpec, plan: Plan) -> dict[str, Any]:
    from sweeper.plan.documents import plan_json

    return plan_json(spec, plan)
