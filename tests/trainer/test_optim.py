"""The learning-rate schedule over the whole trial and the weight-decay split."""

from __future__ import annotations

import pytest
import torch

from sweeper.trainer.model import ModelConfig, Transformer
from sweeper.trainer.optim import lr_at, make_optimizer

from .helpers import tiny_config


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_warmup_then_decay_to_lr_min_at_the_last_step(schedule: str) -> None:
    c = tiny_config(steps=100, warmup_steps=10, lr_peak=1e-3, lr_min=1e-4, schedule=schedule,
                    eval_steps=(0, 100))
    lrs = [lr_at(s, c) for s in range(c.steps)]
    assert lrs[0] == pytest.approx(1e-4)  # (0 + 1) / 10 of the peak: the first step already learns
    assert lrs[9] == pytest.approx(1e-3) and lrs[10] == pytest.approx(1e-3)
    assert lrs[-1] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # monotone decay
    midpoint = lr_at(10 + 89 // 2, c)
    if schedule == "cosine":
        assert midpoint == pytest.approx(5.5e-4, rel=0.02)


def test_constant_schedule_and_no_warmup() -> None:
    c = tiny_config(steps=20, warmup_steps=0, schedule="constant", eval_steps=(0, 20))
    assert {lr_at(s, c) for s in range(20)} == {c.lr_peak}


def test_weight_decay_on_matrices_only() -> None:
    c = tiny_config()
    model = Transformer(ModelConfig.from_trial(c))
    opt = make_optimizer(model, c, torch.device("cpu"))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == c.weight_decay and plain["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"])
    assert all(p.dim() == 1 for p in plain["params"]) and len(plain["params"]) == 2 * c.layers + 1
    assert opt.defaults["fused"] is True
