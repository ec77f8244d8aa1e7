"""The `sweeper fit` and `sweeper report` subcommands.

With SPEC input both read the finished trials from the profile's tracking store and log the
fit (metrics `fit.*`, a tag naming the loss, fit.json; the report folder under `report/`) to
each sweep's parent run, so the MLflow UI shows them beside the trials. A CSV input logs nothing.

Only argparse and the standard library at module level: the CLI imports this module to build
its parser, and `sweeper --help` must not wait for numpy, scipy or matplotlib.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeper.cli.context import Context
from sweeper.cli.spec import add_profile_arguments

if TYPE_CHECKING:  # the types only; importing them for real would pull in numpy and mlflow
    from sweeper.fit.results import Analysis, FitOptions
    from sweeper.fit.render import Loss
    from sweeper.fit.report import WrittenReport
    from sweeper.fit.table import TrialCurve
    from sweeper.tracking import Tracking

PARAMETER_KEYS = ("E", "A", "B", "alpha", "beta", "R_D_star", "R_N_star")
COLUMN_KEYS = ("params", "tokens", "unique_tokens", "loss", "flops", "family", "seed")  # table.SPELLINGS
CURVE_METRIC = "val/loss"  # sweeper.trial; step = tokens seen
TAG_FIT_LOSS = "sweeper.fit.loss"  # which loss of each trial the logged fit used: final or best
TAG_FIT_SOURCE = "sweeper.fit.source"  # the specs whose trials it pooled
REPORT_ARTIFACTS = "report"


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


def _columns(text: str) -> dict[str, str]:
    """`params=params_N,tokens=tokens_D`: which of the file's columns holds what sweeper reads."""
    mapping = {}
    for part in text.split(","):
        key, separator, column = part.partition("=")
        if not separator or not key.strip() or not column.strip():
            raise argparse.ArgumentTypeError(f"expected KEY=COLUMN[,KEY=COLUMN...], got {text!r}")
        if key.strip() not in COLUMN_KEYS:
            raise argparse.ArgumentTypeError(f"unknown key {key.strip()!r}; one of "
                                             f"{', '.join(COLUMN_KEYS)}")
        mapping[key.strip()] = column.strip()
    return mapping


def _add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("specs", nargs="*", metavar="SPEC",
                        help="sweep specs whose finished trials to read from the profile's tracking "
                             "store, pooled (a trial in several specs counts once)")
    add_profile_arguments(parser)
    parser.add_argument("--loss", choices=("final", "best"), default="final",
                        help="SPEC input: each trial's final validation loss (default) or its best")
    parser.add_argument("--from-csv", type=Path, metavar="FILE",
                        help="trials as CSV: params, tokens, loss, optional unique_tokens, family, "
                             "seed (a row without unique_tokens, or with tokens ≤ unique_tokens, "
                             "is single-epoch; without family the family is 'all'); common "
                             "spellings (params_N, Model Size, tokens_D, val_loss, ...) are "
                             "recognised, and flops may stand in for tokens (D = C/6N)")
    parser.add_argument("--columns", type=_columns, default={}, metavar="KEY=COLUMN,...",
                        help="--from-csv: which column holds what, e.g. "
                             "params=params_N,tokens=tokens_D; keys: " + ", ".join(COLUMN_KEYS))
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
    parser.add_argument("--no-log", action="store_true",
                        help="SPEC input: do not log the fit to the sweeps' MLflow runs")


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
                    "figures (with SPEC input also every trial's validation curve) into --out; "
                    "with SPEC input the report is logged to each sweep's MLflow run as well.")
    _add_fit_arguments(report)
    report.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="folder for report.md, report.html and figures/ (created if missing)")
    report.set_defaults(handler=run_report)


@dataclass(frozen=True, slots=True, kw_only=True)
class Sweep:
    """One spec's sweep in its tracking store: where its trials' runs and its parent run live."""

    spec_file: str
    name: str
    tracking: Tracking
    run_ids: tuple[str, ...]  # the finished trials this spec contributed to the pooled rows


@dataclass(frozen=True, slots=True, kw_only=True)
class Inputs:
    """The trials to fit, where they came from, and which of their losses is fitted."""

    rows: tuple[dict[str, Any], ...]  # `sweeper results` rows; empty for a CSV input
    source: str
    loss: Loss
    sweeps: tuple[Sweep, ...]  # empty for a CSV input


