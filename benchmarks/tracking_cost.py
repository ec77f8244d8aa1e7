"""What a logged point costs on the tracking path the sweep driver uses, on sqlite and on an MLflow server.

For each store, in one run: a local sqlite file, and a real `mlflow server --workers 1` on 127.0.0.1
(a sqlite backend of its own; started on a free port and stopped by its PID):

  TrialLog     `TrialLog.log` per result (from `Tracking.open_trial`) with the metrics a trial
               reports at a log step (train/loss, lr, grad_norm, epoch, flops, tokens_per_s; val/loss
               and val/loss_best at every 10th), buffered and sent with `log_batch` plus the
               last-steps tag, then a final flush: what `sweeper.driver.progress.SweepCallback` does;
  log_metric   the reference: a plain `MlflowClient.log_metric` per point on a fresh run;
  log_batch    the lower bound: plain `MlflowClient.log_batch` of the same points, 500 per call.

It also times `open_trial` for trial after trial in one experiment (it searches the experiment's
trial runs each time) and `finish`, and, to read the costs against, the training step of two small
trials on one CPU thread: the smoke spec's model and the quickstart's largest. Prints a table and a
JSON summary; µs per point is wall time of the writes divided by the points written.

    .venv/bin/python benchmarks/tracking_cost.py              # the README table
    .venv/bin/python benchmarks/tracking_cost.py --quick      # a few hundred points (what the tests run)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT = "bench-tracking"
TOKENS_PER_STEP = 2048
EVAL_EVERY = 10  # results; a trial evaluates far less often, so this errs towards more points


def trial_tags_and_params(index: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """About as many tags and params as the driver writes for a planned trial."""
    tags = {"family": "ar", "model": "qs-1M", "num_params": 1_020_000, "unique_tokens": 50_000, "epochs": 4,
            "tokens": 200_000, "flops": 1.2e12, "sweeper.sweep": "bench", "data.key": f"{index:016x}",
            "data.cache": "sqlite-bench", "data.tokenizer_fingerprint": "0" * 16, "unique_tokens_actual": 50_000}
    params = {"family": "ar", "model.name": "qs-1M", "model.d_model": 128, "model.layers": 4, "model.heads": 4,
              "model.head_dim": 32, "model.h_f": 344, "unique_tokens": 50_000, "epochs": 4, "tokens": 200_000,
              "steps": 98, **{f"train.{k}": v for k, v in {
                  "optimizer": "adamw", "betas": [0.9, 0.95], "eps": 1e-8, "lr_peak": 2e-3, "lr_min": 2e-4,
                  "warmup_fraction": 0.05, "schedule": "cosine", "weight_decay": 0.1, "grad_clip": 1.0,
                  "dropout": 0.0, "init_std": 0.02, "precision": "fp32", "batch_sequences": 16,
                  "eval_points": 8, "eval_spacing": "log", "mdm_eval_samples": 4, "seed": 1234 + index,
                  "compile": False, "checkpoint_every_minutes": 0.5}.items()},
              "data.seq_len": 128, "data.validation_tokens": 16_384, "data.train.kind": "bundled"}
    return tags, params


def result_metrics(i: int) -> dict[str, float]:
    metrics = {"train/loss": 5.0 / (1 + i), "lr": 2e-3, "grad_norm": 0.5, "epoch": i / 100,
               "flops": 6e6 * i * TOKENS_PER_STEP, "tokens_per_s": 9000.0 + i % 7}
    if i % EVAL_EVERY == 0:
        metrics.update({"val/loss": 5.1 / (1 + i), "val/loss_best": 5.1 / (1 + i)})
    return metrics


def time_store(uri: str, *, results: int, single_points: int, trials: int) -> dict[str, Any]:
    from mlflow.entities import Metric

    from sweeper.tracking import Tracking

    tracking = Tracking(uri, EXPERIMENT)
    parent = tracking.sweep_run("bench", spec_texts={}, plan={"trials": trials})

    opened: list[float] = []
    logs = []
    for index in range(trials):
        tags, params = trial_tags_and_params(index)
        started = time.perf_counter()
        logs.append(tracking.open_trial(trial_id=f"trial-{index:04d}", run_name=f"trial {index}",
                                        parent_run_id=parent, tags=tags, params=params))
        opened.append(time.perf_counter() - started)

    log = logs[-1]
    points = 0
    started = time.perf_counter()
    for i in range(1, results + 1):
        metrics = result_metrics(i)
        log.log(metrics, i * TOKENS_PER_STEP)
        points += len(metrics)
    log.flush()
    trial_log_s = time.perf_counter() - started
    started = time.perf_counter()
    log.finish("FINISHED")
    finish_s = time.perf_counter() - started
    for other in logs[:-1]:
        other.finish("FINISHED")

    client = tracking.client
    run_id = client.create_run(tracking.experiment_id, run_name="log_metric reference").info.run_id
    started = time.perf_counter()
    for i in range(single_points):
        client.log_metric(run_id, "train/loss", 1.0 / (1 + i), step=i)
    single_s = time.perf_counter() - started

    run_id = client.create_run(tracking.experiment_id, run_name="log_batch reference").info.run_id
    batch = [Metric(key=k, value=v, timestamp=int(time.time() * 1000), step=i * TOKENS_PER_STEP)
             for i in range(1, results + 1) for k, v in result_metrics(i).items()]
    started = time.perf_counter()
    for start in range(0, len(batch), 500):
        client.log_batch(run_id, metrics=batch[start:start + 500])
    batch_s = time.perf_counter() - started

    return {"trial_log": {"points": points, "seconds": trial_log_s, "results": results},
            "log_metric": {"points": single_points, "seconds": single_s},
            "log_batch": {"points": len(batch), "seconds": batch_s},
            "open_trial_ms": [round(s * 1000, 2) for s in opened], "finish_ms": round(finish_s * 1000, 2)}


def step_seconds(d_model: int, layers: int, heads: int, vocab_size: int, seq_len: int, batch: int,
                 steps: int) -> float:
    """Seconds per optimizer step of a small ar trial on one thread (random tokens, fp32)."""
    import numpy as np
    import torch

    from sweeper.spec.presets import ModelSpec
    from sweeper.trainer import TrialConfig, train

    torch.set_num_threads(1)
    model = ModelSpec(name="bench", d_model=d_model, layers=layers, heads=heads)
    total = steps + 1
    config = TrialConfig(
        trial_id="step-time", family="ar", num_params=1, unique_tokens=total * batch * seq_len + 1, epochs=1.0,
        tokens=total * batch * seq_len, vocab_size=vocab_size, d_model=d_model, h_f=model.h_f, heads=heads,
        head_dim=model.head_dim, layers=layers, dropout=0.0, init_std=0.02, seq_len=seq_len, lr_peak=1e-3,
        lr_min=1e-4, warmup_steps=1, steps=total, schedule="cosine", betas=(0.9, 0.95), eps=1e-8,
        weight_decay=0.1, grad_clip=1.0, batch_sequences=batch, micro_batch=batch, eval_steps=(0, total),
        mdm_eval_samples=1, checkpoint_every_steps=total, log_every_steps=1, precision="fp32", compile=False,
        seed=0, device="cpu", peak_flops=None)
    rng = np.random.default_rng(0)
    pool = rng.integers(0, vocab_size, config.unique_tokens).astype(np.uint16)
    rates: list[float] = []

    def reporter(metrics: dict[str, float], written: str | None) -> None:
        if "tokens_per_s" in metrics:
            rates.append(metrics["tokens_per_s"])

    train(config, pool, pool[: seq_len + 1], reporter, max_steps=total)
    return batch * seq_len / statistics.median(rates[1:])  # the first step warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=3000, help="results logged through TrialLog per store")
    parser.add_argument("--single-points", type=int, default=400, help="points for the log_metric reference")
    parser.add_argument("--trials", type=int, default=200, help="trial runs opened one after another")
    parser.add_argument("--quick", action="store_true", help="a few hundred points: checks the script runs")
    args = parser.parse_args()
    if args.quick:
        args.results, args.single_points, args.trials = 100, 20, 3
    sys.path.insert(0, str(REPO / "tests"))
    from servers import mlflow_server

    stores: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tracking-cost-")))
        (folder / "server").mkdir()
        started = time.perf_counter()
        server = stack.enter_context(mlflow_server(folder / "server"))
        server_start_s = time.perf_counter() - started
        for name, uri in (("sqlite", f"sqlite:///{folder / 'mlflow.db'}"), ("server", server)):
            # MLflow prints two "View run" lines per run it ends on a server; keep them off the table
            with contextlib.redirect_stdout(io.StringIO()):
                stores[name] = time_store(uri, results=args.results, single_points=args.single_points,
                                          trials=args.trials)
    steps = {"smoke-1L (d32, seq 16 x 8)": step_seconds(32, 1, 2, 65, 16, 8, steps=10 if args.quick else 60),
             "qs-1M (d128 x 4, seq 128 x 16)": step_seconds(128, 4, 4, 2048, 128, 16, steps=4 if args.quick else 15)}

    print(f"{'store':<8} {'path':<44} {'points':>7} {'µs/point':>9} {'points/s':>9}")
    rows = []
    for name, store in stores.items():
        for key, label in (("trial_log", "TrialLog.log, flushed with log_batch"),
                           ("log_metric", "MlflowClient.log_metric per point"),
                           ("log_batch", "MlflowClient.log_batch, 500 per call")):
            figures = store[key]
            us = figures["seconds"] / figures["points"] * 1e6
            rows.append({"store": name, "path": key, "points": figures["points"], "us_per_point": round(us, 1),
                         "points_per_s": round(figures["points"] / figures["seconds"], 1)})
            print(f"{name:<8} {label:<44} {figures['points']:>7} {us:>9.1f} {1e6 / us:>9,.0f}")
    print()
    for name, store in stores.items():
        opened = store["open_trial_ms"]
        marks = sorted({1, len(opened) // 4, len(opened) // 2, len(opened)} - {0})
        at = ", ".join(f"{statistics.median(opened[max(0, k - 5):k]):.1f} ms at trial {k}" for k in marks)
        print(f"{name}: open_trial {at} of one experiment (median of the 5 up to it); "
              f"finish {store['finish_ms']:.1f} ms")
    print(f"mlflow server started in {server_start_s:.1f} s")
    print()
    per_result = {name: store["trial_log"]["seconds"] / store["trial_log"]["results"]
                  for name, store in stores.items()}
    print(f"{'training step, one thread':<34} {'ms/step':>8}   one result's tracking cost, as % of a step")
    for label, seconds in steps.items():
        shares = ", ".join(f"{name} {cost / seconds:.1%}" for name, cost in per_result.items())
        print(f"{label:<34} {seconds * 1000:>8.2f}   {shares}")
    summary = {"load_average_1m_at_end": round(os.getloadavg()[0], 2), "rows": rows,
               "us_per_result": {name: round(cost * 1e6, 1) for name, cost in per_result.items()},
               "open_trial_ms": {name: store["open_trial_ms"] for name, store in stores.items()},
               "finish_ms": {name: store["finish_ms"] for name, store in stores.items()},
               "server_start_s": round(server_start_s, 2),
               "step_ms": {label: round(seconds * 1000, 3) for label, seconds in steps.items()}}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
