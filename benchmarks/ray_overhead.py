"""What running trials through `sweeper run` (Ray Tune embedded, MLflow sqlite) costs over training them directly.

The same planned trials (one spec, synthetic data, one CPU thread per trial) are trained three ways
in one run of this script, in this order:

  serial      back to back in this process, calling `sweeper.trainer.train` with each trial's
              planned TrialConfig as the worker gets it (data opened the same way, checkpoints written
              to a scratch folder as the worker does), no Ray, no MLflow;
  two procs   two plain Python processes started together, each training half the trials back to
              back the same way: the fair reference for two concurrent trials;
  sweeper run `sweeper run SPEC --backend PROFILE` in a subprocess, 2 concurrent trials, Ray
              embedded, its own sqlite MLflow store and storage folder in a temporary folder.

Data is prepared once, before all three (timed on its own). Trial start and end times, and when
the driver received each trial's first and last results, are read back from MLflow (run start and
end times, metric timestamps). CPU time of the driver, Ray's services and the trial workers is
sampled from /proc while `sweeper run` runs (Linux). The headline is the overhead once Ray is up:
the span from the first trial start to the last trial end under `sweeper run`, against the same
span of the two plain processes (target: under 10%).

    .venv/bin/python benchmarks/ray_overhead.py                         # 8 trials of ~30 s: the README table
    .venv/bin/python benchmarks/ray_overhead.py --trials 4 --trial-seconds 10
    .venv/bin/python benchmarks/ray_overhead.py --quick                 # 2 tiny trials (what the tests run)
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONCURRENCY = 2  # backends/local.yaml's: two trial slots of one core each
EPOCHS = 4  # each trial repeats its pool 4 times: a quarter of the tokens to prepare


@dataclass(frozen=True)
class Shape:
    model: str  # the spec's models: entry
    seq_len: int
    batch_sequences: int
    symbols: int  # the synthetic source's alphabet; vocabulary = symbols + 1 (end of document)
    validation_tokens: int


# ~0.83M parameters, 2,048 tokens per step: 9k-13k tokens/s on one core of the development machine
FULL = Shape("{d_model: 128, layers: 4, heads: 4}", 128, 16, 255, 8192)
TINY = Shape("{d_model: 32, layers: 1, heads: 2, h_f: 64}", 16, 8, 64, 1024)

SPEC = """\
# Written by benchmarks/ray_overhead.py: {trials} trials that differ only in their seed.
# {tokens:,} tokens each = {unique_tokens:,} unique x {epochs} epochs, {steps} steps of {batch} x {seq_len} tokens.
version: 1
name: ray-overhead
description: Equal trials for measuring what the driver path costs.
data:
  train: {{kind: synthetic, states: 64, symbols: {symbols}, branching: 2, emissions: 2, document_length: 1024, seed: 0}}
  tokenizer: {{kind: symbols, vocab_size: {vocab}}}
  seq_len: {seq_len}
  validation_tokens: {validation_tokens}
train: {{batch_sequences: {batch}, lr_peak: 2e-3, lr_min: 2e-4, warmup_fraction: 0.05, dropout: 0.0, precision: fp32,
        eval_points: 4, mdm_eval_samples: 1, compile: false, checkpoint_every_minutes: 0.5}}
models:
  bench: {model}
