"""The benchmark scripts keep running: the GPU MFU script in its CPU mode (what CI runs), and the
throughput benchmark on a tiny shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sweeper.presets import PAPER_VOCAB_SIZE, PRESETS, num_params_actual

REPO = Path(__file__).resolve().parents[2]


def run(script: str, *args: str) -> list[dict]:
    """Runs a benchmark; returns its one-line JSON rows (the indented summary is skipped)."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"')]
    summary = json.loads(done.stdout[done.stdout.index("{\n"):])
    assert summary["results"] == [r for r in rows if "skipped" not in r]
    return rows


def test_gpu_mfu_script_runs_on_the_cpu() -> None:
    rows = run("gpu_mfu.py", "--device", "cpu", "--steps", "2")
    assert [(r["preset"], r["family"]) for r in rows] == [("14M", "ar"), ("14M", "mdm")]
    for row in rows:
        assert row["tokens_per_s"] > 0 and row["mfu"] is None  # no peak is known for a CPU
        assert row["num_params_actual"] == num_params_actual(PRESETS["14M"], PAPER_VOCAB_SIZE)


def test_throughput_benchmark_pairs_trainer_and_reference_windows() -> None:
    rows = run("trainer_throughput.py", "--shape", "tiny-d64", "--families", "mdm",
               "--modes", "fp32-eager", "--windows", "2", "--window-steps", "2", "--threads", "1")
    assert [(r["family"], r["precision"], r["compile"]) for r in rows] == [("mdm", "fp32", "eager")]
    row = rows[0]
    assert row["tokens_per_s"] > 0 and row["reference_tokens_per_s"] > 0
    low, high = row["vs_reference_range"]
    assert 0 < low <= row["vs_reference"] <= high


def test_quickstart_costs_pair_masked_and_full_head_windows() -> None:
    rows = run("quickstart_costs.py", "--shapes", "quickstart", "--windows", "2",
               "--window-steps", "3")
    assert [r["measure"] for r in rows] == ["masked_head", "evaluation", "evaluation",
                                            "precision", "precision"]
    head = rows[0]
    assert head["masked_tokens_per_s"] > 0 and head["full_tokens_per_s"] > 0
    low, high = head["speedup_range"]
    assert 0 < low <= head["speedup"] <= high
    ar_eval, mdm_eval = rows[1], rows[2]
    assert (ar_eval["draws_of_t"], mdm_eval["draws_of_t"]) == (1, 4)
    assert ar_eval["train_token_equivalents"] > 0 and mdm_eval["train_token_equivalents"] > 0
    assert all(r["bf16_over_fp32"] > 0 for r in rows[3:])
