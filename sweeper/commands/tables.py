"""Tables of trials on the console: rich's boxed table for a screenful, plain aligned columns beyond.

rich lays out every cell of a table before printing it, ~2 ms a row here: a 10,000-trial `plan`,
`status` or `results` spent 20-40 s drawing. Past BOXED_ROWS rows the same columns are printed as
plain text, padded to their widest cell, which takes milliseconds and pipes into grep and sort.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from sweeper.console import console

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
