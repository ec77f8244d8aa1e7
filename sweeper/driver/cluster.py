"""`--cluster`: the sweep's driver runs on an existing Ray cluster as a Ray Job.

Ray Jobs is Ray's documented way to run Tune on a cluster: the driver lives on the head node, so
closing the laptop does not stop the sweep. `sweeper run SPEC --cluster` checks what it can from
here (the Jobs API and its token, MLflow, the storage bucket), says what is left to train, and
submits `sweeper run SPEC --in-cluster` with the spec files and the profile as the job's working
folder; then it follows the job's log until the end (or returns at once with `--no-follow`).

A sweep's jobs are found again by their submission ids, `sweeper-<experiment>-<sweep>-<n>`: the
next submission takes the next n (Ray never reuses an id), `sweeper status SPEC --cluster`
reconnects to the latest, and a second submission while one is pending or running is refused.
`sweeper stop SPEC --cluster` asks the driver to stop as Ctrl-C would, through a file in the
sweep's storage (sweeper.driver.stop), so its running trials end KILLED and resume next time;
only a driver that does not stop in time is stopped through the Jobs API.

The job gets the environment variables the profile names (addresses, the storage URI), never
credentials: the cluster's nodes have their own (an instance role, a Kubernetes Secret), as the
infra/ manifests set up.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sweeper.console import UserError, console, redact
from sweeper.profile import Profile

ACTIVE = ("PENDING", "RUNNING")
FOLLOW_POLL_S = 2.0
STOP_WAIT_S = 180.0  # a clean stop closes every running trial's MLflow run first
_SECRET = re.compile(r"SECRET|PASSWORD|TOKEN|CREDENTIAL|_KEY", re.IGNORECASE)
_ENV_NAME = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def cluster_address(profile: Profile) -> str:
    """The cluster's Jobs API (the dashboard's http address) from the profile."""
    where = f"{profile.file} ray.address"
    address = profile.ray_address().rstrip("/")
    if address.startswith("ray://"):
        raise UserError(f"{where}: {address} is a Ray Client address; sweeper submits Ray Jobs: give the "
                        "dashboard's address, e.g. http://HEAD:8265")
    if not address.startswith(("http://", "https://")):
        raise UserError(f"{where}: {address!r} is not the dashboard's http address (e.g. http://HEAD:8265), "
                        "which the Ray Jobs API listens on")
    return address


def _token_available() -> bool:
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or Path(path).is_file()


def job_client(address: str) -> Any:
    """A Jobs API client that has reached the cluster and passed its token auth."""
    import logging

    if _token_available():
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # clients send the token only in this mode
    from ray.dashboard.modules.job.sdk import JobSubmissionClient

    for name in ("ray", "ray.dashboard.modules.dashboard_sdk", "ray._private.runtime_env.packaging"):
        logging.getLogger(name).setLevel(logging.WARNING)  # no "uploading package" chatter
    from ray.exceptions import AuthenticationError

    try:
        client = JobSubmissionClient(address)
        client.list_jobs()
    except AuthenticationError as error:
        first = str(error).strip().splitlines()[0]
        hint = "RAY_AUTH_TOKEN is not the cluster's token" if _token_available() else \
            "set RAY_AUTH_TOKEN (or ~/.ray/auth_token) to the cluster's token"
        raise UserError(f"the Ray cluster at {address} refused the request ({first}): {hint}") from None
    except (ConnectionError, OSError) as error:
        raise UserError(f"cannot reach the Ray cluster's Jobs API at {address} "
                        f"({_short(error)}); is RAY_ADDRESS the dashboard address, e.g. http://HEAD:8265?") from None
    except RuntimeError as error:
        raise UserError(f"the Ray Jobs API at {address} answered unexpectedly: {_short(error)}") from None
    return client


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def job_prefix(experiment: str, sweep: str) -> str:
    def slug(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-") or "x"

    return f"sweeper-{slug(experiment)}-{slug(sweep)}-"


def sweep_jobs(client: Any, experiment: str, sweep: str) -> list[Any]:
    """This sweep's jobs on the cluster, oldest first."""
    prefix = job_prefix(experiment, sweep)
    jobs = [job for job in client.list_jobs() if (job.submission_id or "").startswith(prefix)
            and (job.submission_id or "").removeprefix(prefix).isdigit()]
    return sorted(jobs, key=lambda job: int(job.submission_id.removeprefix(prefix)))


