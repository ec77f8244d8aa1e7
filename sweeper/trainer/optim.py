"""AdamW with decay on matrices only, and the learning-rate schedule of the whole trial."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from sweeper.trial import TrialConfig


def lr_at(step: int, c: TrialConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup to lr_peak over `warmup_steps`,
    then the schedule. cosine / linear: from lr_peak at the first step after warmup to lr_min at the last
    step; constant: lr_peak. wsd (warmup-stable-decay; Hägele et al., arXiv 2405.18392): lr_peak until
    `c.decay_start`, then over the `decay_steps` steps decay_start .. steps - 1, at progress
    x = (step - decay_start + 1) / decay_steps (the first decay step already below the peak, the last at
    x = 1, lr_min), lr = lr_min + (lr_peak - lr_min) · f(x) with f = 1 - x (linear), (1 + cos πx) / 2
    (cosine) or 1 - √x (1-sqrt, the paper's cool-down). So a wsd step before decay_start has the same rate
    in every trial alike but for its length. The schedule spans the planned `steps`, so a run cut short
    by max_steps is an exact prefix of the full run."""
    if step < c.warmup_steps:
        return c.lr_peak * (step + 1) / c.warmup_steps  # step 0 already moves the weights
    if c.schedule == "constant":
        return c.lr_peak
    if c.schedule == "wsd":
        if step < c.decay_start:
            return c.lr_peak
        progress = min(1.0, (step - c.decay_start + 1) / c.decay_steps)
        shape = {"linear": 1.0 - progress, "cosine": 0.5 * (1.0 + math.cos(math.pi * progress)),
                 "1-sqrt": 1.0 - math.sqrt(progress)}[c.decay_shape]
        return c.lr_min + (c.lr_peak - c.lr_min) * shape
    decay_steps = max(1, c.steps - 1 - c.warmup_steps)  # the first step after warmup is at peak,
    progress = min(1.0, (step - c.warmup_steps) / decay_steps)  # the last one at lr_min
    if c.schedule == "linear":
        return c.lr_peak + (c.lr_min - c.lr_peak) * progress
    return c.lr_min + (c.lr_peak - c.lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, c: TrialConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (embedding included), none on norm gains (PAPER.md and
    Megatron). The fused kernel is one launch per step instead of one per tensor group."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": c.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=c.lr_peak, betas=c.betas, eps=c.eps, fused=fused)