def _inputs(ctx: Context) -> Inputs:
    from sweeper.console import UserError

    args = ctx.args
    if args.specs and args.from_csv is not None:
        raise UserError("pass SPEC files or --from-csv FILE, not both")
    if not args.specs and args.from_csv is None:
        raise UserError("no input: pass SPEC files (their finished trials in MLflow) or --from-csv FILE "
                        "(columns params, tokens, loss, optional unique_tokens, family, seed)")
    if args.from_csv is not None:
        return Inputs(rows=(), source=str(args.from_csv), loss="csv", sweeps=())
    rows, sweeps = _spec_rows(ctx)
    return Inputs(rows=rows, source=" + ".join(args.specs), loss=args.loss, sweeps=sweeps)


def _options(args: argparse.Namespace) -> FitOptions:
    from sweeper.console import UserError
    from sweeper.fit.results import FitOptions

    try:
        return FitOptions(fixed=tuple(args.fix), tie_exponents=args.tie,
                          resamples=args.bootstrap, seed=args.seed,
                          confidence=args.confidence, cv_folds=args.cv_folds)
    except ValueError as error:
        raise UserError(str(error)) from None


def _analyse(ctx: Context) -> tuple[Inputs, Analysis]:
    """Check the options, read the trials, fit them."""
    from sweeper.fit.analysis import analyse
    from sweeper.fit.table import average_seeds, from_rows, read_csv

    args = ctx.args
    options = _options(args)
    inputs = _inputs(ctx)
    if args.columns and args.from_csv is None:
        from sweeper.console import UserError
        raise UserError("--columns names the columns of a --from-csv file; it has no meaning "
                        "for SPEC input")
    # trials that set train options (ablations) are compared in the report, not fitted
    plain = [row for row in inputs.rows if not row.get("options")]
    if inputs.rows and not plain:
        from sweeper.console import UserError
        raise UserError(f"{inputs.source}: all {len(inputs.rows)} finished trials set train options "
                        "(ablations), and the fit reads plain trials only; run the plain ar and mdm "
                        "trials beside them")
    trials = read_csv(args.from_csv, args.columns) if args.from_csv is not None else \
        from_rows(plain, source=inputs.source, loss=args.loss)
    observations = average_seeds(trials)
    counts = {name: int((trials.family == name).sum()) for name in observations.families()}
    analysis = analyse(observations, counts, options)
    if args.specs:
        from dataclasses import replace

        analysis = replace(analysis, entropy_rate=entropy_floor([ctx.for_spec(p).spec for p in args.specs]))
    return inputs, analysis


def entropy_floor(specs: list[Any]) -> float | None:
    """The entropy rate per token of the specs' validation source where it is known exactly: a
    synthetic source read with its own `symbols` tokenizer (sweeper.data.synthetic). None for
    any other source, or when the specs' sources differ."""
    from sweeper.spec import SyntheticSource

    rates = set()
    for spec in specs:
        source = spec.data.validation or spec.data.train
        if not isinstance(source, SyntheticSource) or spec.data.tokenizer.kind != "symbols":
            return None
        from sweeper.data.synthetic import entropy_rate_nats  # numpy only

        rates.add(entropy_rate_nats(source))
    return rates.pop() if len(rates) == 1 else None


def _spec_rows(ctx: Context) -> tuple[tuple[dict[str, Any], ...], tuple[Sweep, ...]]:
    """Finished trials of every spec's plan, from the profile's tracking store; each trial once."""
    from sweeper.tracking.results import finished_rows

    rows: dict[str, dict] = {}
    sweeps = []
    for path in ctx.args.specs:
        each = ctx.for_spec(path)  # sweeps in one store share its Tracking
        spec, tracking = each.spec, each.tracking(create=True)
        added = []
        for row in finished_rows(each.plan, tracking):
            if row["trial_id"] not in rows:
                rows[row["trial_id"]] = row
                added.append(row["run_id"])
        sweeps.append(Sweep(spec_file=path, name=spec.name, tracking=tracking, run_ids=tuple(added)))
    return tuple(rows.values()), tuple(sweeps)


