"""The bookkeeping of a 10,000-trial sweep against an MLflow server (target: each operation < 10 s).

Plans the 10,000-trial spec of plan_speed.py, fills an MLflow store with one FINISHED run per
trial as a sweep writes it (tags, ~40 params, a 25-point val/loss curve, a 25-point train/loss
curve, the final metrics; one trial ending a minute, as in a study that ran for a week), through
MLflow's client, then starts `mlflow server` on 127.0.0.1 on
that store and times what a user waits for: planning, the dedupe before `sweeper run`, `status`,
`results`, and `fit`/`report` reading the finished runs and their curves. The store is kept in
--store (filling it takes minutes) and reused when it already holds the runs. Prints JSON.

    .venv/bin/python benchmarks/scale.py [--store DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from plan_speed import spec_text  # noqa: E402

CURVE_POINTS = 25
TARGET_S = 10.0
FIT_TIMEOUT_S = 300.0


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_inputs(folder: Path, uri: str, quick: bool) -> tuple[Path, Path]:
    spec = folder / "scale.yaml"
    text = spec_text()
    if quick:  # 2 x 1 x 5 x 5 = 50 trials, for the test that keeps this script running
        text = re.sub(r"  model: \[.*\]", "  model: [7M]", text)
        text = re.sub(r"  unique_tokens: \[.*\]", "  unique_tokens: [10M, 20M, 30M, 40M, 50M]", text)
        text = re.sub(r"  epochs: \[.*\]", "  epochs: [1, 2, 3, 4, 5]", text)
    spec.write_text(text)
    profile = folder / "profile.yaml"
    profile.write_text(f"""\
ray: {{address: embedded}}
mlflow: {{tracking_uri: "{uri}"}}
storage: {{path: {folder / 'storage'}}}
hardware: {{accelerator: cpu, name: bench CPU, devices_per_node: 2, memory_per_device: 64GB,
           cpus_per_trial: 1, sustained_flops: 4.0e10, max_micro_batch: 16}}
concurrency: 2
retries: 0
""")
    return spec, profile


def populate(db_uri: str, spec_path: Path, profile_path: Path) -> float:
    """One FINISHED trial run per planned trial, with curves; returns the seconds it took."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from sweeper.plan import plan_sweep
    from sweeper.profile import load_profile
    from sweeper.spec import load_spec
    from sweeper.tracking import TAG_KIND, TAG_LAST_STEPS, TAG_PARENT, TAG_SWEEP, TAG_TRIAL, flatten

    spec = load_spec(spec_path)
    plan = plan_sweep(spec, load_profile(profile_path))
    client = MlflowClient(tracking_uri=db_uri)
    found = client.get_experiment_by_name(spec.experiment)
    experiment = found.experiment_id if found else client.create_experiment(spec.experiment)
    have = len(client.search_runs([experiment], max_results=1))
    if have:  # filled by an earlier call
        return 0.0
    start = time.perf_counter()
    parent = client.create_run(experiment, run_name=f"sweep {spec.name}",
                               tags={TAG_KIND: "sweep", TAG_SWEEP: spec.name}).info.run_id
    now = int(time.time() * 1000)
    trials = len(plan.trials)
    for i, trial in enumerate(plan.trials):
        tags = {TAG_KIND: "trial", TAG_TRIAL: trial.id, TAG_PARENT: parent, TAG_SWEEP: spec.name,
                "family": trial.family, "model": trial.model.name, "num_params": str(trial.num_params),
                "unique_tokens": str(trial.unique_tokens), "epochs": str(trial.epochs),
                "tokens": str(trial.tokens), "flops": str(trial.flops), "node": "n0"}
        run = client.create_run(experiment, run_name=trial.name, tags=tags).info.run_id
        steps = [round(trial.tokens * k / (CURVE_POINTS - 1)) for k in range(CURVE_POINTS)]
        loss = [2.0 + 8.0 / (1 + k) for k in range(CURVE_POINTS)]
        metrics = [Metric("val/loss", v, now, s) for s, v in zip(steps, loss)]
        metrics += [Metric("train/loss", v + 0.01, now, s) for s, v in zip(steps, loss)]
        metrics += [Metric(k, loss[-1], now, steps[-1]) for k in ("final/val_loss", "final/val_loss_best",
                                                                   "val/loss_best")]
        params = flatten({"family": trial.family, "model": {"name": trial.model.name, **trial.model.dimensions()},
                          "unique_tokens": trial.unique_tokens, "epochs": trial.epochs, "tokens": trial.tokens,
                          "steps": trial.steps, "train": trial.train, "data": trial.data})
        last = json.dumps({"val/loss": steps[-1], "train/loss": steps[-1]})
        client.log_batch(run, metrics=metrics, params=[Param(k, str(v)[:6000]) for k, v in params.items()][:100],
                         tags=[RunTag(TAG_LAST_STEPS, last)])
        client.set_terminated(run, "FINISHED", end_time=finished_at(i, trials))
        if i % 1000 == 999:
            print(f"  {i + 1} runs in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    client.set_terminated(parent, "FINISHED")
    return time.perf_counter() - start


def finished_at(index: int, trials: int) -> int:
    """When the index-th trial ended, in ms: a study's trials end over days (64 at a time, ~1 h
    each, is about one a minute), not all within the minutes this script takes to write them."""
    return int(time.time() * 1000) - (trials - index) * 60_000


def start_server(folder: Path, db: Path) -> tuple[subprocess.Popen, str]:
    sys.path.insert(0, str(REPO))
    from tests.servers import free_port, wait_http

    port = free_port()
    log = folder / "mlflow-server.log"
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{db}",
               "--artifacts-destination", str(folder / "artifacts")]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", process, 600, log)  # a busy machine and a big store: minutes
    except BaseException:
        stop_server(process)
        raise
    return process, url


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)  # the group we started, by its PID
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def timed(fn):  # -> (seconds, result)
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def command(*args: object, timeout_s: float | None = None) -> tuple[float | str, str]:
    """Wall seconds of `sweeper ARGS` in a fresh process (imports included: what a user waits for);
    past `timeout_s`, the command is stopped and its figure says so."""
    start = time.perf_counter()
    try:
        result = subprocess.run([sys.executable, "-m", "sweeper.cli", *map(str, args)], capture_output=True,
                                text=True, cwd=REPO, env={**os.environ, "COLUMNS": "200"}, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"stopped after {timeout_s:.0f} s", ""
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"sweeper {' '.join(map(str, args))} exited {result.returncode}: {result.stderr[-2000:]}")
    return elapsed, result.stdout


