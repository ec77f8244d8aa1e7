"""The `sweeper` command: a thin layer over the library.

Each subcommand is one small function that makes one `Context` (sweeper.cli.context), which loads
the spec, the profile, the plan and the tracking store at most once. Heavy imports (torch, ray,
mlflow) happen inside the command that needs them, so `--help`, `validate` and `plan` answer
instantly. Every user error ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sweeper import __version__
from sweeper.cli import data, fit, run, spec, train
from sweeper.cli import eval as eval_command
from sweeper.console import UserError, fail

# The modules that add subcommands, in `--help`'s order; each exposes register(subparsers) and
# imports nothing heavy at module level.
COMMAND_MODULES = (spec, data, train, run, eval_command, fit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sweeper",
        description="Declarative sweeps for data-constrained scaling laws: AR vs masked diffusion.",
    )
    parser.add_argument("--version", action="version", version=f"sweeper {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserError as error:
        return fail(error)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