def _status(job_or_status: Any) -> str:
    """"RUNNING", ... from a job's details or from a JobStatus."""
    status = getattr(job_or_status, "status", job_or_status)
    return str(getattr(status, "value", status))


def active_job(client: Any, experiment: str, sweep: str) -> Any | None:
    return next((job for job in reversed(sweep_jobs(client, experiment, sweep)) if _status(job) in ACTIVE), None)


def forwarded_environment(profile: Profile) -> dict[str, str]:
    """The variables the profile names, as set here; none that look like a secret."""
    names = dict.fromkeys(_ENV_NAME.findall(Path(profile.file).read_text()))
    return {name: os.environ[name] for name in names
            if name != "RAY_ADDRESS" and not _SECRET.search(name) and os.environ.get(name)}


def package(spec_files: Sequence[str], profile_file: str, folder: Path) -> tuple[str, str]:
    """Copy the spec (with the files it extends) and the profile into `folder`, keeping their
    relative layout; returns the spec's and the profile's paths inside it."""
    files = [Path(f).resolve() for f in (*spec_files, profile_file)]
    root = Path(os.path.commonpath([str(f.parent) for f in files]))
    for file in files:
        target = folder / file.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, target)
    return str(files[0].relative_to(root)), str(files[-1].relative_to(root))


def submit(spec: Any, profile: Profile, *, passthrough: Sequence[str], follow: bool) -> int:
    """Submit the sweep as a Ray Job (after `sweeper.driver.sweep.preflight_cluster`); follow it or return."""
    address = cluster_address(profile)
    client = job_client(address)
    running = active_job(client, spec.experiment, spec.name)
    if running is not None:
        raise UserError(f"sweep {spec.name} is already {_status(running).lower()} on {address} as job "
                        f"{running.submission_id}; `sweeper status {spec.file} --cluster --follow` follows it, "
                        f"`sweeper stop {spec.file} --cluster` stops it")
    previous = sweep_jobs(client, spec.experiment, spec.name)
    prefix = job_prefix(spec.experiment, spec.name)
    number = 1 + max((int(j.submission_id.removeprefix(prefix)) for j in previous), default=0)
    with tempfile.TemporaryDirectory(prefix="sweeper-job-") as folder:
        spec_path, profile_path = package(spec.files, profile.file, Path(folder))
        entrypoint = " ".join(["python", "-m", "sweeper.cli", "run", _quote(spec_path), "--backend",
                               _quote(profile_path), "--in-cluster", *map(_quote, passthrough)])
        env = {**forwarded_environment(profile), "PYTHONUNBUFFERED": "1"}
        job_id = client.submit_job(entrypoint=entrypoint, submission_id=f"{prefix}{number}",
                                   runtime_env={"working_dir": folder, "env_vars": env},
                                   metadata={"sweeper.experiment": spec.experiment, "sweeper.sweep": spec.name},
                                   entrypoint_num_cpus=0)
    console.print(f"submitted sweep {spec.name} to {redact(address)} as job {job_id}")
    if not follow:
        console.print(f"`sweeper status {spec.file} --cluster --follow` follows it; "
                      f"`sweeper stop {spec.file} --cluster` stops it")
        return 0
    return follow_job(client, job_id, spec.file)


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def follow_job(client: Any, job_id: str, spec_file: str) -> int:
    """Stream the job's log as the driver writes it, until the job ends; its exit code becomes ours.
    The log comes over the Jobs API's websocket, each line once; where that breaks (a proxy without
    websockets, a restarted head) it is polled instead, printing only what is new. Ctrl-C only
    detaches: the sweep goes on."""
    shown = _Shown()
    try:
        try:
            asyncio.run(_stream_logs(client, job_id, shown))
            streamed = True
        except Exception:  # noqa: BLE001 (any failure of the stream: poll instead, from where it stopped)
            streamed = False
        while True:
            status = _status(client.get_job_status(job_id))
            if not streamed:
                _print_new(client.get_job_logs(job_id), shown)
            if status not in ACTIVE:
                break
            streamed = False  # the stream ended before the job did: poll the rest
            time.sleep(FOLLOW_POLL_S)
    except KeyboardInterrupt:
        console.print(f"\ndetached; the sweep goes on as job {job_id}: `sweeper status {spec_file} --cluster "
                      f"--follow` follows it again, `sweeper stop {spec_file} --cluster` stops it")
        return 130
    info = client.get_job_info(job_id)
    code = getattr(info, "driver_exit_code", None)
    console.print(f"job {job_id}: {status.lower()}" + (f" (exit code {code})" if code is not None else ""))
    if status == "SUCCEEDED":
        return 0
    if status == "FAILED" and code is None and info.message:
        console.print(f"[red]{info.message.strip().splitlines()[-1]}[/]")
    return int(code) if code else 1


