"""The fit benchmark keeps running (its timings are read by people, not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fit_benchmark_runs_at_a_small_size() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fit_bootstrap.py"), "--resamples", "12",
         "--trials", "80"],
        capture_output=True, text=True, check=True, cwd=ROOT)
    assert "80 trials (40 per family), 12 bootstrap resamples" in result.stdout
    assert "ms per bootstrap refit" in result.stdout