grid: {{family: ar, model: bench, unique_tokens: {unique_tokens}, epochs: {epochs}, seed: [{seeds}]}}
tracking: {{experiment: bench-ray-overhead}}
"""


def write_inputs(folder: Path, shape: Shape, trials: int, tokens_per_trial: int) -> tuple[Path, Path]:
    unique_tokens = max(1000, round(tokens_per_trial / EPOCHS / 1000) * 1000)
    tokens = unique_tokens * EPOCHS
    spec = folder / "spec.yaml"
    spec.write_text(SPEC.format(
        trials=trials, tokens=tokens, unique_tokens=unique_tokens, epochs=EPOCHS,
        steps=-(-tokens // (shape.batch_sequences * shape.seq_len)), batch=shape.batch_sequences,
        seq_len=shape.seq_len, symbols=shape.symbols, vocab=shape.symbols + 1,
        validation_tokens=shape.validation_tokens, model=shape.model,
        seeds=", ".join(str(s) for s in range(1, trials + 1))))
    text = (REPO / "backends" / "local.yaml").read_text()
    text = text.replace("tracking_uri: sqlite:///mlflow.db", f"tracking_uri: sqlite:///{folder / 'mlflow.db'}")
    text = text.replace("path: sweeper-store", f"path: {folder / 'store'}")
    profile = folder / "profile.yaml"
    profile.write_text(text)
    return spec, profile


def planned_configs(spec_path: Path, profile_path: Path) -> tuple[Any, Any, list[Any]]:
    """(spec, profile, the TrialConfig of every planned trial, on the CPU, as `sweeper run` sends it)."""
    from sweeper.plan import plan_sweep
    from sweeper.profile import load_profile
    from sweeper.spec import load_spec

    spec, profile = load_spec(spec_path), load_profile(profile_path)
    plan = plan_sweep(spec, profile)
    return spec, profile, [t.on_device("cpu", None) for t in plan.trials]


def calibrate(folder: Path, shape: Shape, steps: int) -> float:
    """Training tokens/s of the shape on one thread, on random tokens (evaluation excluded)."""
    import numpy as np

    from sweeper.trainer import train

    probe = folder / "probe"
    probe.mkdir()
    tokens = steps * shape.batch_sequences * shape.seq_len * EPOCHS
    spec, _, configs = planned_configs(*write_inputs(probe, shape, 1, tokens))
    config = configs[0]
    rng = np.random.default_rng(0)
    pool = rng.integers(0, spec.vocab_size - 1, config.unique_tokens).astype(np.uint16)
    val = rng.integers(0, spec.vocab_size - 1, shape.validation_tokens).astype(np.uint16)
    return train(config, pool, val, lambda metrics, written: None, max_steps=steps).tokens_per_s


# ---- the direct path: the trainer called as the worker calls it, without Ray or MLflow ----------
def run_direct(configs: list[Any], manifest: Any, scratch: Path) -> list[dict[str, float]]:
    """Train each config back to back. Per trial: start, first and last report, end (epoch seconds),
    train() wall, its time in training steps, results reported."""
    from sweeper.data import open_pool, open_validation
    from sweeper.trainer import train

    rows = []
    for config in configs:
        started = time.time()
        pool, val = open_pool(manifest, config.unique_tokens), open_validation(manifest)
        received: list[float] = []

        def reporter(metrics: dict[str, float], written: str | None) -> None:
            received.append(time.time())

        checkpoints = scratch / config.trial_id
        result = train(config, pool, val, reporter, checkpoint_dir=str(checkpoints))
        shutil.rmtree(checkpoints, ignore_errors=True)
        rows.append({"start": started, "first": received[0], "last": received[-1], "end": time.time(),
                     "train_wall_s": result.wall_s, "steps_s": result.tokens / result.tokens_per_s,
                     "results": len(received)})
    return rows


def direct_worker(payload_file: str, indices: str) -> None:
    """`--direct-worker`: one of the two plain processes; prints its rows as JSON."""
    import torch

    torch.set_num_threads(1)
    payload = pickle.loads(Path(payload_file).read_bytes())
    configs = [payload["configs"][int(i)] for i in indices.split(",")]
    print(json.dumps(run_direct(configs, payload["manifest"], Path(payload["scratch"]))))


def two_processes(payload_file: Path, trials: int) -> tuple[float, list[dict[str, float]], float]:
    """(wall from spawn to both exits, per-trial rows, CPU seconds of both processes)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    before = os.times()
    started = time.perf_counter()
    processes = [subprocess.Popen([sys.executable, __file__, "--direct-worker", str(payload_file),
                                   ",".join(str(i) for i in range(k, trials, CONCURRENCY))],
                                  stdout=subprocess.PIPE, env=env, text=True) for k in range(CONCURRENCY)]
    outputs = [p.communicate()[0] for p in processes]
    wall = time.perf_counter() - started
    if any(p.returncode for p in processes):
        sys.exit("a direct worker failed")
    after = os.times()
    cpu = after.children_user + after.children_system - before.children_user - before.children_system
    return wall, [row for out in outputs for row in json.loads(out)], cpu


# ---- CPU accounting from /proc (Linux; empty elsewhere) -----------------------------------------
OTHER_RAY = "other Ray processes (dashboard, agents, monitors)"
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