def _curves(inputs: Inputs) -> tuple[TrialCurve, ...] | None:
    """Every fitted trial's validation curve, or None for a CSV input (it has none)."""
    from sweeper.fit.table import curves_from_rows

    if not inputs.sweeps:
        return None
    histories: dict[str, list[tuple[int, float]]] = {}
    for sweep in inputs.sweeps:
        histories.update(sweep.tracking.curves(sweep.run_ids, CURVE_METRIC))
    return curves_from_rows(inputs.rows, histories)


def _log(inputs: Inputs, document: dict[str, Any], *, report: WrittenReport | None,
         stderr: bool) -> None:
    """Log the fit (and the report's files) to each sweep's parent run; a sweep that never ran
    has none, which is said in one line."""
    from mlflow.exceptions import MlflowException

    from sweeper.console import UserError, console, err_console
    from sweeper.fit import render

    say = err_console if stderr else console
    metrics = render.to_metrics(document)
    tags = {TAG_FIT_LOSS: inputs.loss, TAG_FIT_SOURCE: inputs.source}
    files: list[tuple[Path, str]] = []
    if report is not None:  # what was written now, not whatever else lies in --out
        files += [(report.markdown, REPORT_ARTIFACTS), (report.html, REPORT_ARTIFACTS)]
        files += [(figure, f"{REPORT_ARTIFACTS}/figures") for figure in report.figures]
    logged: set[tuple[str, str]] = set()
    for sweep in inputs.sweeps:
        where = f"sweep '{sweep.name}' in MLflow experiment '{sweep.tracking.experiment}'"
        run_id = sweep.tracking.sweep_run_id(sweep.name)
        if run_id is None:
            say.print(f"{sweep.spec_file}: {where} has no run yet (never run); nothing logged there",
                      soft_wrap=True)
            continue
        if (sweep.tracking.tracking_uri, run_id) in logged:
            continue
        logged.add((sweep.tracking.tracking_uri, run_id))
        try:
            sweep.tracking.log_summary(run_id, metrics=metrics, tags=tags,
                                       texts={"fit.json": json.dumps(document, indent=2, ensure_ascii=False)},
                                       files=files)
        except (MlflowException, OSError) as error:
            raise UserError(f"cannot log the fit to run {run_id} of {where}: "
                            f"{getattr(error, 'message', None) or error}") from None
        what = f"{len(metrics)} fit metrics, fit.json" + (f" and {REPORT_ARTIFACTS}/" if report else "")
        say.print(f"logged {what} to run {run_id} of {where}", soft_wrap=True)


def run_fit(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from sweeper.console import console
    from sweeper.fit import render

    inputs, analysis = _analyse(Context(args))
    document = render.to_json(analysis, source=inputs.source, loss=inputs.loss)
    if args.format == "json":
        # print() not console: rich would wrap long lines and break the JSON.
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        console.print(escape(render.input_line(inputs.source, inputs.loss)), soft_wrap=True)
        for fit in analysis.families.values():
            console.print(render.family_table(fit, analysis))
        if analysis.points:
            console.print(render.c_crit_table(analysis))
        sentence = render.c_crit_sentence(analysis)
        if sentence:
            console.print(sentence)
        header, rows = render.versus_ar_rows(analysis)
        if rows:
            console.print(render.text_table("C_crit of other families against ar (compared on 6ND; "
                                            "'processed': on the compute they spend)", header, rows))
        for note in render.all_notes(analysis):
            console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    if inputs.sweeps and not args.no_log:
        _log(inputs, document, report=None, stderr=args.format == "json")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from sweeper.console import UserError, console
    from sweeper.fit import render, report

    inputs, analysis = _analyse(Context(args))
    curves = _curves(inputs)
    try:
        written = report.write_report(analysis, args.out, source=inputs.source, loss=inputs.loss,
                                      curves=curves, rows=inputs.rows)
    except OSError as error:
        raise UserError(f"cannot write the report into {args.out}: "
                        f"{error.strerror or error}") from None
    console.print(f"wrote {written.markdown} and {written.html} "
                  f"({len(written.figures)} figures in {written.markdown.parent / 'figures'})")
    for note in render.all_notes(analysis):
        console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    if inputs.sweeps and not args.no_log:
        document = render.to_json(analysis, source=inputs.source, loss=inputs.loss)
        _log(inputs, document, report=written, stderr=False)
    return 0
