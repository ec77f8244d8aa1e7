"""`sweeper run` says in one line when bf16 trials are about to train on a CPU where bf16 is slow."""

from __future__ import annotations

from pathlib import Path

import pytest

import sweeper.trainer.precision as precision
from conftest import MINIMAL
from sweeper.driver import preflight as run_module
from sweeper.plan import plan_sweep
from sweeper.profile import load_profile
from sweeper.spec import load_spec

REPO = Path(__file__).resolve().parent.parent


def hint(write_spec, capsys: pytest.CaptureFixture[str], text: str, profile: str = "local") -> str:
    loaded = load_profile(REPO / "backends" / f"{profile}.yaml")
    plan = plan_sweep(load_spec(write_spec(text)), loaded)
    run_module._bf16_hint(loaded, plan.trials)
    return capsys.readouterr().out


def test_slow_bf16_on_this_cpu_is_said_once(write_spec, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "bf16_matmul_speed_ratio", lambda: 0.64)
    out = hint(write_spec, capsys, MINIMAL)  # the default precision is bf16
    assert out.count("\n") == 1
    assert "bf16 matmul runs at 0.64x the speed of fp32 on this CPU, so the 4 bf16 trials" in out


def test_no_hint_for_fp32_trials_fast_bf16_or_a_gpu_profile(write_spec, capsys,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "bf16_matmul_speed_ratio", lambda: 0.64)
    fp32 = MINIMAL.replace("batch_sequences: 8", "batch_sequences: 8\n  precision: fp32")
    assert hint(write_spec, capsys, fp32) == ""
    assert hint(write_spec, capsys, MINIMAL, profile="cluster") == ""  # GPUs, and not this machine
    monkeypatch.setattr(precision, "bf16_matmul_speed_ratio", lambda: 2.2)
    assert hint(write_spec, capsys, MINIMAL) == ""
