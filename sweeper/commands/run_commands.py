"""`sweeper run`, `status`, `stop`, `results` and `ui`: a sweep against its profile's Ray and MLflow."""

from __future__ import annotations

import argparse
from typing import Any

from sweeper.commands.spec_commands import add_profile_arguments, load_plan


def register(subparsers: Any) -> None:
    run = subparsers.add_parser("run", help="train the sweep's trials on Ray Tune, every curve in MLflow",
                                description="Train every trial of the spec that MLflow does not hold as "
                                            "finished; resumable: run it again after a crash or Ctrl-C.")
    run.add_argument("spec", metavar="SPEC")
    add_profile_arguments(run)
    run.add_argument("--where", action="append", default=[], metavar="EXPR", help="only matching trials")
    run.add_argument("--rerun", action="append", default=[], metavar="ID", help="train this trial again")
    run.add_argument("--retry-failed", action="store_true", help="also train trials that FAILED before")
    run.add_argument("--max-device-hours", type=float, metavar="H",
                     help="refuse to start when the estimate of what is left exceeds H device-hours")
    run.add_argument("--no-follow", action="store_true",
                     help="on a cluster: submit the sweep's job and return at once")
    run.add_argument("--in-cluster", action="store_true", help=argparse.SUPPRESS)  # the job's own driver
    run.set_defaults(handler=run_run)

    status = subparsers.add_parser("status", help="per-trial state of a sweep in MLflow")
    status.add_argument("spec", metavar="SPEC")
    add_profile_arguments(status)
    status.add_argument("--format", choices=("table", "json"), default="table")
    status.add_argument("--follow", action="store_true",
                        help="on a cluster: follow the sweep's running job until it ends")
    status.set_defaults(handler=run_status)

    stop = subparsers.add_parser("stop", help="stop a running sweep cleanly (its trials resume next run)")
    stop.add_argument("spec", metavar="SPEC")
    add_profile_arguments(stop)
    stop.set_defaults(handler=run_stop)

    results = subparsers.add_parser("results", help="one row per finished trial (csv: what `fit --from-csv` reads)")
    results.add_argument("spec", metavar="SPEC")
    add_profile_arguments(results)
    results.add_argument("--format", choices=("table", "csv", "json"), default="table")
    results.set_defaults(handler=run_results)

    ui = subparsers.add_parser("ui", help="the MLflow UI on the profile's tracking store")
    add_profile_arguments(ui)
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--experiment", help="experiment to open (default: the first sweep's)")
    ui.set_defaults(handler=run_ui)


def run_run(args: argparse.Namespace) -> int:
    from sweeper.commands.spec_commands import load_profile_for
    from sweeper.run import run_sweep
    from sweeper.spec import TRAIN_KEYS
    from sweeper.where import parse_where, select

    check_device_hours(args.max_device_hours)
    filters = parse_where(args.where, train_keys=TRAIN_KEYS)
    spec, plan = load_plan(args)
    profile = load_profile_for(args, args.spec)
    trials = select(plan.trials, filters) if filters else list(plan.trials)
    choice = {"trials": trials, "rerun": args.rerun, "retry_failed": args.retry_failed,
              "max_device_hours": args.max_device_hours}
    if args.in_cluster or profile.ray.address == "embedded":
        return run_sweep(spec, plan, profile, in_cluster=args.in_cluster, **choice)
    from sweeper.run import submit_sweep

    return submit_sweep(spec, plan, profile, passthrough=_passthrough(args), follow=not args.no_follow, **choice)


def check_device_hours(hours: float | None) -> None:
    import math

    from sweeper.console import UserError

    if hours is not None and not (math.isfinite(hours) and hours > 0):
        raise UserError(f"--max-device-hours {hours:g}: expected a positive number of device-hours "
                        "(leave it out for no limit)")


def _passthrough(args: argparse.Namespace) -> list[str]:
    """The selection options, as the cluster's driver gets them."""
    options = [*(x for w in args.where for x in ("--where", w)), *(x for i in args.rerun for x in ("--rerun", i))]
    if args.retry_failed:
        options.append("--retry-failed")
    if args.max_device_hours is not None:
        options += ["--max-device-hours", str(args.max_device_hours)]
    return options


def _tracking(args: argparse.Namespace):  # -> tuple[SweepSpec, Plan, Tracking]
    from sweeper.commands.spec_commands import load_profile_for
    from sweeper.run import tracking_uri
    from sweeper.tracking import Tracking, check_reachable

    spec, plan = load_plan(args)
    uri = tracking_uri(load_profile_for(args, args.spec))
    check_reachable(uri)
    return spec, plan, Tracking(uri, spec.experiment, create=False)


def run_status(args: argparse.Namespace) -> int:
    import json

    from sweeper.commands.tables import print_table
    from sweeper.console import console
    from sweeper.units import fmt_count

    spec, plan, tracking = _tracking(args)
    if args.format == "table" and _on_cluster(args):
        from sweeper.cluster import job_status

        code = job_status(spec, _profile(args), follow=args.follow)
        if code is not None:
            return code
    rows = status_rows(plan, tracking)
    if args.format == "json":
        print(json.dumps({"spec": spec.name, "experiment": spec.experiment, "trials": rows}, indent=2))
        return 0
    print_table(f"{spec.name} in {spec.experiment}",
                [(c, "left") for c in ("id", "trial", "status", "tokens", "val loss", "failure")],
                [[row["id"], row["name"], row["status"], f"{fmt_count(row['tokens_done'])}/{fmt_count(row['tokens'])}",
                  f"{row['val_loss']:.4f}" if row["val_loss"] is not None else "", row["failure"] or ""]
                 for row in rows], wrap=("failure",))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    console.print(", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())))
    return 0


def status_rows(plan: Any, tracking: Any) -> list[dict[str, Any]]:
    """One row per planned trial: its state in the store (PENDING without a run), progress, loss."""
    records = tracking.trial_records([t.id for t in plan.trials])
    rows = []
    for trial in plan.trials:
        record = records.get(trial.id)
        done = max(record.last_steps.values(), default=0) if record else 0
        rows.append({"id": trial.id, "name": trial.name, "status": record.status if record else "PENDING",
                     "tokens_done": done, "tokens": trial.tokens,
                     "val_loss": record.metrics.get("val/loss") if record else None,
                     "failure": record.failure if record else None, "run_id": record.run_id if record else None})
    return rows


def _profile(args: argparse.Namespace):  # -> Profile
    from sweeper.commands.spec_commands import load_profile_for

    return load_profile_for(args, args.spec)


def _on_cluster(args: argparse.Namespace) -> bool:
    return _profile(args).ray.address != "embedded"


def run_stop(args: argparse.Namespace) -> int:
    from sweeper.console import console
    from sweeper.run import stop_sweep, storage_endpoint, storage_root
    from sweeper.spec import load_spec

    spec = load_spec(args.spec)
    profile = _profile(args)
    if profile.ray.address != "embedded":
        from sweeper.cluster import stop

        console.print(stop(spec, profile, storage_root(profile), storage_endpoint(profile)))
        return 0
    console.print(stop_sweep(storage_root(profile), spec.experiment))
    return 0


RESULT_COLUMNS = ("family", "model", "params", "tokens", "unique_tokens", "epochs", "flops", "loss", "loss_best",
                  "seed", "trial_id", "run_id")


def finished_rows(plan: Any, tracking: Any) -> list[dict[str, Any]]:
    """One row per planned trial that the store holds as FINISHED, with its final and best loss."""
    records = tracking.trial_records([t.id for t in plan.trials])
    rows = []
    for trial in plan.trials:
        record = records.get(trial.id)
        if record is None or record.status != "FINISHED" or "final/val_loss" not in record.metrics:
            continue
        rows.append({"family": trial.family, "model": trial.model.name, "params": trial.num_params,
                     "tokens": trial.tokens, "unique_tokens": trial.unique_tokens, "epochs": trial.epochs,
                     "flops": trial.flops, "loss": record.metrics["final/val_loss"],
                     "loss_best": record.metrics.get("final/val_loss_best"), "seed": trial.seed,
                     "trial_id": trial.id, "run_id": record.run_id})
    return rows


def run_results(args: argparse.Namespace) -> int:
    import csv
    import json
    import sys

    from sweeper.commands.tables import print_table
    from sweeper.units import fmt_count, fmt_epochs, fmt_sci

    spec, plan, tracking = _tracking(args)
    rows = finished_rows(plan, tracking)
    if args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=RESULT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return 0
    if args.format == "json":
        print(json.dumps({"spec": spec.name, "experiment": spec.experiment, "results": rows}, indent=2))
        return 0
    print_table(f"{spec.name}: {len(rows)} finished of {len(plan.trials)}",
                [(c, "left") for c in ("family", "model", "N", "U", "epochs", "D", "FLOPs", "final loss", "best loss",
                                       "run")],
                [[r["family"], r["model"], fmt_count(r["params"]), fmt_count(r["unique_tokens"]), fmt_epochs(r["epochs"]),
                  fmt_count(r["tokens"]), fmt_sci(r["flops"]), f"{r['loss']:.4f}",
                  f"{r['loss_best']:.4f}" if r["loss_best"] is not None else "", r["run_id"]] for r in rows])
    return 0


def run_ui(args: argparse.Namespace) -> int:
    from sweeper.commands.spec_commands import load_profile_for
    from sweeper.run import tracking_uri
    from sweeper.ui import serve_ui

    return serve_ui(tracking_uri(load_profile_for(args, None)), port=args.port, experiment=args.experiment)
