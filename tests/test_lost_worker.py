"""A trial whose worker dies while Tune is (re)starting it: Tune ends it even with retries left, and
the sweep keeps it resumable (KILLED) instead of FAILED, which only --retry-failed would run again.
tests/test_fault_injection.py reaches this by chance (a worker killed at a random point); here Tune's
own Trial records each kind of failure, in a fresh process with its own Ray."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

SCRIPT = """
import os, tempfile
import ray
from ray.exceptions import RayActorError
from ray.train._internal.storage import StorageContext
from ray.tune.experiment import Trial
from sweeper.driver.progress import _lost_while_starting

ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
root = tempfile.mkdtemp()

def failed(name, error, retries):
    storage = StorageContext(storage_path=root, experiment_dir_name="sweep", trial_dir_name=name)
    trial = Trial("stub", stub=True, max_failures=retries, storage=storage)
    os.makedirs(trial.local_path, exist_ok=True)
    trial.handle_error(error)  # what Tune does with the failure before deciding on a retry
    return _lost_while_starting(trial)

print("worker lost, retries left:", failed("a", RayActorError(), retries=20))
print("worker lost, no retries left:", failed("b", RayActorError(), retries=0))
print("the trial's own error, retries left:", failed("c", ValueError("diverged"), retries=20))
ray.shutdown()
"""


def test_a_worker_lost_while_starting_with_retries_left_is_told_from_a_failure() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "worker lost, retries left: True" in result.stdout
    assert "worker lost, no retries left: False" in result.stdout
    assert "the trial's own error, retries left: False" in result.stdout