def measure(spec: Path, profile: Path, out: Path) -> dict[str, object]:
    """Each operation as a user runs it, against the server; a few in-process parts beside them."""
    figures: dict[str, object] = {}
    backend = ("--backend", profile)
    # The first read on a machine fills sweeper's local cache of ended runs: every run, once.
    shutil.rmtree(os.environ["SWEEPER_CACHE_DIR"], ignore_errors=True)
    figures["first_read_status_json_s"], _ = command("status", spec, *backend, "--format", "json")
    figures["plan_s"], text = command("plan", spec, *backend)
    figures["plan_line"] = text.strip().splitlines()[-1]
    figures["plan_json_s"], _ = command("plan", spec, *backend, "--format", "json")
    figures["run_dedupe_s"], text = command("run", spec, *backend)  # all finished: answers before Ray starts
    figures["run_line"] = text.strip().splitlines()[0]
    figures["status_s"], _ = command("status", spec, *backend)
    figures["status_json_s"], _ = command("status", spec, *backend, "--format", "json")
    figures["results_s"], _ = command("results", spec, *backend)
    figures["results_csv_s"], text = command("results", spec, *backend, "--format", "csv")
    figures["results_rows"] = len(text.strip().splitlines()) - 1
    # fit's own work grows with the trials (bootstrap and leave-one-out refits); reading them is ours.
    figures["fit_point_only_s"], _ = command("fit", spec, *backend, "--no-log", "--format", "json",
                                             "--bootstrap", "0", "--cv-folds", "5", timeout_s=FIT_TIMEOUT_S)
    figures["fit_s"], _ = command("fit", spec, *backend, "--no-log", "--format", "json", timeout_s=FIT_TIMEOUT_S)
    figures["report_s"], _ = command("report", spec, *backend, "--no-log", "--out", out, "--bootstrap", "0",
                                     "--cv-folds", "5", timeout_s=FIT_TIMEOUT_S)

    from sweeper.tracking.results import finished_rows
    from sweeper.plan import plan_sweep
    from sweeper.profile import load_profile
    from sweeper.spec import load_spec
    from sweeper.tracking import Tracking

    loaded = load_profile(profile)
    the_spec = load_spec(spec)
    figures["in_process_plan_s"], plan = timed(lambda: plan_sweep(the_spec, loaded))
    tracking = Tracking(loaded.tracking_uri(), the_spec.experiment, create=False)
    figures["in_process_trial_records_s"], _ = timed(lambda: tracking.trial_records([t.id for t in plan.trials]))
    # What each trial start costs the driver (open_trial looks its trial up alone).
    figures["in_process_one_trial_s"], _ = timed(lambda: tracking.trial_records([plan.trials[-1].id]))
    figures["in_process_results_rows_s"], rows = timed(lambda: finished_rows(plan, tracking))
    figures["in_process_curves_s"], curves = timed(lambda: tracking.curves([r["run_id"] for r in rows], "val/loss"))
    figures["curves_read"] = len(curves)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="folder for the MLflow store (kept; default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="50 trials instead of 10,000")
    args = parser.parse_args()
    folder = args.store or Path(tempfile.mkdtemp(prefix="sweeper-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["SWEEPER_CACHE_DIR"] = str(folder / "run-cache")
    db = folder / "mlflow.db"
    spec_path, profile_path = write_inputs(folder, f"sqlite:///{db}", args.quick)
    fill_s = populate(f"sqlite:///{db}", spec_path, profile_path)
    process, url = start_server(folder, db)
    try:
        spec_path, profile_path = write_inputs(folder, url, args.quick)
        figures = measure(spec_path, profile_path, folder / "report")
    finally:
        stop_server(process)
    print(json.dumps({"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                      "trials": figures["results_rows"], "store": "mlflow server (1 worker) on sqlite, 127.0.0.1",
                      "fill_s": round(fill_s, 1), "target_s": TARGET_S,
                      **{k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}}, indent=2))


if __name__ == "__main__":
    main()
