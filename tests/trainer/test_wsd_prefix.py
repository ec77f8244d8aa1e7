"""wsd (warmup-stable-decay): the learning rate of every phase and shape, and the prefix property that
prefix sharing stands on: two wsd trials alike but for their length train the same first decay_start steps
of the shorter, bit for bit, for ar and mdm."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sweeper.plan import eval_steps
from sweeper.trainer import train
from sweeper.trainer.checkpoint import read_checkpoint
from sweeper.trainer.optim import lr_at

from .helpers import Recorder, random_tokens, tiny_config

POOL = random_tokens(40 * 32 + 1, 64, seed=0)  # 40 samples of 32 + 1 tokens: 2.5 steps of 16 sequences an epoch
VAL = random_tokens(6 * 32 + 1, 64, seed=1)


def wsd(steps: int, **changes: object):
    """A tiny wsd trial of `steps` steps, planned as the planner plans one: decay_fraction 0.2, log-spaced
    evaluations over its own steps, so two lengths evaluate at different steps."""
    decay = max(1, round(0.2 * steps))
    return tiny_config(**{"schedule": "wsd", "steps": steps, "decay_steps": decay, "warmup_steps": 3,
                          "epochs": steps * 16 / 40, "tokens": steps * 16 * 32, "lr_peak": 1e-3, "lr_min": 1e-4,
                          "eval_steps": eval_steps(steps, 4, "log"), **changes})


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
def test_warmup_stable_then_decay_to_lr_min_at_the_last_step(shape: str) -> None:
    c = wsd(100, warmup_steps=10, decay_shape=shape)
    assert (c.decay_steps, c.decay_start) == (20, 80)
    lrs = [lr_at(s, c) for s in range(c.steps)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)  # linear warmup, as cosine's
    assert set(lrs[9:80]) == {1e-3}  # stable at lr_peak until the decay starts
    assert lrs[80] < 1e-3 and lrs[-1] == pytest.approx(1e-4)  # the first decay step is below the peak
    assert all(a > b for a, b in zip(lrs[79:], lrs[80:]))
    x = (90 - 80 + 1) / 20  # progress at step 90
    f = {"linear": 1 - x, "cosine": 0.5 * (1 + math.cos(math.pi * x)), "1-sqrt": 1 - math.sqrt(x)}[shape]
    assert lrs[90] == pytest.approx(1e-4 + 9e-4 * f)


def test_1_sqrt_is_hageles_cooldown() -> None:
    # Hägele et al., arXiv 2405.18392: lr = lr_min + (lr_peak - lr_min)(1 - sqrt(progress))
    c = wsd(104, decay_shape="1-sqrt")  # 21 decay steps, from step 83
    assert (c.decay_start, c.decay_steps) == (83, 21)
    for step in range(83, 104):
        progress = (step - 83 + 1) / 21
        assert lr_at(step, c) == pytest.approx(1e-4 + 9e-4 * (1 - math.sqrt(progress)), rel=1e-12)


def test_a_single_decay_step_ends_at_lr_min() -> None:
    c = wsd(3, warmup_steps=1)  # max(1, round(0.6)) = 1 decay step
    assert [lr_at(s, c) for s in range(3)] == [1e-3, 1e-3, pytest.approx(1e-4)]


def test_the_rate_before_decay_start_does_not_depend_on_the_length() -> None:
    short, long = wsd(20), wsd(50)
    assert short.decay_start == 16 and long.decay_start == 40
    assert [lr_at(s, short) for s in range(16)] == [lr_at(s, long) for s in range(16)]


def test_wsd_configs_are_checked() -> None:
    with pytest.raises(ValueError, match="decay_steps must be in"):
        wsd(20, decay_steps=0)
    with pytest.raises(ValueError, match="decay_steps must be in"):
        wsd(20, decay_steps=18)  # warmup 3 + decay 18 > 20 steps
    with pytest.raises(ValueError, match="decay_steps must be in"):
        tiny_config(decay_steps=4)  # cosine has no decay phase of its own
    with pytest.raises(ValueError, match="decay_shape must be one of linear, cosine, 1-sqrt"):
        wsd(20, decay_shape="sqrt")


def _state(checkpoint_root: Path, step: int) -> dict:
    _, state = read_checkpoint(checkpoint_root / f"step_{step:08d}")
    return state


def _same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("family", ["ar", "mdm"])
def test_a_shorter_trial_is_an_exact_prefix_of_a_longer_one_until_its_decay(family: str, tmp_path: Path) -> None:
    # 20 and 50 steps (8 and 20 epochs of the pool), dropout on (the global torch RNG), evaluations at
    # different steps before the cut (eval must not draw from the training streams)
    # (logs every step, a how-setting, so each train/loss is one step's)
    short, long = (wsd(steps, family=family, dropout=0.1, log_every_steps=1) for steps in (20, 50))
    cut = short.decay_start
    assert cut == 16 and set(short.eval_steps[1:-1]) != set(s for s in long.eval_steps if s < cut)
    runs = {}
    for name, config in (("short", short), ("long", long)):
        rec = Recorder()
        train(config, POOL, VAL, rec, checkpoint_dir=str(tmp_path / name), max_steps=cut)
        runs[name] = rec
    train_losses = {name: [(m["tokens"], m["train/loss"], m["lr"], m["grad_norm"]) for m in rec.metrics
                           if "train/loss" in m] for name, rec in runs.items()}
    assert train_losses["short"] == train_losses["long"] and len(train_losses["short"]) == cut
    assert runs["short"].metrics[-1]["val/loss"] == runs["long"].metrics[-1]["val/loss"]  # the cut's evaluation
    a, b = _state(tmp_path / "short", cut), _state(tmp_path / "long", cut)
    assert _same(a["model"], b["model"])  # weights, bit for bit
    assert _same(a["optimizer"], b["optimizer"])  # AdamW moments and step counts
    assert _same(a["rng"], b["rng"])  # so a branch resumed from here draws the dropout its unshared run draws