def machine_busy_s() -> float | None:
    """CPU seconds every process of the machine has used since boot (all cores), or None."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) * TICK_S


class TreeSampler:
    """CPU seconds of a process and its descendants, grouped by kind, sampled from /proc."""

    def __init__(self, root: int, every_s: float = 0.25) -> None:
        self.root, self.every_s = root, every_s
        self.seen: dict[int, tuple[str, float]] = {}  # pid -> (kind at last sight, CPU seconds)
        self.commands: dict[int, str] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopping.set()
        self.thread.join()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            self.sample()
            self.stopping.wait(self.every_s)

    def sample(self) -> None:
        parents: dict[int, int] = {}
        cpu: dict[int, float] = {}
        for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
            if not entry.name.isdigit():
                continue
            try:
                fields = (Path(entry.path) / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            pid = int(entry.name)
            parents[pid], cpu[pid] = int(fields[1]), (int(fields[11]) + int(fields[12])) * TICK_S
        tree, frontier = {self.root}, [self.root]
        children: dict[int, list[int]] = {}
        for pid, parent in parents.items():
            children.setdefault(parent, []).append(pid)
        while frontier:
            for child in children.get(frontier.pop(), ()):
                tree.add(child)
                frontier.append(child)
        for pid in tree & cpu.keys():
            self.seen[pid] = (self._kind(pid), cpu[pid])

    def _kind(self, pid: int) -> str:
        if pid == self.root:
            return "driver (sweeper run: Tune loop, MLflow writes)"
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            command = ""
        if not command.strip():  # an exited process (a zombie) shows no command: keep what it was
            return self.seen.get(pid, (OTHER_RAY, 0.0))[0]
        self.commands[pid] = command.strip()[:300]
        if command.startswith("ray::IDLE"):
            return "Ray workers, idle (prestarted)"
        if command.startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent")):
            return OTHER_RAY
        if command.startswith("ray::"):
            return "trial workers (Ray actors)"
        for name in ("gcs_server", "raylet"):
            if name in command.split(" ", 1)[0]:
                return name
        return OTHER_RAY

    def by_process(self) -> list[dict[str, Any]]:
        return [{"pid": pid, "kind": kind, "cpu_s": round(seconds, 2), "command": self.commands.get(pid, "")}
                for pid, (kind, seconds) in sorted(self.seen.items(), key=lambda item: -item[1][1])]

    def by_kind(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for kind, seconds in self.seen.values():
            out[kind] = out.get(kind, 0.0) + seconds
        return dict(sorted(out.items(), key=lambda item: -item[1]))


# ---- the real driver path ----------------------------------------------------------------------
def sweeper_run(folder: Path, spec: Path, profile: Path) -> tuple[float, float, TreeSampler]:
    """(spawn time as epoch seconds, wall to exit, CPU sampler) of `sweeper run` in a subprocess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    log = folder / "sweeper-run.log"
    with open(log, "w") as out:
        spawned, started = time.time(), time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "sweeper.cli", "run", str(spec), "--backend", str(profile)],
                                   stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)
        with TreeSampler(process.pid) as sampler:
            process.wait()
        wall = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"sweeper run failed ({process.returncode}):\n{log.read_text()[-4000:]}")
    return spawned, wall, sampler


