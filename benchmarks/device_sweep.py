"""A sweep's trials on a machine without Ray or MLflow, within a time budget: the device machines'
way to run (part of) a spec such as sweeps/mini-gpu.yaml, whose results are then fitted here.

    PYTHONPATH=. PYTHONUNBUFFERED=1 timeout 560 python3 benchmarks/device_sweep.py sweeps/mini-gpu.yaml \\
        --backend backends/gpu.yaml --where unique_tokens=128k --budget-s 480 --out $OUT/mini-gpu
    sweeper report --from-csv $OUT/mini-gpu/results.csv --columns loss=loss_best --tie --out reports/x

Each selected trial (`--where`, as `sweeper run`'s) is trained in turn by `sweeper train --device`
in its own process, in the planned order (longest first) or `--order short`. A trial is started only
when its planned wall time, scaled by the pace measured on the trials before it (actual over
planned time), fits in what is left of `--budget-s`; a trial still running at the end of the budget
is stopped and listed as cut. Written under `--out` as the run goes, so a run stopped by a timeout
keeps what it finished:
- `curves/{trial id}.jsonl`: every point `sweeper train` printed (the trial's MLflow curve);
- `results.csv`: one row per finished trial, the columns `sweeper fit --from-csv` reads (family,
  params, unique_tokens, tokens as trained, seed, loss = final validation loss, loss_best = the
  best along the curve) and trial_id, name, epochs, wall_s, planned_wall_s, tokens_per_s;
- `summary.json`: the device, the trials finished, cut and skipped (with their planned times), and
  the pace ratio, from which the spec's time estimate (its profile's sustained_flops or
  assumed_mfu) can be corrected.
Needs torch, numpy, pyyaml and rich only (sweeper train imports neither Ray nor MLflow).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ("trial_id", "name", "family", "params", "unique_tokens", "epochs", "tokens", "seed", "loss", "loss_best",
           "wall_s", "planned_wall_s", "tokens_per_s")


def planned_trials(spec_file: str, backend: str, where: list[str], order: str) -> list[Any]:
    from sweeper.plan import plan_sweep
    from sweeper.plan.where import parse_where, select
    from sweeper.profile import load_profile
    from sweeper.spec import TRAIN_KEYS, load_spec

    plan = plan_sweep(load_spec(spec_file), load_profile(backend))
    trials = select(plan.trials, parse_where(where, train_keys=TRAIN_KEYS)) if where else list(plan.trials)
    return sorted(trials, key=lambda t: t.wall_seconds) if order == "short" else trials


def train(trial: Any, args: argparse.Namespace, curves: Path, deadline: float) -> tuple[list[dict], float, bool]:
    """`sweeper train` of one trial until it ends or the deadline: (its points, seconds, finished)."""
    command = [sys.executable, "-m", "sweeper.cli", "train", args.spec, "--backend", args.backend,
               "--trial", trial.id, "--device", args.device]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    points: list[dict] = []
    with open(curves / f"{trial.id}.jsonl", "w") as curve, open(curves / f"{trial.id}.log", "w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        assert process.stdout is not None
        watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), process.kill)  # the budget's end
        watchdog.start()
        try:
            for line in process.stdout:  # one JSON object per logged point
                if line.startswith("{"):
                    points.append(json.loads(line))
                    curve.write(line)
                    curve.flush()
        finally:
            watchdog.cancel()
            process.wait()
    finished = process.returncode == 0 and bool(points) and "final/val_loss" in points[-1]
    return points, time.monotonic() - started, finished


def result_row(trial: Any, points: list[dict], wall_s: float) -> dict[str, Any]:
    last = points[-1]
    return {"trial_id": trial.id, "name": trial.name, "family": trial.family, "params": trial.num_params,
            "unique_tokens": trial.unique_tokens, "epochs": trial.epochs, "tokens": int(last["final/tokens_trained"]),
            "seed": trial.seed, "loss": last["final/val_loss"], "loss_best": last["final/val_loss_best"],
            "wall_s": round(wall_s, 2), "planned_wall_s": round(trial.wall_seconds, 2),
            "tokens_per_s": round(last["final/tokens_trained"] / wall_s, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec")
    parser.add_argument("--backend", default="backends/local.yaml")
    parser.add_argument("--where", action="append", default=[], metavar="EXPR")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--budget-s", type=float, default=480.0)
    parser.add_argument("--order", choices=("planned", "short"), default="planned")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--list", action="store_true", help="print the selected trials and their planned times, train nothing")
    args = parser.parse_args()
    if args.out is None and not args.list:
        parser.error("--out DIR is required unless --list")

    start = time.monotonic()
    deadline = start + args.budget_s
    from sweeper.console import UserError, fail

    try:
        trials = planned_trials(args.spec, args.backend, args.where, args.order)
    except UserError as error:  # a spec, profile or --where mistake: one line, as the CLI says it
        return fail(error)
    if args.list:
        total = 0.0
        for trial in trials:
            total += trial.wall_seconds
            print(f"{trial.id}  {trial.name:<28} planned {trial.wall_seconds:8.1f} s, {total:9.1f} s in all")
        return 0
    curves = args.out / "curves"
    curves.mkdir(parents=True, exist_ok=True)
    finished, cut, skipped = [], [], []
    actual_s = planned_s = 0.0
    with open(args.out / "results.csv", "w", newline="") as file:
        rows = csv.DictWriter(file, fieldnames=COLUMNS)
        rows.writeheader()
        for index, trial in enumerate(trials):
            pace = actual_s / planned_s if planned_s else 1.0
            if time.monotonic() + trial.wall_seconds * pace > deadline:
                skipped.append({"trial_id": trial.id, "name": trial.name, "planned_wall_s": round(trial.wall_seconds, 1)})
                continue
            print(f"[{index + 1}/{len(trials)}] {trial.name} ({trial.id}): planned {trial.wall_seconds:.0f} s",
                  file=sys.stderr, flush=True)
            points, wall_s, done = train(trial, args, curves, deadline)
            if not done:
                cut.append({"trial_id": trial.id, "name": trial.name, "points": len(points), "wall_s": round(wall_s, 1)})
                print(f"  cut after {wall_s:.0f} s ({len(points)} points)", file=sys.stderr, flush=True)
                continue
            row = result_row(trial, points, wall_s)
            rows.writerow(row)
            file.flush()
            finished.append(trial.id)
            actual_s, planned_s = actual_s + wall_s, planned_s + trial.wall_seconds
            print(f"  {wall_s:.0f} s, {row['tokens_per_s']:,.0f} tokens/s, loss {row['loss']:.4f} "
                  f"(best {row['loss_best']:.4f})", file=sys.stderr, flush=True)
    summary = {"spec": args.spec, "backend": args.backend, "device": args.device, "where": args.where,
               "finished": finished, "cut": cut, "skipped": skipped,
               "pace": round(actual_s / planned_s, 3) if planned_s else None,
               "wall_s": round(time.monotonic() - start, 1)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "skipped"} | {"skipped": len(skipped)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
