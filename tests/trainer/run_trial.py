"""Runs one trial in its own process, for the tests that kill a run or start several processes.

    python tests/trainer/run_trial.py CONFIG.json POOL.npy VAL.npy [--checkpoint-dir D] [--resume]
        [--max-steps N] [--pause-after-checkpoint S]

Prints one JSON line per report: {"metrics": {...}, "checkpoint": path-or-null}. With WORLD_SIZE,
RANK, MASTER_ADDR and MASTER_PORT set it is one process of a data-parallel run (gloo).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from sweeper.trainer import TrialConfig, latest_checkpoint, train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("pool")
    parser.add_argument("val")
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--pause-after-checkpoint", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with open(args.config) as f:
        config = TrialConfig.from_dict(json.load(f))

    def report(metrics: dict[str, float], checkpoint: str | None) -> None:
        print(json.dumps({"metrics": metrics, "checkpoint": checkpoint}), flush=True)
        if checkpoint is not None:
            time.sleep(args.pause_after_checkpoint)  # a window for the test to kill this process

    resume = latest_checkpoint(args.checkpoint_dir) if args.resume else None
    train(config, np.load(args.pool, mmap_mode="r"), np.load(args.val, mmap_mode="r"), report,
          checkpoint_dir=args.checkpoint_dir, resume_from=resume, max_steps=args.max_steps)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
