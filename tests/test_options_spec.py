"""Train options in specs and plans (sweeper.trial.OPTION_DEFAULTS): at their defaults, however
written, they leave every id as it was; away from them they change it, name the trial and reach its
TrialConfig; a value out of range or an option of the other family is one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import MINIMAL
from sweeper.cli import main
from sweeper.plan import plan_sweep
from sweeper.profile import load_profile
from sweeper.spec import TrainSpec, load_spec
from sweeper.trial import OPTION_DEFAULTS

REPO = Path(__file__).resolve().parent.parent


def plan(path: Path):
    return plan_sweep(load_spec(path), load_profile(REPO / "backends" / "local.yaml"))


def ids(path: Path) -> dict[str, str]:
    return {t.name: t.id for t in plan(path).trials}


def with_train(*lines: str) -> str:
    return MINIMAL.replace("batch_sequences: 8", "batch_sequences: 8\n" + "".join(f"  {line}\n" for line in lines)
                           )


def test_train_spec_defaults_are_the_option_defaults() -> None:
    assert {name: getattr(TrainSpec(), name) for name in OPTION_DEFAULTS} == OPTION_DEFAULTS


def test_defaults_written_out_keep_every_id(write_spec) -> None:
    base = ids(write_spec(MINIMAL, "a.yaml"))
    spelled = with_train("attention_dropout: null", "input_mask_rate: 0", "orderings: 1",
                         "mdm_loss_weight: elbo", "mdm_t_sampling: iid", "mdm_min_mask_rate: 1e-3",
                         "ar_fraction: 0.5", "dual_val_loss: ar", "block_size: 4")
    assert ids(write_spec(spelled, "b.yaml")) == base
    # attention dropout equal to dropout is the default: the same model is trained
    same = plan(write_spec(with_train("dropout: 0.2", "attention_dropout: 0.2"), "d.yaml")).trials
    assert {t.name: t.id for t in same} == ids(write_spec(with_train("dropout: 0.2"), "c.yaml"))
    assert all(t.config.attention_dropout is None for t in same)  # so a checkpoint resumes under either


@pytest.mark.parametrize("family, line, label", [
    ("ar", "attention_dropout: 0.5", "adrop0.5"),
    ("ar", "input_mask_rate: 0.25", "imask0.25"),
    ("ar", "orderings: 4", "ord4"),
    ("mdm", "mdm_loss_weight: unweighted", "unweighted"),
    ("mdm", "mdm_t_sampling: stratified", "stratified"),
    ("mdm", "mdm_min_mask_rate: 0.01", "pmin0.01"),
    ("dual", "ar_fraction: 0.25", "arf0.25"),
    ("dual", "dual_val_loss: mdm", "val-mdm"),
    ("bd3lm", "block_size: 8", "blk8"),
])
def test_an_option_away_from_its_default_changes_the_id(write_spec, family: str, line: str, label: str) -> None:
    one_family = MINIMAL.replace("family: [ar, mdm]", f"family: {family}")
    base = plan(write_spec(one_family, "a.yaml"))
    changed = plan(write_spec(one_family.replace("batch_sequences: 8", f"batch_sequences: 8\n  {line}"), "b.yaml"))
    assert {t.id for t in base.trials}.isdisjoint({t.id for t in changed.trials})
    assert [t.name for t in changed.trials] == [f"{t.name}-{label}" for t in base.trials]
    key, value = line.split(": ")
    assert str(getattr(changed.trials[0].config, key)) == value.replace("1e-3", "0.001")


def one_error(capsys, code: int) -> str:
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip().removeprefix("error: ")


@pytest.mark.parametrize("lines, message", [
    (["orderings: 4"], "spec.yaml:14 grid: orderings applies to ar trials only, not to mdm ones (orderings: 4); "
                       "set it in a grid block of family ar or an override with when: {family: ar} (after this "
                       "block's settings and overrides)"),
    (["mdm_t_sampling: stratified"], "spec.yaml:14 grid: mdm_t_sampling applies to mdm trials only, not to ar "
                                     "ones (mdm_t_sampling: stratified); set it in a grid block of family mdm or "
                                     "an override with when: {family: mdm} (after this block's settings and "
                                     "overrides)"),
    (["input_mask_rate: 1"], "spec.yaml:10 train.input_mask_rate: expected a value below 1, got 1"),
    (["attention_dropout: -0.1"], "spec.yaml:10 train.attention_dropout: expected a value of at least 0, got -0.1"),
    (["orderings: 0"], "spec.yaml:10 train.orderings: expected a positive whole number, got 0"),
    (["orderings: 2000"], "spec.yaml:10 train.orderings: expected a value of at most 1,024, got 2000"),
    (["mdm_min_mask_rate: 0"], "spec.yaml:10 train.mdm_min_mask_rate: expected a positive number, got 0"),
    (["mdm_loss_weight: nelbo"], "spec.yaml:10 train.mdm_loss_weight: expected one of elbo, unweighted, got "
                                 "'nelbo'; did you mean 'elbo'?"),
    (["block_size: 8"], "spec.yaml:14 grid: block_size applies to bd3lm trials only, not to ar ones (block_size: 8); "
                        "set it in a grid block of family bd3lm or an override with when: {family: bd3lm} (after "
                        "this block's settings and overrides)"),
    (["ar_fraction: 0.9"], "spec.yaml:14 grid: ar_fraction applies to dual trials only, not to ar ones "
                           "(ar_fraction: 0.9); set it in a grid block of family dual or an override with when: "
                           "{family: dual} (after this block's settings and overrides)"),
    (["ar_fraction: 1.5"], "spec.yaml:10 train.ar_fraction: expected a value of at most 1, got 1.5"),
    (["block_size: 0"], "spec.yaml:10 train.block_size: expected a positive whole number, got 0"),
    (["dual_val_loss: elbo"], "spec.yaml:10 train.dual_val_loss: expected one of ar, mdm, got 'elbo'"),
])
def test_bad_options_are_one_line(write_spec, capsys, lines: list[str], message: str) -> None:
    path = write_spec(with_train(*lines), "spec.yaml")
    assert one_error(capsys, main(["validate", str(path)])) == message


def test_an_option_in_its_own_family_block_plans(write_spec) -> None:
    text = MINIMAL.replace("grid:\n  family: [ar, mdm]\n  model: tiny\n  unique_tokens: 4k\n  epochs: [1, 2]\n",
                           "grid:\n  - {family: [ar, mdm], model: tiny, unique_tokens: 4k}\n"
                           "  - {family: ar, model: tiny, unique_tokens: 4k, orderings: [2, 4]}\n"
                           "overrides:\n  - when: {family: mdm}\n    set: {mdm_t_sampling: stratified}\n")
    trials = plan(write_spec(text, "spec.yaml")).trials
    assert sorted(t.name for t in trials) == ["ar-tiny-U4k-e1", "ar-tiny-U4k-e1-ord2", "ar-tiny-U4k-e1-ord4",
                                              "mdm-tiny-U4k-e1-stratified"]


def test_new_families_plan_and_a_block_size_must_divide_seq_len(write_spec, capsys) -> None:
    text = MINIMAL.replace("family: [ar, mdm]", "family: [dual, bd3lm]")
    trials = plan(write_spec(text, "spec.yaml")).trials
    assert sorted(t.name for t in trials) == ["bd3lm-tiny-U4k-e1", "bd3lm-tiny-U4k-e2", "dual-tiny-U4k-e1",
                                              "dual-tiny-U4k-e2"]
    for t in trials:  # bd3lm processes x_t ⊕ x_0: twice the paper's 6ND, and the plan says both
        assert t.flops_processed == (2 if t.family == "bd3lm" else 1) * t.flops
        assert (t.config.ar_fraction, t.config.block_size) == (0.5, 4)
    bad = write_spec(text.replace("family: [dual, bd3lm]", "family: bd3lm\n  block_size: 5"), "bad.yaml")
    assert one_error(capsys, main(["validate", str(bad)])) == (
        "bad.yaml:12 grid: block_size 5 does not divide seq_len 16: bd3lm cuts every sequence into whole "
        "blocks; pick a divisor of seq_len")


def test_the_ablations_spec_shares_its_baselines_with_the_grid() -> None:
    ablations = {t.name: t.id for t in plan(REPO / "sweeps" / "ablations.yaml").trials}
    grid = {t.name: t.id for t in plan(REPO / "sweeps" / "grid.yaml").trials}
    assert ablations["ar-140M-U100M-e50"] == grid["ar-140M-U100M-e50"]
    assert ablations["mdm-140M-U100M-e50"] == grid["mdm-140M-U100M-e50"]
    assert "ar-278M-U100M-e100-ord1" not in ablations and "ar-278M-U100M-e100" in ablations  # N = 1 is plain
    assert {n for n in ablations if "-e50-" in n} == {
        f"ar-140M-U100M-e50-{label}" for label in
        ("adrop0.25", "adrop0.5", "adrop0.75", "imask0.1", "imask0.25", "imask0.5")}
    assert len(ablations) == 14