def mlflow_times(db: Path, tokens_trained: int) -> tuple[dict[str, float], list[dict[str, float]]]:
    """(the sweep run's start and end; per trial: start, first and last result received, end as
    epoch seconds, as the driver recorded them; train() wall and time in training steps as the
    trial measured them; results reported)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("bench-ray-overhead")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("sweeper.kind") == "sweep")
    rows = []
    for run in runs:
        if run.data.tags.get("sweeper.kind") != "trial":
            continue
        stamps = [m.timestamp / 1000 for m in client.get_metric_history(run.info.run_id, "val/loss")]
        metrics = run.data.metrics
        rows.append({"start": run.info.start_time / 1000, "first": min(stamps), "last": max(stamps),
                     "end": run.info.end_time / 1000, "train_wall_s": metrics["final/wall_s"],
                     "steps_s": tokens_trained / metrics["final/tokens_per_s"],
                     # every report but the untrained model's carries train/loss
                     "results": 1 + len(client.get_metric_history(run.info.run_id, "train/loss"))})
    return {"start": parent.info.start_time / 1000, "end": parent.info.end_time / 1000}, rows


# ---- reading the results -----------------------------------------------------------------------
def span(rows: list[dict[str, float]]) -> float:
    return max(r["end"] for r in rows) - min(r["start"] for r in rows)


def per_trial(rows: list[dict[str, float]]) -> dict[str, float]:
    """Means over trials (seconds): the phases of a trial, and the gap between a slot freeing and
    the next trial starting in it; `non_step_s` is everything but training steps, gap included."""
    starts, ends = sorted(r["start"] for r in rows), sorted(r["end"] for r in rows)
    gaps = [starts[i] - ends[i - CONCURRENCY] for i in range(CONCURRENCY, len(rows))]
    out = {"to_first_result_s": statistics.mean(r["first"] - r["start"] for r in rows),
           "in_train_outside_steps_s": statistics.mean(r["train_wall_s"] - r["steps_s"] for r in rows),
           "last_result_to_end_s": statistics.mean(r["end"] - r["last"] for r in rows),
           "slot_gap_s": statistics.mean(gaps) if gaps else 0.0,
           "steps_s": statistics.mean(r["steps_s"] for r in rows),
           "duration_s": statistics.mean(r["end"] - r["start"] for r in rows),
           "results": statistics.mean(r["results"] for r in rows)}
    out["non_step_s"] = out["duration_s"] - out["steps_s"] + out["slot_gap_s"]
    return out


PHASES = (("to_first_result_s", "start to first result (imports, data, model, eval 0)"),
          ("in_train_outside_steps_s", "in train(), outside steps (evals, checkpoints, reports)"),
          ("last_result_to_end_s", "last result to trial end"),
          ("slot_gap_s", "slot free to next trial start"),
          ("steps_s", "training steps"),
          ("duration_s", "trial start to end"),
          ("non_step_s", "all but training steps, slot gap included"),
          ("results", "results reported"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--trial-seconds", type=float, default=30.0, help="target training time of one trial")
    parser.add_argument("--quick", action="store_true", help="2 tiny trials of ~1.5 s: checks the script runs")
    parser.add_argument("--keep", metavar="FOLDER", help="work in FOLDER and keep it (spec, stores, logs)")
    parser.add_argument("--direct-worker", nargs=2, metavar=("PAYLOAD", "INDICES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.direct_worker:
        direct_worker(*args.direct_worker)
        return
    if args.quick:
        args.trials, args.trial_seconds = 2, 1.5
    shape = TINY if args.quick else FULL

    import torch

    torch.set_num_threads(1)
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ray-overhead-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        report(args, shape, folder)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def report(args: argparse.Namespace, shape: Shape, folder: Path) -> None:
    from sweeper.data import prepare

    rate = calibrate(folder, shape, steps=20 if args.quick else 12)
    spec_path, profile_path = write_inputs(folder, shape, args.trials, round(rate * args.trial_seconds))
    spec, profile, configs = planned_configs(spec_path, profile_path)
    started = time.perf_counter()
    manifest = prepare(spec.data, [configs[0].unique_tokens], profile.storage_location()).manifest
    data_s = time.perf_counter() - started
    scratch = folder / "scratch"
    payload = folder / "payload.pkl"
    payload.write_bytes(pickle.dumps({"configs": configs, "manifest": manifest, "scratch": str(scratch)}))
    c = configs[0]
    print(f"{args.trials} trials: {c.tokens:,} tokens each ({c.steps} steps of "
          f"{c.batch_sequences} x {c.seq_len}), calibrated at {rate:,.0f} tokens/s on one thread; "
          f"data prepared in {data_s:.1f} s", flush=True)

    busy0, cpu0, t0 = machine_busy_s(), os.times(), time.perf_counter()
    serial_rows = run_direct(configs, manifest, scratch)
    serial_wall = time.perf_counter() - t0
    cpu1 = os.times()
    serial_cpu = cpu1.user + cpu1.system - cpu0.user - cpu0.system
    busy1 = machine_busy_s()
    print(f"serial: {serial_wall:.1f} s (load average {os.getloadavg()[0]:.1f})", flush=True)

    two_wall, two_rows, two_cpu = two_processes(payload, args.trials)
    busy2 = machine_busy_s()
    print(f"two processes: {two_wall:.1f} s (load average {os.getloadavg()[0]:.1f})", flush=True)

    spawned, run_wall, sampler = sweeper_run(folder, spec_path, profile_path)
    busy3 = machine_busy_s()
    (folder / "cpu-by-process.json").write_text(json.dumps(sampler.by_process(), indent=1))
    parent, ray_rows = mlflow_times(folder / "mlflow.db", c.steps * c.batch_sequences * c.seq_len)
    print(f"sweeper run: {run_wall:.1f} s (load average {os.getloadavg()[0]:.1f})", flush=True)

    first_start, last_end = min(r["start"] for r in ray_rows), max(r["end"] for r in ray_rows)
    ray_span, two_span, serial_span = span(ray_rows), span(two_rows), span(serial_rows)
    ray_cpu = sampler.by_kind()

    def cores(ours: float, before: float | None, after: float | None, wall: float) -> str:
        machine = f"{(after - before) / wall:.2f}" if before is not None and after is not None else "?"
        return f"{ours / wall:.2f} / {machine}"

    print(f"\n{'path':<42} {'wall s':>7} {'trials span s':>14}   cores busy (ours / whole machine)")
    print(f"{'serial, one process':<42} {serial_wall:>7.1f} {serial_span:>14.1f}   "
          f"{cores(serial_cpu, busy0, busy1, serial_wall)}")
    print(f"{'ideal 2 concurrent = serial / 2':<42} {serial_wall / CONCURRENCY:>7.1f} "
          f"{serial_span / CONCURRENCY:>14.1f}")
    print(f"{'two plain processes':<42} {two_wall:>7.1f} {two_span:>14.1f}   {cores(two_cpu, busy1, busy2, two_wall)}")
    print(f"{'sweeper run (Ray embedded, MLflow sqlite)':<42} {run_wall:>7.1f} {ray_span:>14.1f}   "
          f"{cores(sum(ray_cpu.values()), busy2, busy3, run_wall)}")
    overhead = ray_span / two_span - 1
    startup, to_parent, teardown = first_start - spawned, parent["start"] - spawned, spawned + run_wall - last_end
    print(f"\nRay start-up (spawn to first trial start): {startup:.1f} s = {to_parent:.1f} s to the sweep's "
          f"MLflow run (imports, plan, preflight, data check) + {startup - to_parent:.1f} s to the first trial "
          f"start (ray.init, Tune, first actors); teardown (last trial end to exit): {teardown:.1f} s")
    print(f"overhead once Ray is up (trials span): {overhead:+.1%} against two plain processes, "
          f"{ray_span / (serial_span / CONCURRENCY) - 1:+.1%} against serial / 2; target under 10%")

    direct, ray = per_trial(two_rows), per_trial(ray_rows)
    print(f"\n{'per trial, mean (s)':<58} {'two procs':>10} {'sweeper run':>12}")
    for key, label in PHASES:
        print(f"{label:<58} {direct[key]:>10.2f} {ray[key]:>12.2f}")
    # The steps are the same code either way but run as fast as the machine's load lets them in each
    # phase; what the driver path adds is everything else, which this difference isolates.
    cost = ray["non_step_s"] - direct["non_step_s"]
    share = cost / (direct["duration_s"] + direct["slot_gap_s"])
    per_report = (ray["in_train_outside_steps_s"] - direct["in_train_outside_steps_s"]) / ray["results"]
    print(f"driver path's cost per trial outside training steps: {cost:+.2f} s = {share:+.1%} of a plain trial; "
          f"{per_report * 1000:+.1f} ms per reported result inside train()")
    print(f"\nCPU seconds during sweeper run ({run_wall:.0f} s wall; the serial trials used {serial_cpu:.0f} s):")
    for kind, seconds in ray_cpu.items():
        print(f"  {kind:<52} {seconds:>7.1f}")

    summary = {"load_average_1m_at_end": round(os.getloadavg()[0], 2), "trials": args.trials,
               "tokens_per_trial": c.tokens, "steps_per_trial": c.steps,
               "calibrated_tokens_per_s": round(rate, 1), "data_prepare_s": round(data_s, 2),
               "serial_wall_s": round(serial_wall, 2), "serial_cpu_s": round(serial_cpu, 2),
               "ideal_concurrent_s": round(serial_wall / CONCURRENCY, 2),
               "two_processes_wall_s": round(two_wall, 2), "two_processes_span_s": round(two_span, 2),
               "sweeper_run_wall_s": round(run_wall, 2), "sweeper_run_span_s": round(ray_span, 2),
               "ray_startup_s": round(startup, 2), "startup_to_sweep_run_s": round(to_parent, 2),
               "teardown_s": round(teardown, 2), "overhead_once_up": round(overhead, 4),
               "per_trial_cost_s": round(cost, 3), "per_trial_cost_share": round(share, 4),
               "per_report_cost_s": round(per_report, 4),
               "per_trial_two_processes": {k: round(v, 3) for k, v in direct.items()},
               "per_trial_sweeper_run": {k: round(v, 3) for k, v in ray.items()},
               "sweeper_run_cpu_s": {k: round(v, 2) for k, v in ray_cpu.items()}}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
