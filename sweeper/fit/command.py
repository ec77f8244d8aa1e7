"""The `sweeper fit` and `sweeper report` subcommands.

Only argparse and the standard library at module level: the CLI imports this module to build
its parser, and `sweeper --help` must not wait for numpy, scipy or matplotlib.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the type only; importing it for real would pull in numpy
    from sweeper.fit.analysis import Analysis

PARAMETER_KEYS = ("E", "A", "B", "alpha", "beta", "R_D_star", "R_N_star")


def _fix(text: str) -> tuple[str, float]:
    name, separator, value = text.partition("=")
    name = name.strip()
    if not separator or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    if name not in PARAMETER_KEYS:
        raise argparse.ArgumentTypeError(f"unknown parameter {name!r}; one of "
                                         f"{', '.join(PARAMETER_KEYS)}")
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: expected a number, got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError(f"{name}: expected a positive number, got {value!r}")
    return name, number


def _add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("specs", nargs="*", metavar="SPEC",
                        help="sweep specs whose finished trials to read from the profile's tracking "
                             "store, pooled (a trial in several specs counts once)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--backend", metavar="FILE", help="backend profile (default: backends/local.yaml)")
    group.add_argument("--cluster", action="store_true", help="use backends/cluster.yaml")
    parser.add_argument("--loss", choices=("final", "best"), default="final",
                        help="SPEC input: each trial's final validation loss (default) or its best")
    parser.add_argument("--from-csv", type=Path, metavar="FILE",
                        help="trials as CSV: params, tokens, loss, optional unique_tokens, family, "
                             "seed (a row without unique_tokens, or with tokens ≤ unique_tokens, "
                             "is single-epoch; without family the family is 'all')")
    parser.add_argument("--tie", action="store_true", help="fit one exponent: α = β")
    parser.add_argument("--fix", type=_fix, action="append", default=[], metavar="NAME=VALUE",
                        help=f"hold a parameter at a value (repeatable); NAME is one of "
                             f"{', '.join(PARAMETER_KEYS)}")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap resamples for the intervals (default 1000; 0: none)")
    parser.add_argument("--confidence", type=float, default=0.9, metavar="P",
                        help="interval coverage (default 0.9)")
    parser.add_argument("--cv-folds", type=int, default=0, metavar="K",
                        help="folds of the cross-validated R² (default 0: leave-one-out)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the bootstrap and the folds (default 0)")


def register(subparsers: argparse._SubParsersAction) -> None:
    fit = subparsers.add_parser(
        "fit", help="fit the scaling laws per family, with intervals and the critical compute",
        description="Fit the data-constrained scaling law (Muennighoff et al. 2023) per model "
                    "family in two steps (step 1: "
                    "E, A, B, α, β on single-epoch trials; step 2: R*_D, R*_N on all trials), "
                    "with bootstrap intervals, in-sample and cross-validated R², and the compute "
                    "C_crit(U) beyond which masked diffusion beats autoregression.")
    _add_fit_arguments(fit)
    fit.add_argument("--format", choices=("table", "json"), default="table",
                     help="table (default) or the JSON document")
    fit.set_defaults(handler=run_fit)

    report = subparsers.add_parser(
        "report", help="write the fit's report: Markdown, HTML and PNG figures",
        description="Fit as `sweeper fit` does and write report.md, report.html and the "
                    "figures into --out.")
    _add_fit_arguments(report)
    report.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="folder for report.md, report.html and figures/ (created if missing)")
    report.set_defaults(handler=run_report)


def _analyse(args: argparse.Namespace) -> Analysis:
    from sweeper.console import UserError

    if args.specs and args.from_csv is not None:
        raise UserError("pass SPEC files or --from-csv FILE, not both")
    if not args.specs and args.from_csv is None:
        raise UserError("no input: pass SPEC files (their finished trials in MLflow) or --from-csv FILE "
                        "(columns params, tokens, loss, optional unique_tokens, family, seed)")

    from sweeper.fit.analysis import FitOptions, analyse
    from sweeper.fit.table import average_seeds, from_rows, read_csv

    try:
        options = FitOptions(fixed=tuple(args.fix), tie_exponents=args.tie,
                             resamples=args.bootstrap, seed=args.seed,
                             confidence=args.confidence, cv_folds=args.cv_folds)
    except ValueError as error:
        raise UserError(str(error)) from None
    trials = read_csv(args.from_csv) if args.from_csv is not None else \
        from_rows(_spec_rows(args), source=" + ".join(args.specs), loss=args.loss)
    observations = average_seeds(trials)
    counts = {name: int((trials.family == name).sum()) for name in observations.families()}
    return analyse(observations, counts, options)


def _spec_rows(args: argparse.Namespace) -> list[dict]:
    """Finished trials of every spec's plan, from the profile's tracking store; each trial once."""
    from sweeper.commands.run_commands import finished_rows
    from sweeper.commands.spec_commands import load_profile_for
    from sweeper.plan import plan_sweep
    from sweeper.run import tracking_uri
    from sweeper.spec import load_spec
    from sweeper.tracking import Tracking, check_reachable

    rows: dict[str, dict] = {}
    for path in args.specs:
        spec = load_spec(path)
        profile = load_profile_for(args, path)
        uri = tracking_uri(profile)
        check_reachable(uri)
        for row in finished_rows(plan_sweep(spec, profile), Tracking(uri, spec.experiment)):
            rows.setdefault(row["trial_id"], row)
    return list(rows.values())


def run_fit(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from sweeper.console import console
    from sweeper.fit import render

    analysis = _analyse(args)
    if args.format == "json":
        # print() not console: rich would wrap long lines and break the JSON.
        print(json.dumps(render.to_json(analysis), indent=2, ensure_ascii=False))
        return 0
    for fit in analysis.families.values():
        console.print(render.family_table(fit, analysis))
    if analysis.points:
        console.print(render.c_crit_table(analysis))
    sentence = render.c_crit_sentence(analysis)
    if sentence:
        console.print(sentence)
    for note in render.all_notes(analysis):
        console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from sweeper.console import UserError, console
    from sweeper.fit import report

    analysis = _analyse(args)
    try:
        source = str(args.from_csv) if args.from_csv is not None else " + ".join(args.specs)
        written = report.write_report(analysis, args.out, source=source)
    except OSError as error:
        raise UserError(f"cannot write the report into {args.out}: "
                        f"{error.strerror or error}") from None
    console.print(f"wrote {written.markdown} and {written.html} "
                  f"({len(written.figures)} figures in {written.markdown.parent / 'figures'})")
    for note in report.render.all_notes(analysis):
        console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    return 0
