"""The one console every command writes through, the one way a user error ends a command, and
tables of trials on it.

rich lays out every cell of a table before printing it, ~2 ms a row here: a 10,000-trial `plan`,
`status` or `results` spent 20-40 s drawing. Past BOXED_ROWS rows the same columns are printed as
plain text, padded to their widest cell, which takes milliseconds and pipes into grep and sort.
"""

from __future__ import annotations

import copyreg
import re
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Piped output (files, CI logs) gets wide lines instead of rich's 80-column default.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, highlight=False)


# user:password@ in a URI, and the values of query parameters named like a credential
# (?token=, &api_key=, X-Amz-Signature=, ...): what `redact` hides.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:]*):[^\s/?#@]*@")
_QUERY = re.compile(r"(?P<head>[?&;](?P<name>[^=&;#\s]+)=)(?P<value>[^&;#\s'\"]+)")
_SECRET_NAME = re.compile(r"(?:^|[_.-])(?:[a-z]*token|api_?key|access_?key|key|secret|passw(?:or)?d|pwd|pass|signature"
                          r"|sig|credentials?|auth[a-z]*)$", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with the credentials a URI can carry replaced by ***: the password of user:password@
    and the values of query parameters named like a credential. Every message that can hold a URI
    (errors, notes, run tags) goes through here."""
    text = _USERINFO.sub(r"\g<head>:***@", text)
    return _QUERY.sub(lambda m: m["head"] + "***" if _SECRET_NAME.search(m["name"]) else m[0], text)


class UserError(Exception):
    """A mistake the user can fix (bad spec, missing file, unreachable server).

    The CLI prints its message as one line on stderr and exits with code 2, without a traceback.
    The message names what went wrong and where (file:line and key path, a URL, a path); credentials
    in it are redacted when it is made (`redact`).
    """

    exit_code = 2

    def __init__(self, message: str = "", *args: Any) -> None:
        super().__init__(redact(str(message)), *args)

    def __reduce__(self) -> tuple[Any, ...]:
        # Ray carries an error from a worker to the driver by pickling it. The default rebuilds it by
        # calling the class with `args` (the one message), which subclasses taking other arguments
        # refuse; this rebuilds it without calling __init__, attributes restored.
        return copyreg.__newobj__, (type(self), *self.args), self.__dict__  # type: ignore[attr-defined]


def one_line(text: str) -> str:
    """Newlines, escape sequences and other unprintable characters written as escapes (\\n, \\x1b), so a
    message stays one line and text from a file cannot drive the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def fail(error: UserError) -> int:
    err_console.print(f"[bold red]error:[/] {escape(one_line(redact(str(error))))}", soft_wrap=True, emoji=False)
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
