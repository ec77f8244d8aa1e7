"""The trainer is a library over torch and numpy: importing it pulls in no spec, planner, Ray or
MLflow (DESIGN.md), so it runs the same under Ray Tune, in a test or by hand."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_trainer_loads_no_orchestration_module() -> None:
    code = ("import sys, sweeper.trainer, sweeper.trainer.sample; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow') "
            "or m in ('sweeper.spec', 'sweeper.plan', 'sweeper.cli', 'sweeper.spec.presets')); "
            "print(','.join(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
