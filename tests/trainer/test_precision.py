"""The bf16-against-fp32 check that `sweeper run` reports on CPUs."""

from __future__ import annotations

import math

from sweeper.trainer.precision import bf16_matmul_speed_ratio


def test_bf16_speed_ratio_is_a_positive_finite_ratio() -> None:
    ratio = bf16_matmul_speed_ratio(repeats=2, rounds=1)
    assert math.isfinite(ratio) and ratio > 0
