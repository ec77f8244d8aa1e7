"""The driver-path benchmarks keep running: each in its quick mode, its printed figures parsed.
Their timings are read by people (benchmarks/README.md), never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

# both start real servers (Ray, an MLflow server): 30-60 s each
pytestmark = pytest.mark.slow


def run(script: str, *args: str) -> tuple[str, dict[str, Any]]:
    """(stdout, the JSON summary it ends with)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    start = 0 if out.startswith("{\n") else out.index("\n{\n") + 1  # the summary may be all it prints
    return out, json.loads(out[start:])


def test_ray_overhead_quick_runs_both_paths_and_reads_the_driver_timestamps() -> None:
    out, summary = run("ray_overhead.py", "--quick")
    assert summary["trials"] == 2
    for key in ("serial_wall_s", "two_processes_wall_s", "two_processes_span_s", "sweeper_run_wall_s",
                "sweeper_run_span_s", "ray_startup_s", "startup_to_sweep_run_s", "teardown_s"):
        assert summary[key] > 0, key
    assert summary["ray_startup_s"] > summary["startup_to_sweep_run_s"]
    assert summary["sweeper_run_wall_s"] > summary["ray_startup_s"] + summary["sweeper_run_span_s"] * 0.99
    assert isinstance(summary["overhead_once_up"], float)
    direct, ray = summary["per_trial_two_processes"], summary["per_trial_sweeper_run"]
    assert direct["results"] == ray["results"] > 0  # the same trials, reporting the same points
    assert direct["steps_s"] > 0 and ray["steps_s"] > 0
    assert summary["per_trial_cost_s"] == pytest.approx(ray["non_step_s"] - direct["non_step_s"], abs=0.002)
    assert "overhead once Ray is up" in out and "sweeper run (Ray embedded, MLflow sqlite)" in out
    if sys.platform == "linux":
        assert summary["sweeper_run_cpu_s"]["trial workers (Ray actors)"] > 0


def test_tracking_cost_quick_times_every_path_on_both_stores() -> None:
    out, summary = run("tracking_cost.py", "--quick")
    rows = {(r["store"], r["path"]): r for r in summary["rows"]}
    assert set(rows) == {(store, path) for store in ("sqlite", "server")
                         for path in ("trial_log", "log_metric", "log_batch")}
    for row in rows.values():
        assert row["points"] > 0 and row["us_per_point"] > 0
        assert row["points_per_s"] == pytest.approx(1e6 / row["us_per_point"], rel=0.05)
    assert all(len(v) == 3 for v in summary["open_trial_ms"].values())
    assert all(ms > 0 for ms in summary["step_ms"].values())
    assert "View run" not in out  # MLflow's per-run links stay off the table


def test_scale_quick_times_every_bookkeeping_command(tmp_path: Path) -> None:
    _, summary = run("scale.py", "--quick", "--store", str(tmp_path))
    assert summary["trials"] == 50 and summary["curves_read"] == 50
    assert summary["run_line"] == "50 trials: 50 finished, 0 to run"
    assert summary["plan_line"].endswith("experiment 'bench': 50 done")
    for key in ("plan_s", "run_dedupe_s", "status_s", "results_s", "fit_s", "report_s", "first_read_status_json_s"):
        assert summary[key] > 0, key
