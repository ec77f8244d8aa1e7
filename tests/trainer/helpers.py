"""Tiny trial configs and token arrays shared by the trainer tests."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from sweeper.trainer import TrialConfig

TINY: dict[str, Any] = dict(
    trial_id="tiny", family="ar", num_params=100_000, unique_tokens=8_192, epochs=1.0, tokens=8_192,
    vocab_size=64, d_model=64, h_f=128, heads=4, head_dim=16, layers=2, dropout=0.0, init_std=0.02,
    seq_len=32, lr_peak=3e-3, lr_min=3e-4, warmup_steps=2, steps=16, schedule="cosine",
    betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, grad_clip=1.0, batch_sequences=16, micro_batch=8,
    eval_steps=(0, 8, 16), mdm_eval_samples=4, checkpoint_every_steps=8, log_every_steps=4,
    precision="fp32", compile=False, seed=7, device="cpu", peak_flops=None,
)


def tiny_config(**overrides: Any) -> TrialConfig:
    return TrialConfig(**{**TINY, **overrides})


def random_tokens(n: int, vocab_size: int, seed: int, dtype: type = np.uint16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab_size, n).astype(dtype)


def replace(config: TrialConfig, **changes: Any) -> TrialConfig:
    return dataclasses.replace(config, **changes)


class Recorder:
    """A reporter that keeps every report, for assertions on the curve."""

    def __init__(self) -> None:
        self.reports: list[tuple[dict[str, float], str | None]] = []

    def __call__(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        self.reports.append((dict(metrics), checkpoint_dir))

    @property
    def metrics(self) -> list[dict[str, float]]:
        return [m for m, _ in self.reports]

    def curve(self, *keys: str) -> list[tuple[float | None, ...]]:
        """The reproducible part of the curve (no wall-clock metrics)."""
        keys = keys or ("tokens", "train/loss", "val/loss", "val/loss_best", "lr", "grad_norm", "epoch")
        return [tuple(m.get(k) for k in keys) for m in self.metrics]