class _Shown:
    """How much of the job's log this command has printed (characters from its start)."""

    def __init__(self) -> None:
        self.chars = 0


async def _stream_logs(client: Any, job_id: str, shown: _Shown) -> None:
    async for chunk in client.tail_job_logs(job_id):
        print(chunk, end="", flush=True)
        shown.chars += len(chunk)


def _print_new(logs: str, shown: _Shown) -> None:
    if len(logs) > shown.chars:
        print(logs[shown.chars:], end="", flush=True)
        shown.chars = len(logs)


def job_status(spec: Any, profile: Profile, *, follow: bool) -> int | None:
    """Print the sweep's latest job; with `follow`, follow it and return its exit code."""
    address = cluster_address(profile)
    client = job_client(address)
    jobs = sweep_jobs(client, spec.experiment, spec.name)
    if not jobs:
        console.print(f"no job of sweep {spec.name} on {redact(address)}")
        return None
    job = jobs[-1]
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.start_time / 1000)) if job.start_time else "?"
    console.print(f"job {job.submission_id} on {redact(address)}: {_status(job).lower()} (submitted {started})")
    if follow and _status(job) in ACTIVE:
        return follow_job(client, job.submission_id, spec.file)
    return None


def stop(spec: Any, profile: Profile) -> str:
    """Stop the sweep's running job cleanly (sweeper.driver.stop); after STOP_WAIT_S, through the Jobs API."""
    from sweeper.driver.stop import request_stop

    address = cluster_address(profile)
    client = job_client(address)
    job = active_job(client, spec.experiment, spec.name)
    if job is None:
        raise UserError(f"no job of sweep {spec.name} is running on {address}")
    request_stop(profile.storage_root(), spec.experiment, profile.storage_endpoint())
    console.print(f"asked job {job.submission_id} to stop; its running trials end KILLED and continue next run, "
                  "from their checkpoints where they have one")
    deadline = time.monotonic() + STOP_WAIT_S
    while time.monotonic() < deadline:
        if _status(client.get_job_status(job.submission_id)) not in ACTIVE:
            return f"job {job.submission_id} stopped"
        time.sleep(FOLLOW_POLL_S)
    client.stop_job(job.submission_id)
    return (f"job {job.submission_id} did not stop within {STOP_WAIT_S:.0f} s; stopped it through the Jobs API "
            "(its trials resume next run, from their checkpoints where they have one)")
