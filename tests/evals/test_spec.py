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


@pytest.mark.parametrize("block, message", [
    ("evals: {tasks: [a], at: best}", "spec.yaml:34 evals.at: at: best needs each trial's best-validation "
                                      "checkpoint, which trials do not keep yet; use at: final"),
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
