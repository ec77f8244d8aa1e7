"""The one console every command writes through, the one way a user error ends a command, and
tables of trials on it.

rich lays out every cell of a table before printing it, ~2 ms a row here: a 10,000-trial `plan`,
`status` or `results` spent 20-40 s drawing. Past BOXED_ROWS rows the same columns are printed as
plain text, padded to their widest cell, which takes milliseconds and pipes into grep and sort.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

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


BOXED_ROWS = 200


def print_table(title: str, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[str]],
                styles: Sequence[str | None] | None = None, *, wrap: Sequence[str] = ()) -> None:
    """columns: (name, "left" or "right"); styles: one rich style per row (boxed tables only)."""
    if len(rows) <= BOXED_ROWS:
        table = Table(title=title, title_justify="left", header_style="bold")
        for name, justify in columns:
            table.add_column(name, justify=justify, no_wrap=name not in wrap)  # type: ignore[arg-type]
        for i, row in enumerate(rows):
            table.add_row(*row, style=styles[i] if styles else None)
        console.print(table)
        return
    widths = [max(len(name), *(len(row[i]) for row in rows)) for i, (name, _) in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.rjust(w) if justify == "right" else cell.ljust(w)
                         for cell, w, (_, justify) in zip(cells, widths, columns)).rstrip()

    out = console.file  # past rich: it would lay the text out line by line again
    out.write("\n".join([title, line([name for name, _ in columns]), *(line(row) for row in rows)]) + "\n")
    out.flush()
