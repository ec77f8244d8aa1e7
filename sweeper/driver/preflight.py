"""Everything that can fail on the user's input, checked before anything trains."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from sweeper.console import UserError, console
from sweeper.driver.sharing import stored_branch_points
from sweeper.driver.tune import max_concurrent_trials
from sweeper.plan import Plan, Trial
from sweeper.profile import Profile
from sweeper.spec import SweepSpec
from sweeper.storage import trial_dir
from sweeper.tracking import Tracking, check_reachable
from sweeper.tracking.results import Selection, older_recipe_note, select_to_run
from sweeper.units import fmt_duration


def preflight_storage(root: str, endpoint: str | None = None, where: str = "storage.path") -> None:
    """Storage is writable: a probe file written and removed (for S3: bucket, credentials, endpoint)."""
    if root.startswith("s3://"):
        from botocore.exceptions import ClientError

        from sweeper.data.errors import DataError
        from sweeper.data.cache import s3_client, s3_errors, split_s3

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



def preflight(spec: SweepSpec, plan: Plan, profile: Profile, *, trials: Sequence[Trial], rerun: Sequence[str],
               retry_failed: bool, max_device_hours: float | None,
               claim: Callable[[], None] | None = None) -> tuple[Tracking, Selection, str, float, frozenset[str]] | int:
    """Everything that can fail on the user's input, before anything trains; then what is left
    to train. An int is the exit code when nothing is. `claim` is called once storage is known
    writable and before MLflow is opened (the driver's lock on the sweep, sweeper.driver.lock); it
    raises UserError when another driver runs the sweep."""
    if spec.evals is not None:  # task names and folders, before anything trains
        from sweeper.driver.evals import check_evals

        check_evals(spec, spec.evals, f"{spec.file} evals.tasks")
    uri = profile.tracking_uri()
    check_reachable(uri)
    root = profile.storage_root()
    preflight_storage(root, profile.storage_endpoint(), f"{profile.file} storage.path")
    if claim is not None:
        claim()
    tracking = Tracking(uri, spec.experiment)
    records = tracking.trial_records()  # every run of the experiment: this sweep's, and older recipes'
    selection = select_to_run(plan, records, rerun=rerun, retry_failed=retry_failed, trials=trials)
    console.print(selection.summary(len(trials)))
    older = older_recipe_note(plan, records)
    if older is not None:
        console.print(older, markup=False, soft_wrap=True)
    if not selection.to_run:
        console.print("nothing to train" + (f"; `sweeper results {spec.file}` lists them" if selection.finished else ""))
        return 0 if not selection.failed else 1
    concurrent = max_concurrent_trials(profile, selection.to_run)
    # What this run trains: a branch whose trunk trains in it too, or whose branch point an earlier
    # run stored, counts only its own part (prefix sharing).
    to_run = dataclasses.replace(plan, trials=tuple(selection.to_run), concurrency=concurrent)
    stored = stored_branch_points(to_run.trials, lambda i: trial_dir(root, spec.experiment, i), profile.storage_endpoint())
    device_hours = to_run.totals(stored)["device_hours_shared"]
    if max_device_hours is not None and device_hours > max_device_hours:
        raise UserError(f"the {len(selection.to_run)} trials to run need an estimated {device_hours:,.2f} "
                        f"device-hours, more than --max-device-hours {max_device_hours:g}")
    estimate_s = to_run.makespan_seconds(shared=True, stored=stored)
    console.print(f"estimated {fmt_duration(estimate_s)} on {profile.name} ({profile.hardware.name}, "
                  f"{concurrent} concurrent; {profile.hardware.assumption()})")
    _bf16_hint(profile, selection.to_run)
    return tracking, selection, root, estimate_s, stored



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

