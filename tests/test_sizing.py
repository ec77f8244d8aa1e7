"""Sizing a trial for a profile: memory, micro-batch, devices, sharing, time."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sweeper.plan import plan_sweep
from sweeper.spec.presets import PRESETS, num_params_actual
from sweeper.profile import load_profile
from sweeper.plan.sizing import activation_bytes, flops_per_token, size_trial
from sweeper.spec import load_spec

REPO = Path(__file__).resolve().parent.parent
CLUSTER = load_profile(REPO / "backends" / "cluster.yaml").hardware
LOCAL = load_profile(REPO / "backends" / "local.yaml").hardware


def sized(name: str, hardware, batch: int = 256, seq_len: int = 2048):
    return size_trial(PRESETS[name], vocab_size=50257, seq_len=seq_len, batch_sequences=batch, precision="bf16",
                      hardware=hardware)


def test_micro_batch_divides_the_batch_and_fits() -> None:
    for name in ("7M", "140M", "425M", "1018M", "2639M"):
        s = sized(name, CLUSTER)
        assert s.fits
        assert 256 % (s.micro_batch * s.devices) == 0
        assert s.micro_batch * s.grad_accum * s.devices == 256
        assert s.memory.total <= 0.9 * CLUSTER.memory_per_device * s.device_share + 1


def test_larger_models_get_smaller_micro_batches() -> None:
    micro = [sized(n, CLUSTER).micro_batch for n in ("140M", "425M", "1018M", "2639M")]
    assert micro == sorted(micro, reverse=True) and micro[0] > micro[-1]


def test_small_trials_share_a_gpu_large_ones_do_not() -> None:
    sharing = dataclasses.replace(CLUSTER, max_trials_per_device=4)
    small, large = sized("7M", sharing), sized("425M", sharing)
    assert small.device_share == 0.25 and small.resources["GPU"] == 0.25
    assert large.device_share == 1.0 and large.resources["GPU"] == 1


def test_the_shipped_cluster_profile_gives_each_trial_a_whole_gpu() -> None:
    # sharing measured 0.91x of one trial's tokens/s on an H200 (benchmarks/README.md)
    assert sized("7M", CLUSTER).resources["GPU"] == 1


def test_a_model_too_big_for_one_device_spans_several() -> None:
    small_gpu = dataclasses.replace(CLUSTER, memory_per_device=24_000_000_000)
    s = sized("2639M", small_gpu)
    assert s.fits and s.devices > 1 and s.resources["GPU"] == s.devices
    assert s.memory.weights == 4 * num_params_actual(PRESETS["2639M"], 50257) // s.devices


def test_cpu_profile_marks_what_does_not_fit() -> None:
    assert sized("7M", LOCAL, batch=16, seq_len=256).fits
    assert not sized("2639M", LOCAL).fits


def test_activation_memory_grows_with_sequence_and_precision() -> None:
    model = PRESETS["140M"]
    assert activation_bytes(model, 50257, 2048, "bf16") == 2 * activation_bytes(model, 50257, 1024, "bf16")
    assert activation_bytes(model, 50257, 2048, "fp32") > activation_bytes(model, 50257, 2048, "bf16")


def test_flops_per_token_palm_formula() -> None:
    model = PRESETS["140M"]
    # 6 x actual params + 12 x layers x attention width x seq_len
    assert flops_per_token(model, 50257, 2048) == pytest.approx(6 * 144_825_600 + 12 * 15 * 768 * 2048, rel=1e-3)


def test_time_and_cost_follow_the_profile() -> None:
    spec = load_spec(REPO / "sweeps" / "grid.yaml")
    profile = load_profile(REPO / "backends" / "cluster.yaml")
    priced = dataclasses.replace(profile, hardware=dataclasses.replace(profile.hardware, price_per_device_hour=2.0))
    plan = plan_sweep(spec, priced)
    totals = plan.totals()
    assert totals["cost"] == pytest.approx(2.0 * totals["device_hours"])
    assert [t.wall_seconds for t in plan.trials] == sorted((t.wall_seconds for t in plan.trials), reverse=True)
    assert plan.makespan_seconds() >= plan.trials[0].wall_seconds
    faster = dataclasses.replace(profile, hardware=dataclasses.replace(profile.hardware, assumed_mfu=0.8))
    assert plan_sweep(spec, faster).totals()["device_hours"] == pytest.approx(totals["device_hours"] / 2)
