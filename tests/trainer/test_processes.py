"""Training across process boundaries: a run killed with SIGKILL and resumed, and data-parallel
runs of two gloo processes against one process training the same global batch."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sweeper.trainer import TrialConfig, latest_checkpoint, train

from .helpers import Recorder, random_tokens, tiny_config

RUNNER = Path(__file__).with_name("run_trial.py")
REPO = Path(__file__).resolve().parents[2]
CURVE = ("tokens", "train/loss", "val/loss", "val/loss_best", "lr", "grad_norm", "epoch")

pytestmark = pytest.mark.slow


def write_inputs(tmp_path: Path, config: TrialConfig) -> list[str]:
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    np.save(tmp_path / "pool.npy", random_tokens(40 * 32 + 1, 64, seed=0))
    np.save(tmp_path / "val.npy", random_tokens(6 * 32 + 1, 64, seed=1))
    return [str(tmp_path / name) for name in ("config.json", "pool.npy", "val.npy")]


def load_inputs(tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    return np.load(tmp_path / "pool.npy"), np.load(tmp_path / "val.npy")


def runner(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(RUNNER), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def curve(lines: list[dict]) -> list[tuple]:
    return [tuple(line["metrics"].get(k) for k in CURVE) for line in lines]


def test_killed_run_resumes_to_the_uninterrupted_curve_bit_for_bit(tmp_path: Path) -> None:
    config = tiny_config(family="mdm", dropout=0.1, steps=40, eval_steps=(0, 10, 20, 30, 40),
                         checkpoint_every_steps=10, log_every_steps=5)
    args = write_inputs(tmp_path, config)
    ckpt = str(tmp_path / "ckpt")

    killed = runner([*args, "--checkpoint-dir", ckpt, "--pause-after-checkpoint", "60"])
    before: list[dict] = []
    assert killed.stdout is not None
    for line in killed.stdout:
        before.append(json.loads(line))
        if before[-1]["checkpoint"]:
            killed.send_signal(signal.SIGKILL)  # no clean-up, no atexit: as a lost machine
            break
    assert killed.wait(timeout=30) == -signal.SIGKILL
    assert latest_checkpoint(ckpt) == str(tmp_path / "ckpt" / "step_00000010")

    resumed = runner([*args, "--checkpoint-dir", ckpt, "--resume"])
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    after = [json.loads(line) for line in out.splitlines()]

    pool, val = load_inputs(tmp_path)
    uninterrupted = Recorder()
    train(config, pool, val, uninterrupted, checkpoint_dir=str(tmp_path / "whole"))
    assert curve(before) + curve(after) == uninterrupted.curve(*CURVE)
    assert after[-1]["metrics"]["final/val_loss"] == uninterrupted.metrics[-1]["final/val_loss"]


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def two_processes(args: list[str]) -> list[dict]:
    port = free_port()
    procs = [runner(args, {"WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r),
                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}) for r in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert outs[1][0] == ""  # only process 0 reports
    return [json.loads(line) for line in outs[0][0].splitlines()]


@pytest.mark.parametrize(("parallelism", "family"), [("ddp", "ar"), ("ddp", "mdm"), ("fsdp", "mdm")])
def test_two_gloo_processes_match_one_process(tmp_path: Path, parallelism: str, family: str) -> None:
    # global batch 16: one process accumulates 2 micro-batches of 8, two processes take one each
    # fsdp also checkpoints by elapsed time (every log point here), which every process must agree on
    timed = parallelism == "fsdp"
    config = tiny_config(family=family, parallelism=parallelism, checkpoint_every_s=1e-9 if timed else 0.0)
    ckpt = tmp_path / "ckpt"
    lines = two_processes([*write_inputs(tmp_path, config), "--checkpoint-dir", str(ckpt)])
    assert [Path(line["checkpoint"]).name for line in lines if line["checkpoint"]] == \
        [f"step_{s:08d}" for s in ((4, 8, 12, 16) if timed else (8, 16))]
    single = Recorder()
    train(config, *load_inputs(tmp_path), single)
    parallel = np.array(curve(lines), dtype=float)
    assert np.allclose(np.nan_to_num(parallel), np.nan_to_num(np.array(single.curve(*CURVE), dtype=float)),
                       rtol=1e-5, atol=1e-7)
    assert parallel[-1, CURVE.index("tokens")] == 16 * 16 * 32  # tokens count all processes


def test_sharded_run_checkpoints_and_resumes(tmp_path: Path) -> None:
    config = tiny_config(family="mdm", parallelism="fsdp")
    args = write_inputs(tmp_path, config)
    ckpt = str(tmp_path / "ckpt")
    first = two_processes([*args, "--checkpoint-dir", ckpt, "--max-steps", "8"])
    second = two_processes([*args, "--checkpoint-dir", ckpt, "--resume"])
    single = Recorder()
    train(config, *load_inputs(tmp_path), single)
    resumed = np.array(curve(first) + curve(second), dtype=float)
    assert np.allclose(np.nan_to_num(resumed), np.nan_to_num(np.array(single.curve(*CURVE), dtype=float)),
                       rtol=1e-5, atol=1e-7)
