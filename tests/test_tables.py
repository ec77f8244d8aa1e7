"""Trial tables: boxed for a screenful, plain aligned columns past it (a 10,000-row table in milliseconds)."""

from __future__ import annotations

import time

from sweeper.console import BOXED_ROWS, print_table

COLUMNS = [("id", "left"), ("N", "right")]


def test_a_short_table_is_boxed(capsys) -> None:
    print_table("two trials", COLUMNS, [["aaa", "7M"], ["bbbbbb", "140M"]])
    out = capsys.readouterr().out
    assert out.startswith("two trials") and "┃ id" in out and "│ bbbbbb │ 140M │" in out


def test_a_long_table_is_plain_aligned_columns_and_fast(capsys) -> None:
    rows = [[f"{i:012x}", f"{i}M"] for i in range(10_000)]
    start = time.perf_counter()
    print_table("10,000 trials", COLUMNS, rows)
    elapsed = time.perf_counter() - start
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "10,000 trials" and lines[1] == "id" + " " * 16 + "N"
    assert lines[2] == "000000000000" + " " * 5 + "0M" and lines[-1] == "00000000270f  9999M"
    assert len(lines) == 10_002 and len(rows) > BOXED_ROWS and elapsed < 1.0
