"""Independent pieces of the fit's work spread over the cores: bootstrap refits, C_crit per draw.

Each piece depends only on its own input, so results are the same however the work is split:
`map_chunks` keeps their order. Where the platform can fork, the children inherit the function
(a closure over the data is fine, nothing of it is pickled); only the inputs and results travel.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any

_FUNCTION: Callable[[Any], Any] | None = None  # what forked children call: set before the fork


def workers(processes: int) -> int:
    """`processes`, or one per core this process may use when it is 0."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return processes or cores or 1


def _call(chunk: Any) -> Any:
    assert _FUNCTION is not None
    return _FUNCTION(chunk)


def map_chunks(function: Callable[[Any], Any], chunks: Sequence[Any], processes: int) -> list[Any]:
    """[function(chunk) for chunk in chunks], on `processes` forked processes when it is > 1,
    there are 2 or more chunks and the platform can fork; in this process otherwise."""
    if processes <= 1 or len(chunks) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [function(chunk) for chunk in chunks]
    global _FUNCTION
    _FUNCTION = function
    try:
        context = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
            return list(pool.map(_call, chunks))
    finally:
        _FUNCTION = None
