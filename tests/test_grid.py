"""The grid generators: products, zip, include/exclude, overrides, iso-FLOP."""

from __future__ import annotations

import math

import pytest

from conftest import MINIMAL
from sweeper.plan import eval_steps, plan_sweep
from sweeper.spec.presets import num_params
from sweeper.profile import load_profile
from sweeper.spec import load_spec

GRID = "grid:\n  family: [ar, mdm]\n  model: tiny\n  unique_tokens: 4k\n  epochs: [1, 2]\n"


def plan_of(write_spec, text: str):
    spec = load_spec(write_spec(text))
    return spec, plan_sweep(spec, load_profile("backends/local.yaml"))


def points(plan) -> set[tuple]:
    return {(t.family, t.model.name, t.unique_tokens, t.epochs, t.train.lr_peak) for t in plan.trials}


def with_grid(grid: str, extra: str = "") -> str:
    return MINIMAL.replace(GRID, grid) + extra


def test_product_of_axes(write_spec) -> None:
    _, plan = plan_of(write_spec, MINIMAL)
    assert points(plan) == {(f, "tiny", 4000, e, 2e-4) for f in ("ar", "mdm") for e in (1.0, 2.0)}


def test_zip_moves_axes_together(write_spec) -> None:
    grid = ("grid:\n  family: ar\n  model: tiny\n  unique_tokens: 4k\n"
            "  zip:\n    - {epochs: [1, 2, 4], lr_peak: [1e-3, 2e-3, 4e-3]}\n")
    _, plan = plan_of(write_spec, with_grid(grid))
    assert points(plan) == {("ar", "tiny", 4000, 1.0, 1e-3), ("ar", "tiny", 4000, 2.0, 2e-3),
                            ("ar", "tiny", 4000, 4.0, 4e-3)}


def test_blocks_union_and_duplicates_merge(write_spec) -> None:
    grid = "grid:\n  - family: [ar, mdm]\n    model: tiny\n    unique_tokens: 4k\n    epochs: [1, 2]\n" + \
           "  - {family: ar, model: tiny, unique_tokens: 4000, epochs: [2, 3]}\n"
    _, plan = plan_of(write_spec, with_grid(grid))
    assert len(plan.trials) == 5
    assert plan.merged_duplicates == 1


def test_exclude_rules_and_ranges(write_spec) -> None:
    extra = "exclude:\n  - {family: ar, epochs: {min: 2}}\n  - {family: mdm, epochs: 1}\n"
    _, plan = plan_of(write_spec, MINIMAL + extra)
    assert points(plan) == {("ar", "tiny", 4000, 1.0, 2e-4), ("mdm", "tiny", 4000, 2.0, 2e-4)}


def test_include_adds_points_that_exclude_does_not_touch(write_spec) -> None:
    extra = ("exclude:\n  - {family: ar}\n"
             "include:\n  - {family: ar, model: tiny, unique_tokens: 8k, epochs: 1}\n")
    _, plan = plan_of(write_spec, MINIMAL + extra)
    assert points(plan) == {("mdm", "tiny", 4000, 1.0, 2e-4), ("mdm", "tiny", 4000, 2.0, 2e-4),
                            ("ar", "tiny", 8000, 1.0, 2e-4)}


def test_conditional_overrides(write_spec) -> None:
    extra = ("overrides:\n  - when: {family: mdm}\n    set: {lr_peak: 3e-4}\n"
             "  - when: {family: mdm, epochs: 2}\n    set: {lr_peak: 4e-4, dropout: 0.0}\n")
    _, plan = plan_of(write_spec, MINIMAL + extra)
    assert points(plan) == {("ar", "tiny", 4000, 1.0, 2e-4), ("ar", "tiny", 4000, 2.0, 2e-4),
                            ("mdm", "tiny", 4000, 1.0, 3e-4), ("mdm", "tiny", 4000, 2.0, 4e-4)}
    assert {t.train.dropout for t in plan.trials if t.family == "mdm" and t.epochs == 2} == {0.0}


def test_train_key_axis(write_spec) -> None:
    grid = "grid:\n  family: ar\n  model: tiny\n  unique_tokens: 4k\n  seed: [1, 2, 3]\n"
    _, plan = plan_of(write_spec, with_grid(grid))
    assert sorted(t.seed for t in plan.trials) == [1, 2, 3]
    assert len({t.id for t in plan.trials}) == 3
    assert all(t.name.endswith(f"-s{t.seed}") for t in plan.trials)


