"""How well `sweeper plan` estimates what a finished sweep took, and the profile's step_seconds and
trial_seconds that would have made it right.

Reads the spec's finished trials from the profile's MLflow store (a trial's time is its run's, start
to end: training, its validation passes and its eval stage, in its worker), plans the spec with the
profile as it is and with each overhead set to one unit, and prints JSON: per trial the measured
seconds beside the plan's estimate, the totals and their ratio, and a least-squares fit of

    measured − FLOP estimate = step_seconds · (steps + forward-only batches / 3) + trial_seconds

over the trials (sweeper.plan.sizing.estimate_device_seconds), with what the plan would estimate
with the fitted values. The reference is the measured time itself; the figure to watch is the
ratio of the plan's total to it.

    make quickstart
    .venv/bin/python benchmarks/plan_estimate.py sweeps/quickstart.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from scale import cpu_name  # benchmarks/ is the script's folder
from sweeper.plan import plan_sweep
from sweeper.profile import load_profile
from sweeper.spec import load_spec

REPO = Path(__file__).resolve().parent.parent


def measured_seconds(tracking_uri: str, experiment: str, ids: set[str]) -> dict[str, float]:
    """trial id -> seconds its finished MLflow run took, for the trials of `ids` found."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    out = {}
    for run in client.search_runs([found.experiment_id], "attributes.status = 'FINISHED'", max_results=50_000):
        trial = run.data.tags.get("sweeper.trial_id")
        if trial in ids and run.info.end_time is not None:
            out[trial] = (run.info.end_time - run.info.start_time) / 1000
    return out


def per_trial_seconds(spec, profile, **hardware) -> dict[str, float]:
    """The plan's wall seconds per trial with the profile's hardware changed as given."""
    changed = dataclasses.replace(profile, hardware=dataclasses.replace(profile.hardware, **hardware))
    return {trial.id: trial.wall_seconds for trial in plan_sweep(spec, changed).trials}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--backend", default=str(REPO / "backends" / "local.yaml"))
    args = parser.parse_args()
    spec, profile = load_spec(args.spec), load_profile(args.backend)
    plan = plan_sweep(spec, profile)
    names = {trial.id: trial.name for trial in plan.trials}
    shown = {trial.id: trial.wall_seconds for trial in plan.trials}
    measured = measured_seconds(profile.mlflow.tracking_uri, spec.experiment, set(names))
    if not measured:
        raise SystemExit(f"no finished trial of {args.spec} in {profile.mlflow.tracking_uri}: run the sweep first")
    flops_only = per_trial_seconds(spec, profile, step_seconds=0.0, trial_seconds=0.0)
    per_step = per_trial_seconds(spec, profile, step_seconds=1.0, trial_seconds=0.0)
    ids = sorted(measured)
    steps = np.array([per_step[i] - flops_only[i] for i in ids])  # step-equivalents of each trial
    residual = np.array([measured[i] - flops_only[i] for i in ids])
    design = np.stack([steps, np.ones_like(steps)], axis=1)
    (step_s, trial_s), *_ = np.linalg.lstsq(design, residual, rcond=None)
    step_s, trial_s = max(float(step_s), 0.0), max(float(trial_s), 0.0)
    fitted = per_trial_seconds(spec, profile, step_seconds=step_s, trial_seconds=trial_s)
    total = sum(measured.values())
    print(json.dumps({
        "machine": cpu_name(),
        "profile": f"{args.backend}: {profile.hardware.assumption()}",
        "trials": [{"trial": names[i], "measured_s": round(measured[i], 2), "planned_s": round(shown[i], 2),
                    "fitted_s": round(fitted[i], 2)} for i in ids],
        "trials_measured": len(ids),
        "measured_total_s": round(total, 1),
        "planned_total_s": round(sum(shown[i] for i in ids), 1),
        "planned_over_measured": round(sum(shown[i] for i in ids) / total, 3),
        "fitted_step_seconds": round(step_s, 5),
        "fitted_trial_seconds": round(trial_s, 2),
        "fitted_total_s": round(sum(fitted[i] for i in ids), 1),
        "fitted_mean_abs_error_s": round(float(np.mean([abs(fitted[i] - measured[i]) for i in ids])), 2),
    }, indent=1))


if __name__ == "__main__":
    main()
