"""`sweeper validate` and `sweeper plan`: read a spec, expand and size it, show what would run."""

from __future__ import annotations

import argparse
from typing import Any

from sweeper.cli.context import Context


def register(subparsers: Any) -> None:
    validate = subparsers.add_parser("validate", help="check a spec; errors name file:line and key path",
                                     description="Parse and check a sweep spec, expand its grid, and "
                                                 "report the number of trials. Exit 2 on any error.")
    validate.add_argument("spec", metavar="SPEC", help="sweep spec (YAML)")
    add_profile_arguments(validate)
    validate.set_defaults(handler=run_validate)

    plan = subparsers.add_parser("plan", help="trials with N, U, epochs, D, steps, FLOPs, memory, time, cost",
                                 description="Expand a spec into trials sized for a backend profile's "
                                             "hardware, longest first, with totals.")
    plan.add_argument("spec", metavar="SPEC", help="sweep spec (YAML)")
    add_profile_arguments(plan)
    plan.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    plan.add_argument("--where", action="append", default=[], metavar="EXPR",
                      help="keep matching trials: family=ar, model=7M,14M, epochs>=100, flops<1e19 (repeatable)")
    plan.set_defaults(handler=run_plan)


def add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--backend", metavar="FILE", help="backend profile (default: backends/local.yaml)")
    group.add_argument("--cluster", action="store_true", help="use backends/cluster.yaml")


def run_validate(args: argparse.Namespace) -> int:
    from sweeper.console import console

    ctx = Context(args)
    spec, plan = ctx.spec, ctx.plan
    totals = plan.totals()
    families = ", ".join(f"{n} {f}" for f, n in totals["per_family"].items())
    files = " extends ".join(spec.files)
    console.print(f"{files}: valid, {totals['trials']} trials ({families}) for profile {plan.profile}")
    return 0


def run_plan(args: argparse.Namespace) -> int:
    from sweeper.plan.documents import render
    from sweeper.plan.where import parse_where
    from sweeper.spec import TRAIN_KEYS
    from sweeper.tracking.states import store_states

    filters = parse_where(args.where, train_keys=TRAIN_KEYS)
    ctx = Context(args)
    spec, plan = ctx.spec, ctx.plan
    render(spec, plan, filters, args.format, store_states(ctx.profile, spec.experiment, plan.trials))
    return 0
