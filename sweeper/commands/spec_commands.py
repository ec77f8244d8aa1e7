"""`sweeper validate` and `sweeper plan`: read a spec, expand and size it, show what would run."""

from __future__ import annotations

import argparse
from typing import Any


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


def load_profile_for(args: argparse.Namespace, spec_file: str | None):  # -> Profile
    from sweeper.profile import default_profile_path, load_profile

    if args.backend:
        return load_profile(args.backend)
    return load_profile(default_profile_path("cluster" if args.cluster else "local", spec_file))


def load_plan(args: argparse.Namespace):  # -> tuple[SweepSpec, Plan]
    from sweeper.plan import plan_sweep
    from sweeper.spec import load_spec

    spec = load_spec(args.spec)
    return spec, plan_sweep(spec, load_profile_for(args, args.spec))


def run_validate(args: argparse.Namespace) -> int:
    from sweeper.console import console

    spec, plan = load_plan(args)
    totals = plan.totals()
    families = ", ".join(f"{n} {f}" for f, n in totals["per_family"].items())
    files = " extends ".join(spec.files)
    console.print(f"{files}: valid, {totals['trials']} trials ({families}) for profile {plan.profile}")
    return 0


def run_plan(args: argparse.Namespace) -> int:
    from sweeper.commands.plan_output import render
    from sweeper.spec import TRAIN_KEYS
    from sweeper.where import parse_where

    from sweeper.commands.plan_state import store_states

    filters = parse_where(args.where, train_keys=TRAIN_KEYS)
    spec, plan = load_plan(args)
    states = store_states(load_profile_for(args, args.spec), spec.experiment, [t.id for t in plan.trials])
    render(spec, plan, filters, args.format, states)
    return 0
