"""The `sweeper` command: a thin layer over the library.

Each subcommand is one small function. Heavy imports (torch, ray, mlflow) happen inside the
command that needs them, so `--help`, `validate` and `plan` answer instantly. Every user error
ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sweeper import __version__
from sweeper.console import UserError, fail

# Modules that add subcommands; each exposes register(subparsers) and imports nothing heavy.
COMMAND_MODULES = (
    "sweeper.commands.spec_commands",
    "sweeper.data.command",
    "sweeper.commands.train_commands",
    "sweeper.commands.run_commands",
    "sweeper.fit.command",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="sweeper",
        description="Declarative sweeps for data-constrained scaling laws: AR vs masked diffusion.",
    )
    parser.add_argument("--version", action="version", version=f"sweeper {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
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
