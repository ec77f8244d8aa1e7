"""torch.compile and bf16 autocast change speed, not the objective."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sweeper.trainer import train

from .helpers import Recorder, random_tokens, tiny_config

POOL = random_tokens(40 * 32 + 1, 64, seed=0)
VAL = random_tokens(6 * 32 + 1, 64, seed=1)


def losses(recorder: Recorder) -> np.ndarray:
    return np.array(recorder.curve("train/loss", "val/loss")[1:], dtype=float)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_mdm_trains_the_same_curve_as_eager() -> None:
    config = tiny_config(family="mdm", steps=8, eval_steps=(0, 8))
    eager, compiled = Recorder(), Recorder()
    train(config, POOL, VAL, eager)
    train(dataclasses.replace(config, compile=True), POOL, VAL, compiled)
    assert np.allclose(np.nan_to_num(losses(eager)), np.nan_to_num(losses(compiled)), rtol=1e-4)


@pytest.mark.parametrize("family", ["ar", "mdm"])
def test_bf16_autocast_stays_close_to_fp32(family: str) -> None:
    fp32, bf16 = Recorder(), Recorder()
    train(tiny_config(family=family), POOL, VAL, fp32)
    train(tiny_config(family=family, precision="bf16"), POOL, VAL, bf16)
    assert np.allclose(np.nan_to_num(losses(fp32)), np.nan_to_num(losses(bf16)), rtol=0.02)
