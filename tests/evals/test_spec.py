"""The spec's `evals` block: read strictly, errors one line at file:line, and no part of a trial id."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeper.plan import plan_sweep
from sweeper.profile import load_profile
from sweeper.spec import SpecError, load_spec
from sweeper.spec.evals import EvalsSpec

from .helpers import REPO

SMOKE = REPO / "tests" / "specs" / "smoke.yaml"


def with_evals(tmp_path: Path, block: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(SMOKE.read_text() + block)
    return path


def ids(path: Path) -> dict[str, str]:
    plan = plan_sweep(load_spec(path), load_profile(REPO / "backends" / "local.yaml"))
    return {t.name: t.id for t in plan.trials}


def test_the_block_reads_with_defaults_and_leaves_trial_ids_alone(tmp_path: Path) -> None:
    path = with_evals(tmp_path, "evals:\n  tasks: [arc_easy, lambada_openai]\n  limit: 100\n")
    spec = load_spec(path)
    assert spec.evals == EvalsSpec(tasks=("arc_easy", "lambada_openai"), limit=100)
    assert (spec.evals.num_fewshot, spec.evals.at, spec.evals.mc_samples, spec.evals.task_dirs) == (0, "final", 32, ())
    assert load_spec(SMOKE).evals is None
    assert ids(path) == ids(SMOKE)
    best = with_evals(tmp_path, "evals:\n  tasks: [arc_easy]\n  at: best\n")
    assert load_spec(best).evals.at == "best" and ids(best) == ids(SMOKE)  # keeping best weights is how, not what


@pytest.mark.parametrize("block, message", [
    ("evals: {tasks: [a], at: last}", "spec.yaml:34 evals.at: expected one of final, best, got 'last'"),
    ("evals: {tasks: []}", "spec.yaml:34 evals.tasks: expected a non-empty list"),
    ("evals: {tasks: [a, a]}", "spec.yaml:34 evals.tasks: task 'a' is listed twice"),
    ("evals: {tasks: [a], limit: 0}", "spec.yaml:34 evals.limit: expected a positive whole number, got 0"),
    ("evals: {tasks: [a], mc_sample: 8}", "spec.yaml:34 evals.mc_sample: unknown key 'mc_sample' in evals; "
                                          "did you mean 'mc_samples'?"),
])
def test_mistakes_are_one_line_at_file_and_line(tmp_path: Path, block: str, message: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as error:
        load_spec(with_evals(tmp_path, block + "\n"))
    assert str(error.value) == message


def test_the_plans_time_includes_the_eval_stage(tmp_path: Path) -> None:
    from sweeper.plan.sizing import EVAL_TASK_OVERHEAD_S

    profile = load_profile(REPO / "backends" / "local.yaml")
    bare = {t.id: t for t in plan_sweep(load_spec(SMOKE), profile).trials}
    path = with_evals(tmp_path, "evals:\n  tasks: [a, b]\n  limit: 100\n  mc_samples: 8\n")
    evaluated = plan_sweep(load_spec(path), profile).trials
    assert {t.id for t in evaluated} == set(bare)
    for trial in evaluated:
        extra = trial.device_seconds - bare[trial.id].device_seconds
        assert extra > 2 * EVAL_TASK_OVERHEAD_S  # two tasks' setup, and their questions
        assert trial.config.checkpoint_every_steps == bare[trial.id].config.checkpoint_every_steps
    ar, mdm = sorted(evaluated, key=lambda t: t.family)
    assert mdm.device_seconds - bare[mdm.id].device_seconds > ar.device_seconds - bare[ar.id].device_seconds
