"""`sweeper run`, `status`, `stop`, `results` and `ui`: a sweep against its profile's Ray and MLflow."""

from __future__ import annotations

import argparse
from typing import Any

from sweeper.cli.context import Context
from sweeper.cli.spec import add_profile_arguments


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
    from sweeper.driver.sweep import run_sweep
    from sweeper.plan.where import parse_where, select
    from sweeper.spec import TRAIN_KEYS

    check_device_hours(args.max_device_hours)
    filters = parse_where(args.where, train_keys=TRAIN_KEYS)
    ctx = Context(args)
    spec, plan, profile = ctx.spec, ctx.plan, ctx.profile
    trials = select(plan.trials, filters) if filters else list(plan.trials)
    choice = {"trials": trials, "rerun": args.rerun, "retry_failed": args.retry_failed,
              "max_device_hours": args.max_device_hours}
    if args.in_cluster or ctx.embedded:
        return run_sweep(spec, plan, profile, in_cluster=args.in_cluster, **choice)
    from sweeper.driver.sweep import submit_sweep

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


def run_status(args: argparse.Namespace) -> int:
    import json

    from sweeper.console import console, print_table
    from sweeper.units import fmt_count

    ctx = Context(args)
    spec, plan, tracking = ctx.spec, ctx.plan, ctx.tracking()
    if args.format == "table" and not ctx.embedded:
        from sweeper.driver.cluster import job_status

        code = job_status(spec, ctx.profile, follow=args.follow)
        if code is not None:
            return code
    from sweeper.tracking.results import older_recipe_note, status_rows

    records = tracking.trial_records()  # every run of the experiment: this sweep's, and older recipes'
    rows = status_rows(plan, records)
    older = older_recipe_note(plan, records)
    if args.format == "json":
        print(json.dumps({"spec": spec.name, "experiment": spec.experiment, "trials": rows,
                          "older_recipe": older}, indent=2))
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
    if older is not None:
        console.print(older, markup=False, soft_wrap=True)
    return 0


def run_stop(args: argparse.Namespace) -> int:
    from sweeper.console import console

    ctx = Context(args)
    spec, profile = ctx.spec, ctx.profile
    if ctx.embedded:
        from sweeper.driver.stop import stop_sweep

        console.print(stop_sweep(profile.storage_root(), spec.experiment, profile.storage_endpoint()))
    else:
        from sweeper.driver.cluster import stop

        console.print(stop(spec, profile))
    return 0


def run_results(args: argparse.Namespace) -> int:
    import csv
    import json
    import sys

    from sweeper.console import print_table
    from sweeper.units import fmt_count, fmt_epochs, fmt_sci

    ctx = Context(args)
    spec, plan, tracking = ctx.spec, ctx.plan, ctx.tracking()
    from sweeper.tracking.results import RESULT_COLUMNS, eval_columns, finished_rows

    rows = finished_rows(plan, tracking)
    if args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=[*RESULT_COLUMNS, *eval_columns(rows)], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return 0
    if args.format == "json":
        print(json.dumps({"spec": spec.name, "experiment": spec.experiment, "results": rows}, indent=2))
        return 0
    print_table(f"{spec.name}: {len(rows)} finished of {len(plan.trials)}",
                [(c, "left") for c in ("family", "model", "N", "U", "epochs", "D", "FLOPs", "final loss", "best loss",
                                       "options", "run")],
                [[r["family"], r["model"], fmt_count(r["params"]), fmt_count(r["unique_tokens"]), fmt_epochs(r["epochs"]),
                  fmt_count(r["tokens"]), fmt_sci(r["flops"]), f"{r['loss']:.4f}",
                  f"{r['loss_best']:.4f}" if r["loss_best"] is not None else "", r["options"], r["run_id"]]
                 for r in rows])
    return 0


def run_ui(args: argparse.Namespace) -> int:
    from sweeper.cli.ui import serve_ui

    return serve_ui(Context(args).profile.tracking_uri(), port=args.port, experiment=args.experiment)
