"""The benchmark scripts keep running: the device check (gpu_mfu.py) in its tiny CPU mode, and the
throughput benchmarks on tiny shapes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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


@pytest.mark.slow  # ten `sweeper` processes, 1-3 minutes on two cores
def test_device_check_runs_tiny_on_the_cpu() -> None:
    """gpu_mfu.py --tiny: every part of the device check on CPU-sized shapes, one JSON report."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_mfu.py"), "--tiny"], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["mode"] == "tiny" and report["skipped"] == [] and report["imports_ray_or_mlflow"] == []
    assert [(r["preset"], r["family"]) for r in report["mfu"]] == [("tiny", "ar"), ("tiny", "mdm")]
    for row in report["mfu"]:
        assert row["tokens_per_s"] > 0 and row["mfu"] is None  # no peak is known for a CPU
        assert row["micro_batch"] == row["plan_micro_batch"] and row["out_of_memory_at"] == []
        assert row["plan_memory_gib"] > 0 and row["plan_fits"]
    ar, mdm = report["mfu"]
    assert ar["model_flops_per_token"] == mdm["model_flops_per_token"]
    assert ar["hardware_flops_per_token"] < ar["model_flops_per_token"]  # causal attention skips half
    assert mdm["hardware_flops_per_token"] < ar["hardware_flops_per_token"]  # the head scores masked positions
    (packed,) = report["packing"]
    assert packed["alone"]["processes"] == 1 and packed["shared"]["processes"] == 2
    assert len(packed["shared"]["per_process_tokens_per_s"]) == 2 and packed["ratio"] > 0
    run = report["training_run"]
    assert "error" not in run, run.get("error")
    assert run["blocked_imports"][:2] == ["ray", "mlflow"]
    assert [t["family"] for t in run["trials"]] == ["ar", "mdm"]
    for trial in run["trials"]:
        # killed by a real SIGKILL mid-run, resumed from a checkpoint before the end, and the
        # joined curve is the uninterrupted one, point for point
        assert trial["exit_code_killed"] == -9
        assert 0 < trial["resumed_from_step"] < trial["steps"]
        assert trial["resume_exact"] and trial["max_abs_diff"] == 0.0
        assert trial["points_joined"] == trial["points_uninterrupted"]
        # killed between checkpoints: the steps since the last one were lost and done again, the same
        assert trial["killed_after_step"] > trial["resumed_from_step"]
        assert trial["redone_points"]["points"] >= 1 and trial["redone_points"]["max_abs_diff"] == 0.0
        assert trial["sample_exit_code"] == 0 and len(trial["samples"]) == 2
    assert run["all_exact"] and run["all_sampled"]


def test_device_run_spec_checkpoints_several_times_under_the_check_profile(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from device_train_check import write_profile
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    from sweeper.plan import plan_sweep
    from sweeper.profile import load_profile
    from sweeper.spec import load_spec

    spec = REPO / "tests" / "specs" / "device_run.yaml"
    plan = plan_sweep(load_spec(str(spec)), load_profile(write_profile(spec, tmp_path, 6)))
    assert sorted(t.family for t in plan.trials) == ["ar", "mdm"]
    for trial in plan.trials:
        assert trial.steps == 125 and 3 <= trial.steps // trial.checkpoint_every_steps <= 12


def test_device_check_halves_the_micro_batch_on_out_of_memory(monkeypatch: Any) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_mfu
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    from sweeper.trainer import TrialOutOfMemory

    tried: list[int] = []

    def measure(model: Any, family: str, micro: int, args: Any) -> dict[str, Any]:
        tried.append(micro)
        if micro > 2:
            raise TrialOutOfMemory(micro, "cpu", "out of memory")
        return {"micro_batch": micro, "num_params_actual": 1000, "tokens_per_s": 10.0}

    monkeypatch.setattr(gpu_mfu, "measure", measure)
    args = gpu_mfu.parse_args(["--tiny", "--micro-batch", "8"])
    args.peak = 1e12
    row = gpu_mfu.mfu_row("tiny", "ar", args)
    assert tried == [8, 4, 2] and row["out_of_memory_at"] == [8, 4] and row["micro_batch"] == 2
    assert row["mfu"] == round(row["model_flops_per_token"] * 10.0 / 1e12, 4)


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
               "--window-steps", "3", "--measures", "masked_head,evaluation,precision")
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


@pytest.mark.slow
def test_quickstart_costs_compile_pairs_eager_and_compiled_runs() -> None:
    rows = run("quickstart_costs.py", "--shapes", "quickstart", "--windows", "2",
               "--window-steps", "1", "--measures", "compile")
    assert [(r["measure"], r["family"]) for r in rows] == [("compile", "ar"), ("compile", "mdm")]
    for row in rows:
        assert row["eager_tokens_per_s"] > 0 and row["compile_tokens_per_s"] > 0
        low, high = row["range"]
        assert 0 < low <= row["compile_over_eager"] <= high
        assert row["compile_seconds"] > 0  # the first compiled window pays for compiling


def test_device_sweep_trains_the_selected_trials_without_ray_or_mlflow_within_its_budget(tmp_path: Path) -> None:
    """benchmarks/device_sweep.py on the CPU: the selected trials trained in turn by `sweeper train`
    with Ray and MLflow unimportable, one results.csv row per trial that `fit --from-csv` reads, its
    losses the curve's last point; a trial that cannot fit the budget is skipped, not started."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from device_train_check import block_imports
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    from sweeper.fit.table import read_csv

    from conftest import MINIMAL

    spec = tmp_path / "spec.yaml"
    spec.write_text(MINIMAL.replace("epochs: [1, 2]", "epochs: [1, 2, 10000]"))
    blocked = block_imports(tmp_path / "absent")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), str(REPO)]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "device_sweep.py"), str(spec),
                           "--backend", str(REPO / "backends" / "local.yaml"), "--device", "cpu", "--where", "family=ar",
                           "--budget-s", "400", "--order", "short", "--out", str(tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert len(summary["finished"]) == 2 and summary["cut"] == [] and summary["pace"] > 0
    assert [s["name"] for s in summary["skipped"]] == ["ar-tiny-U4k-e10000"]  # ~1 h planned: over the budget
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert [(r["name"], r["family"], r["unique_tokens"]) for r in rows] == [
        ("ar-tiny-U4k-e1", "ar", "4000"), ("ar-tiny-U4k-e2", "ar", "4000")]
    for row in rows:
        curve = [json.loads(line) for line in (tmp_path / "out" / "curves" / f"{row['trial_id']}.jsonl").open()]
        assert float(row["loss"]) == curve[-1]["final/val_loss"] and int(row["tokens"]) == curve[-1]["tokens"]
    trials = read_csv(tmp_path / "out" / "results.csv", {"loss": "loss_best"})
    assert len(trials) == 2
