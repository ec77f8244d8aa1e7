"""The one console every command writes through, and the one way a user error ends a command."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

# Piped output (files, CI logs) gets wide lines instead of rich's 80-column default.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, highlight=False)


class UserError(Exception):
    """A mistake the user can fix (bad spec, missing file, unreachable server).

    The CLI prints its message as one line on stderr and exits with code 2, without a traceback.
    The message names what went wrong and where (file:line and key path, a URL, a path).
    """

    exit_code = 2


def one_line(text: str) -> str:
    """Newlines, escape sequences and other unprintable characters written as escapes (\\n, \\x1b), so a
    message stays one line and text from a file cannot drive the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def fail(error: UserError) -> int:
    err_console.print(f"[bold red]error:[/] {escape(one_line(str(error)))}", soft_wrap=True, emoji=False)
    return error.exit_code


def is_terminal() -> bool:
    return sys.stdout.isatty()
