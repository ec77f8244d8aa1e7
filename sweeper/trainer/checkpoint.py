"""Checkpoints: everything an exact resume needs, written atomically.

A checkpoint is a folder `step_00001234/` under the trial's checkpoint root holding
  state.pt     model and optimizer (full, unsharded, keyed by parameter name), the loop's counters,
               and the RNG states of every process (torch, cuda, numpy, python)
  config.json  the TrialConfig that built the model (sampling rebuilds the model from it)
It is written into a hidden temporary folder and renamed into place, so a process killed while
writing leaves either the previous checkpoint or the new one, never a torn one. With several
processes every one takes part in gathering the state and process 0 writes it; the root must be
storage every process can read (a shared or local disk), because each process reads it to resume.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from sweeper.trial import TrialConfig
from sweeper.trainer.distributed import Processes, barrier, gather_objects

STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"
_NAME = re.compile(r"^step_(\d{8})$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def latest_checkpoint(root: str | os.PathLike[str]) -> str | None:
    """The complete checkpoint with the highest step under root, or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    steps = sorted(int(m.group(1)) for p in root.iterdir() if (m := _NAME.match(p.name)))
    return str(root / checkpoint_name(steps[-1])) if steps else None


def rng_state() -> dict[str, Any]:
    """This process's RNG states, as tensors and plain Python values (loadable weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def write_checkpoint(root: str | os.PathLike[str], config: TrialConfig, model: nn.Module,
                     optimizer: torch.optim.Optimizer, loop_state: dict[str, Any],
                     procs: Processes) -> str:
    """Collective: every process calls it. Returns the checkpoint folder."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state, optim_state = get_state_dict(model, optimizer, options=options)
    rngs = gather_objects(rng_state(), procs)
    final = Path(root) / checkpoint_name(loop_state["step"])
    if procs.is_main:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        state = {"model": model_state, "optimizer": optim_state, "loop": loop_state, "rng": rngs}
        _write_synced(tmp / STATE_FILE, lambda f: torch.save(state, f))
        _write_synced(tmp / CONFIG_FILE, lambda f: f.write(json.dumps(config.to_dict(), indent=1).encode()))
        if final.exists():  # rewriting a step after a resume: swap the old folder out first
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            final.rename(old)
            shutil.rmtree(old)
        tmp.rename(final)
        _fsync_dir(final.parent)
    barrier(procs)
    return str(final)


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[TrialConfig, dict[str, Any]]:
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint (no {STATE_FILE}); pass a step_* folder, "
                                "e.g. the one latest_checkpoint(root) returns")
    config = TrialConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    return config, state


def load_into(model: nn.Module, optimizer: torch.optim.Optimizer | None, state: dict[str, Any]) -> None:
    """Restore model (and optimizer) weights from a read checkpoint; works for plain, DDP and
    FSDP-wrapped models alike because the state is stored unsharded and keyed by name."""
    options = StateDictOptions(full_state_dict=True, strict=True)
    if optimizer is None:
        set_model_state_dict(model, state["model"], options=options)
    else:
        set_state_dict(model, optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optimizer"], options=options)


def prune_checkpoints(root: str | os.PathLike[str], keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (after the reporter has taken the newest)."""
    root = Path(root)
    names = sorted(p.name for p in root.iterdir() if _NAME.match(p.name))
    for name in names[:-keep] if keep > 0 else names:
        shutil.rmtree(root / name, ignore_errors=True)


def _write_synced(path: Path, write: Any) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