def test_isoflop_generator_keeps_models_near_the_optimum(write_spec) -> None:
    text = MINIMAL.replace("symbols: 64}", "symbols: 50256}").replace("vocab_size: 65", "vocab_size: 50257")
    grid = "grid:\n  family: ar\n  isoflop: {flops: [6e18, 1e20], window: 2}\n"
    spec, plan = plan_of(write_spec, text.replace(GRID, grid))
    law = spec.grid.blocks[0].isoflop.law
    assert {t.flops_budget for t in plan.trials} == {6e18, 1e20}
    for trial in plan.trials:
        n_opt = law.optimal_params(trial.flops_budget)
        assert n_opt / 2 <= trial.num_params <= n_opt * 2
        assert trial.tokens == round(trial.flops_budget / (6 * trial.num_params))
        assert trial.flops == pytest.approx(trial.flops_budget, rel=1e-9)
        assert (trial.unique_tokens, trial.epochs) == (trial.tokens, 1.0)
    kept_6e18 = {t.model.name for t in plan.trials if t.flops_budget == 6e18}
    every_preset_in_window = {name for name, m in spec.models.items()
                              if law.optimal_params(6e18) / 2 <= num_params(m, 50257) <= law.optimal_params(6e18) * 2}
    assert kept_6e18 == every_preset_in_window and "140M" in kept_6e18 and "7M" not in kept_6e18


def test_isoflop_with_a_unique_data_budget_repeats_epochs(write_spec) -> None:
    text = MINIMAL.replace("symbols: 64}", "symbols: 50256}").replace("vocab_size: 65", "vocab_size: 50257")
    grid = "grid:\n  family: ar\n  model: [140M, 425M]\n  unique_tokens: 1B\n  isoflop: {flops: [1e19, 3e19], window: 10}\n"
    _, plan = plan_of(write_spec, text.replace(GRID, grid))
    by_key = {(t.model.name, t.flops_budget): t for t in plan.trials}
    repeated = by_key[("140M", 3e19)]  # D = 3e19 / (6 x 144.8M) = 34.5B tokens over 1B unique
    assert repeated.unique_tokens == 1_000_000_000
    assert repeated.epochs == pytest.approx(repeated.tokens / 1e9) and repeated.epochs > 30
    # With more unique data than tokens, U = D: the trial is the unconstrained single-epoch one.
    assert all(t.epochs >= 1 for t in plan.trials)


def test_optimal_params_closed_form(write_spec) -> None:
    spec, _ = plan_of(write_spec, MINIMAL.replace(GRID, "grid:\n  family: ar\n  isoflop: {flops: [1e19]}\n"))
    law = spec.grid.blocks[0].isoflop.law
    g = (law.alpha * law.A / (law.beta * law.B)) ** (1 / (law.alpha + law.beta))
    assert law.optimal_params(1e19) == pytest.approx(g * (1e19 / 6) ** 0.5)
    assert law.optimal_params(1e19) == pytest.approx(2.92e8, rel=0.01)


@pytest.mark.parametrize("steps, points, spacing", [(1, 1, "log"), (1, 24, "log"), (10, 24, "log"),
                                                     (95368, 24, "log"), (100, 4, "linear"), (7, 3, "linear")])
def test_eval_steps_start_untrained_and_end_at_the_last_step(steps: int, points: int, spacing: str) -> None:
    marks = eval_steps(steps, points, spacing)
    assert marks[0] == 0 and marks[-1] == steps
    assert list(marks) == sorted(set(marks))
    assert len(marks) <= points + 1
    if spacing == "log" and steps > 1000:
        assert marks[1] == 1 and len(marks) == points + 1


def test_counts(write_spec) -> None:
    _, plan = plan_of(write_spec, MINIMAL)
    for trial in plan.trials:
        assert trial.tokens == round(trial.unique_tokens * trial.epochs)
        assert trial.steps == math.ceil(trial.tokens / (8 * 16))
        assert trial.warmup_steps == max(1, round(0.01 * trial.steps))
        assert trial.flops == 6 * trial.num_params * trial.tokens
        assert 1 <= trial.checkpoint_every_steps <= trial.steps
