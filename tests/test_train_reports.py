"""A Ray Train run inside a Tune trial hands every report to Tune in order and then ends, even when
the driver is slow to take results: with Ray's TuneReportCallback, a report still queued as the
Train run ended raced the trial's last result, and the trial hung for good (seen about once in three
CI runs of tests/test_multiprocess_trials.py on a loaded machine; this script hung every time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from test_run import kill_driver

SCRIPT = textwrap.dedent('''
    import json, sys, time
    import torch  # noqa: F401  (torch before Ray)
    import ray
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    from sweeper.driver.train_reports import ForwardReports, report_while_training

    STORE = sys.argv[1]


    def train_func(config):
        for point in (1, 2, 3):
            ray.train.report({"point": point})
        if config["fail"]:
            time.sleep(1.0)  # Train's controller collects the reports before it sees the error
            raise RuntimeError("training loss is nan")


    def trial(config):
        reports = Queue(actor_options={"num_cpus": 0})
        trainer = TorchTrainer(train_func, train_loop_config=config,
                               scaling_config=ray.train.ScalingConfig(num_workers=2),
                               run_config=ray.train.RunConfig(name=f"fail-{config['fail']}", storage_path=STORE,
                                                              callbacks=[ForwardReports(reports)],
                                                              failure_config=ray.train.FailureConfig(max_failures=0)))
        try:
            report_while_training(trainer.fit, reports, tune.report)
        except ray.train.WorkerGroupError:
            tune.report({"failure": "diverged"})


    class SlowDriver(tune.Callback):
        """A driver busy with each result (MLflow on a loaded machine) while the Train run goes on."""
        seen = {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.seen.setdefault(str(trial.config["fail"]), []).append(
                result.get("point") or result.get("failure"))
            time.sleep(2.0)


    ray.init(address="local", num_cpus=3, include_dashboard=False)
    tuner = tune.Tuner(tune.with_resources(trial, {"CPU": 0.01}), param_space={"fail": tune.grid_search([False, True])},
                       tune_config=tune.TuneConfig(max_concurrent_trials=1),
                       run_config=tune.RunConfig(storage_path=STORE, callbacks=[SlowDriver()]))
    results = tuner.fit()
    print(json.dumps({"seen": SlowDriver.seen, "errors": results.num_errors}), flush=True)
''')


@pytest.mark.slow
def test_every_train_report_then_the_trials_end_reach_a_slow_driver_in_order(tmp_path: Path) -> None:
    script = tmp_path / "train_in_tune.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    driver = subprocess.Popen([sys.executable, str(script), str(tmp_path / "store")], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    try:
        out, _ = driver.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("the Tune trials hung:\n" + kill_driver(driver)[-3000:])
    assert driver.returncode == 0, out[-3000:]
    (line,) = [line for line in out.splitlines() if line.startswith('{"seen"')]  # Ray's log lines may follow
    summary = json.loads(line)
    assert summary == {"seen": {"False": [1, 2, 3], "True": [1, 2, 3, "diverged"]}, "errors": 0}, out[-3000:]
