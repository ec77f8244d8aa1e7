"""The planner makes each trial's TrialConfig: every count once, the how-settings from the profile."""

from __future__ import annotations

import dataclasses
import math
import pickle
from pathlib import Path

import pytest

from conftest import SMOKE_SPEC
from sweeper.plan import plan_sweep
from sweeper.profile import load_profile
from sweeper.spec import TrainSpec, load_spec
from sweeper.spec.presets import ModelSpec
from sweeper.spec.schema import FieldError
from sweeper.trial import HOW_KEYS, TrialConfig

REPO = Path(__file__).resolve().parent.parent


def planned(spec: Path, profile: str) -> list:
    return list(plan_sweep(load_spec(spec), load_profile(REPO / "backends" / f"{profile}.yaml")).trials)


def test_the_config_holds_the_planned_counts_and_the_profiles_how() -> None:
    for trial in planned(REPO / "sweeps" / "quickstart.yaml", "local"):
        c = trial.config
        assert (c.trial_id, c.family, c.steps, c.tokens, c.eval_steps) == (trial.id, trial.family, trial.steps,
                                                                           trial.tokens, trial.eval_steps)
        assert c.micro_batch == trial.sizing.micro_batch and c.log_every_steps == math.ceil(trial.steps / 100)
        assert (c.device, c.peak_flops, c.parallelism) == ("cpu", None, "ddp")
        assert (c.precision, c.compile, c.seed) == (trial.train.precision, trial.train.compile, trial.train.seed)
        assert c.checkpoint_every_s == trial.train.checkpoint_every_minutes * 60  # backs a too-sparse cadence
    cluster = load_profile(REPO / "backends" / "cluster.yaml")
    for trial in planned(SMOKE_SPEC, "cluster"):
        assert (trial.config.device, trial.config.peak_flops) == ("auto", cluster.hardware.peak_flops)


def test_running_elsewhere_changes_only_how_settings() -> None:
    trial = planned(SMOKE_SPEC, "local")[0]
    moved = trial.on_device("cuda:1", 1e15)
    changed = {f.name for f in dataclasses.fields(TrialConfig)
               if getattr(moved, f.name) != getattr(trial.config, f.name)}
    assert changed == {"device", "peak_flops"} and changed <= HOW_KEYS


def test_the_config_crosses_process_boundaries_as_is() -> None:
    # Ray pickles the payload; JSON is for checkpoints only, and round-trips too
    for trial in planned(REPO / "sweeps" / "grid.yaml", "cluster"):
        assert pickle.loads(pickle.dumps(trial.config)) == trial.config
        assert TrialConfig.from_dict(trial.config.to_dict()) == trial.config


def test_how_keys_name_real_settings_and_leave_precision_out() -> None:
    settings = {f.name for cls in (TrialConfig, TrainSpec) for f in dataclasses.fields(cls)} | {"streaming"}
    assert HOW_KEYS <= settings
    assert "precision" not in HOW_KEYS  # in the trial id, and fixed for a resumed run


def test_an_odd_head_dim_is_refused_where_the_model_is_declared() -> None:
    with pytest.raises(FieldError, match="head_dim 9 is odd"):
        ModelSpec(name="odd", d_model=36, layers=1, heads=4)


def test_step_and_trial_seconds_add_the_framework_overheads_flops_do_not_count() -> None:
    """Each optimizer step costs step_seconds, each forward-only validation batch a third of it, each
    trial trial_seconds once; the checkpoint cadence counts the steps' time only."""
    spec = load_spec(REPO / "sweeps" / "quickstart.yaml")
    profile = load_profile(REPO / "backends" / "local.yaml")

    def with_overheads(step_s: float, trial_s: float) -> dict:
        hardware = dataclasses.replace(profile.hardware, step_seconds=step_s, trial_seconds=trial_s)
        return {t.id: t for t in plan_sweep(spec, dataclasses.replace(profile, hardware=hardware)).trials}

    bare, stepped, started = with_overheads(0, 0), with_overheads(0.01, 0), with_overheads(0, 5)
    for trial_id, trial in bare.items():
        c = trial.config
        val_batches = math.ceil(math.ceil(spec.data.validation_tokens / spec.data.seq_len) / c.micro_batch)
        passes = (1 if c.family == "ar" else c.mdm_eval_samples) * len(c.eval_steps) * val_batches
        assert stepped[trial_id].device_seconds - trial.device_seconds == pytest.approx(0.01 * (c.steps + passes / 3))
        assert started[trial_id].device_seconds - trial.device_seconds == pytest.approx(5)
        assert started[trial_id].config.checkpoint_every_steps == c.checkpoint_every_steps
        assert stepped[trial_id].config.checkpoint_every_steps <= c.checkpoint_every_steps
    assert "6 ms a step and 5.7 s a trial" in profile.hardware.assumption()
