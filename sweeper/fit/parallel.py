"""Independent pieces of the fit's work spread over the cores: bootstrap refits, C_crit per draw.

Each row of the input depends only on itself, so results are the same however the rows are split:
`map_rows` keeps their order. Where the platform can fork, the children inherit the function
(a closure over the data is fine, nothing of it is pickled); only the rows and results travel.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from collections.abc import Callable

import numpy as np

RowsFunction = Callable[[np.ndarray], np.ndarray]  # rows (n, ...) -> one result per row (n, ...)
_FUNCTION: RowsFunction | None = None  # what forked children call: set before the fork


def workers(processes: int) -> int:
    """`processes`, or one per core this process may use when it is 0."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return processes or cores or 1


def _call(rows: np.ndarray) -> np.ndarray:
    assert _FUNCTION is not None
    return _FUNCTION(rows)


def map_rows(function: RowsFunction, rows: np.ndarray, processes: int) -> np.ndarray:
    """function(rows), computed in chunks of rows (4 per process) on `workers(processes)` forked
    processes and concatenated in order; in this process, on all rows at once, where that is one
    process, there are fewer than 2 rows or the platform cannot fork."""
    count = workers(processes)
    if count <= 1 or len(rows) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return function(rows)
    chunks = [chunk for chunk in np.array_split(rows, 4 * count) if len(chunk)]
    global _FUNCTION
    _FUNCTION = function
    try:
        context = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(max_workers=count, mp_context=context) as pool:
            return np.concatenate(list(pool.map(_call, chunks)))
    finally:
        _FUNCTION = None
