"""schedule: wsd and share_prefix in the spec and the plan: keys, ids, warmup and decay counts, trunks and
branches, the totals with and without sharing, and the errors of its keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import MINIMAL
from sweeper.plan import plan_sweep
from sweeper.profile import load_profile
from sweeper.spec import load_spec

REPO = Path(__file__).resolve().parent.parent
LOCAL = REPO / "backends" / "local.yaml"
WSD = "  schedule: wsd\n"


def spec_with(train: str = "", epochs: str = "[1, 2]") -> str:
    """MINIMAL with these train lines (two-space indented) and epochs."""
    return MINIMAL.replace("  batch_sequences: 8\n", "  batch_sequences: 8\n" + train).replace(
        "epochs: [1, 2]", f"epochs: {epochs}")


def plan_of(write_spec, text: str, name: str = "spec.yaml", profile: Path = LOCAL):
    return plan_sweep(load_spec(write_spec(text, name)), load_profile(profile))


def ids(plan) -> dict[str, str]:
    return {t.name: t.id for t in plan.trials}


# --- ids --------------------------------------------------------------------------------------------------

def test_a_wsd_trial_has_an_id_of_its_own_and_sharing_keeps_it(write_spec) -> None:
    cosine = ids(plan_of(write_spec, spec_with()))
    unshared = ids(plan_of(write_spec, spec_with(WSD)))
    shared = ids(plan_of(write_spec, spec_with(WSD + "  share_prefix: true\n")))
    assert cosine.keys() == unshared.keys() and not set(cosine.values()) & set(unshared.values())
    assert shared == unshared  # how, not what: a branch is the same experiment as its unshared twin


def test_wsd_keys_enter_the_id_only_away_from_their_defaults(write_spec) -> None:
    unshared = ids(plan_of(write_spec, spec_with(WSD)))
    spelled = ids(plan_of(write_spec, spec_with(WSD + "  decay_fraction: 0.2\n  decay_shape: 1-sqrt\n"
                                                 "  warmup_steps: null\n  warmup_fraction: 0.01\n")))
    assert spelled == unshared
    for changed in ("  decay_fraction: 0.1\n", "  decay_shape: linear\n", "  warmup_steps: 3\n"):
        other = ids(plan_of(write_spec, spec_with(WSD + changed)))
        assert not set(other.values()) & set(unshared.values()), changed


def test_cosine_ids_do_not_see_the_new_keys(write_spec) -> None:
    assert ids(plan_of(write_spec, spec_with())) == ids(plan_of(write_spec, spec_with("  share_prefix: false\n")))
    assert ids(plan_of(write_spec, spec_with())) == ids(plan_of(write_spec, spec_with("  decay_shape: 1-sqrt\n")))


# --- warmup and decay counts ------------------------------------------------------------------------------

def test_wsd_warmup_is_one_count_for_every_length_and_decay_a_fraction_of_each(write_spec) -> None:
    # U = 4k tokens, 8 x 16 = 128 tokens a step: ceil(31.25) = 32 steps an epoch, so warmup max(1, round(0.32)) = 1
    # at every length; steps ceil(E x 4000 / 128), decay max(1, round(0.2 x steps)), decay_start the difference
    plan = plan_of(write_spec, spec_with(WSD, epochs="[1, 2, 50]"))
    configs = {t.config.epochs: t.config for t in plan.trials if t.family == "ar"}
    assert {e: (c.steps, c.warmup_steps, c.decay_steps, c.decay_start) for e, c in configs.items()} == {
        1.0: (32, 1, 6, 26), 2.0: (63, 1, 13, 50), 50.0: (1563, 1, 313, 1250)}
    cosine = plan_of(write_spec, spec_with(epochs="[1, 2, 50]"))
    assert sorted(t.config.warmup_steps for t in cosine.trials if t.family == "ar") == [1, 1, 16]
    assert all(t.config.decay_steps == 0 for t in cosine.trials)
    explicit = plan_of(write_spec, spec_with(WSD + "  warmup_steps: 20\n  decay_fraction: 0.1\n", epochs="[1, 2]"))
    assert {(t.config.warmup_steps, t.config.decay_steps) for t in explicit.trials} == {(20, 3), (20, 6)}


def test_a_warmup_longer_than_a_trials_stable_phase_is_an_error(write_spec, cli) -> None:
    code, out, err = cli("validate", write_spec(spec_with(WSD + "  warmup_steps: 40\n")))
    assert (code, out) == (2, "")
    assert err.strip() == ("error: spec.yaml:14 grid: warmup_steps 40 is more than the 26 steps before the decay "
                           "of ar-tiny at 1 epochs of U=4k: lower warmup_steps")


# --- trunks and branches ----------------------------------------------------------------------------------

def test_trials_alike_but_for_epochs_share_one_trunk(write_spec) -> None:
    plan = plan_of(write_spec, spec_with(WSD + "  share_prefix: true\n", epochs="[1, 2, 4]"))
    for family in ("ar", "mdm"):
        trials = {t.epochs: t for t in plan.trials if t.family == family}
        trunk = trials[4.0]
        assert trunk.trunk_id is None and trunk.branch_step == 0
        assert [(t.epochs, t.branch_step) for t in plan.branches(trunk.id)] == [(1.0, 26), (2.0, 50)]
        for epochs in (1.0, 2.0):
            branch = trials[epochs]
            assert branch.trunk_id == trunk.id and branch.branch_step == branch.config.decay_start
            assert branch.tokens_shared == branch.branch_step * 8 * 16
        # the trunk evaluates where each branch's curve needs a point before its branch point
        needed = {s for b in plan.branches(trunk.id) for s in b.eval_steps if s <= b.branch_step}
        assert set(plan.trunk_eval_steps(trunk.id)) == set(trunk.eval_steps) | needed
        assert needed - set(trunk.eval_steps)  # log-spaced over each trial's own steps: they differ
    totals = plan.totals()
    assert (totals["trunks"], totals["branches"]) == (2, 4)
    saved = sum(6 * t.num_params * t.tokens_shared for t in plan.trials if t.trunk_id)
    assert totals["flops_shared"] == pytest.approx(totals["flops"] - saved)
    assert totals["device_hours_shared"] < totals["device_hours"]


def test_the_shared_makespan_waits_for_each_branch_point_then_trains_the_branchs_own_part(write_spec) -> None:
    import dataclasses

    plan = plan_of(write_spec, spec_with(WSD + "  share_prefix: true\n", epochs="[1, 2, 4]"))
    trunks = [t for t in plan.trials if t.trunk_id is None]
    branches = [t for t in plan.trials if t.trunk_id is not None]
    for branch in branches:  # its decay steps and evaluations only
        assert branch.branch_wall_seconds == pytest.approx(
            branch.wall_seconds * branch.branch_device_seconds / branch.device_seconds)
        assert branch.branch_wall_seconds < branch.wall_seconds
    assert all(t.branch_wall_seconds == t.wall_seconds for t in trunks)
    # one slot: every trial in turn, and a branch's point is always stored before the slot frees
    serial = dataclasses.replace(plan, concurrency=1)
    assert serial.makespan_seconds() == pytest.approx(sum(t.wall_seconds for t in plan.trials))
    assert serial.makespan_seconds(shared=True) == pytest.approx(
        sum(t.wall_seconds for t in trunks) + sum(t.branch_wall_seconds for t in branches))
    # a slot for each: the trunks start at once, each branch at its trunk's branch point
    wide = dataclasses.replace(plan, concurrency=len(plan.trials))
    trunk_of = {t.id: t for t in trunks}
    ends = [t.wall_seconds for t in trunks] + [
        trunk_of[b.trunk_id].wall_seconds * b.branch_step / trunk_of[b.trunk_id].steps + b.branch_wall_seconds
        for b in branches]
    assert wide.makespan_seconds(shared=True) == pytest.approx(max(ends))
    assert wide.makespan_seconds() == pytest.approx(max(t.wall_seconds for t in plan.trials))
    assert plan.totals()["makespan_hours_shared"] == pytest.approx(plan.makespan_seconds(shared=True) / 3600)
    # a branch whose trunk is not among the trials trains alone, at once
    alone = dataclasses.replace(plan, trials=tuple(branches), concurrency=1)
    assert alone.makespan_seconds(shared=True) == pytest.approx(sum(t.wall_seconds for t in branches))
    # unless an earlier run stored its branch point: then it starts there, at once, and trains its own part
    stored = {branches[0].id}
    assert alone.makespan_seconds(shared=True, stored=stored) == pytest.approx(
        branches[0].branch_wall_seconds + sum(t.wall_seconds for t in branches[1:]))
    assert alone.makespan_seconds(stored=stored) == alone.makespan_seconds()  # trained alone: from step 0
    totals = alone.totals(stored)
    assert totals["branches"] == 1 and totals["makespan_hours_shared"] * 3600 == pytest.approx(
        alone.makespan_seconds(shared=True, stored=stored))
    assert totals["device_hours_shared"] * 3600 == pytest.approx(
        sum(t.device_seconds for t in branches) - branches[0].device_seconds + branches[0].branch_device_seconds)
    # with its trunk among the trials too, a stored branch point makes the branch ready at once
    trunk = trunk_of[branches[0].trunk_id]
    pair = dataclasses.replace(plan, trials=(trunk, branches[0]), concurrency=2)
    assert pair.makespan_seconds(shared=True, stored=stored) == pytest.approx(
        max(trunk.wall_seconds, branches[0].branch_wall_seconds))


def test_only_trials_alike_in_everything_else_share(write_spec) -> None:
    text = spec_with(WSD + "  share_prefix: true\n", epochs="[1, 2]") + (
        "  - {family: ar, model: tiny, unique_tokens: 4k, epochs: [1, 2], seed: 7}\n"
        "  - {family: ar, model: tiny, unique_tokens: 8k, epochs: 1}\n")
    text = text.replace("grid:\n  family: [ar, mdm]\n  model: tiny\n  unique_tokens: 4k\n  epochs: [1, 2]\n",
                        "grid:\n  - {family: [ar, mdm], model: tiny, unique_tokens: 4k, epochs: [1, 2]}\n")
    plan = plan_of(write_spec, text)
    pairs = {(t.name, t.trunk_id and next(o.name for o in plan.trials if o.id == t.trunk_id)) for t in plan.trials}
    assert pairs == {("ar-tiny-U4k-e2", None), ("ar-tiny-U4k-e1", "ar-tiny-U4k-e2"),
                     ("mdm-tiny-U4k-e2", None), ("mdm-tiny-U4k-e1", "mdm-tiny-U4k-e2"),
                     ("ar-tiny-U4k-e2-s7", None), ("ar-tiny-U4k-e1-s7", "ar-tiny-U4k-e2-s7"),
                     ("ar-tiny-U8k-e1", None)}


def test_without_share_prefix_nothing_is_shared(write_spec) -> None:
    plan = plan_of(write_spec, spec_with(WSD, epochs="[1, 2, 4]"))
    totals = plan.totals()
    assert not any(t.trunk_id for t in plan.trials) and totals["branches"] == 0
    assert (totals["flops_shared"], totals["device_hours_shared"]) == (totals["flops"], totals["device_hours"])


def test_a_branch_whose_trunk_is_filtered_out_counts_in_full(write_spec, cli) -> None:
    path = write_spec(spec_with(WSD + "  share_prefix: true\n", epochs="[1, 2, 4]"))
    code, out, _ = cli("plan", path, "--format", "json", "--where", "epochs<4")
    totals = json.loads(out)["totals"]
    assert code == 0 and totals["branches"] == 0 and totals["flops_shared"] == totals["flops"]


@pytest.mark.parametrize("decay, most", [(0.2, 0.55), (0.1, 0.45)])
def test_the_paper_grid_with_shared_prefixes_costs_about_half(write_spec, decay: float, most: float) -> None:
    # issue: sweeps/grid.yaml with wsd, 1-sqrt, shared: <= 0.55x the FLOPs unshared (0.51x; 0.44x at decay 0.1).
    # Ten epoch counts 1 ... 800 per model: the trunk trains 800 epochs, each branch decay_fraction of its own.
    text = (f"extends: {REPO / 'sweeps' / 'grid.yaml'}\nname: grid-wsd\n"
            f"train: {{schedule: wsd, decay_fraction: {decay}, decay_shape: 1-sqrt, share_prefix: SHARE}}\n")
    shared = plan_of(write_spec, text.replace("SHARE", "true"), profile=REPO / "backends" / "cluster.yaml")
    alone = plan_of(write_spec, text.replace("SHARE", "false"), profile=REPO / "backends" / "cluster.yaml")
    assert ids(shared) == ids(alone)
    totals, unshared = shared.totals(), alone.totals()
    assert (totals["trunks"], totals["branches"]) == (20, 180)
    assert totals["flops"] == unshared["flops"] == unshared["flops_shared"]
    ratio = totals["flops_shared"] / unshared["flops"]
    expected = (800 + decay * (2090 - 800)) / 2090  # sum of the epoch counts: 2,090
    assert ratio <= most and ratio == pytest.approx(expected, abs=0.005)
    # device time follows the FLOPs, a little above them: a branch runs all its evaluations (the trunk those
    # before its branch point), and evaluation costs no less for being shared
    assert ratio < totals["device_hours_shared"] / unshared["device_hours"] < ratio + 0.03


def test_plan_table_shows_trunks_branches_and_both_totals(write_spec, cli) -> None:
    path = write_spec(spec_with(WSD + "  share_prefix: true\n", epochs="[1, 2, 4]"))
    code, out, _ = cli("plan", path)
    assert code == 0 and "trunk/branch" in out and "trunk, 2 branches" in out
    trunk = next(t for t in plan_of(write_spec, path.read_text(), "again.yaml").trials
                 if t.family == "ar" and t.epochs == 4)
    assert f"↳ {trunk.id}@26" in out and f"↳ {trunk.id}@50" in out
    assert "6 trials (3 ar, 3 mdm)" in out
    assert "with prefix sharing (2 trunks, 4 branches, each training only its decay): " in out
    assert "wall trained alone, ≈" in out and " with prefix sharing, assuming " in out
    code, out, _ = cli("plan", path, "--format", "csv")
    assert out.splitlines()[0].endswith(",trunk_id,branch_step")


# --- spec errors: one sentence naming the key -------------------------------------------------------------

ERRORS = [
    ("warmup_steps without wsd", "  warmup_steps: 10\n",
     "spec.yaml:10 train.warmup_steps: warmup_steps applies to schedule wsd only, not cosine: set schedule: wsd "
     "or leave warmup_steps out"),
    ("decay_fraction without wsd", "  schedule: linear\n  decay_fraction: 0.1\n",
     "spec.yaml:11 train.decay_fraction: decay_fraction applies to schedule wsd only, not linear: set schedule: wsd "
     "or leave decay_fraction out"),
    ("decay_shape without wsd", "  decay_shape: cosine\n",
     "spec.yaml:10 train.decay_shape: decay_shape applies to schedule wsd only, not cosine: set schedule: wsd "
     "or leave decay_shape out"),
    ("share_prefix without wsd", "  share_prefix: true\n",
     "spec.yaml:10 train.share_prefix: share_prefix applies to schedule wsd only, not cosine: set schedule: wsd "
     "or leave share_prefix out"),
    ("decay_fraction of one", WSD + "  decay_fraction: 1\n",
     "spec.yaml:11 train.decay_fraction: expected a value below 1, got 1"),
    ("decay_fraction of zero", WSD + "  decay_fraction: 0\n",
     "spec.yaml:11 train.decay_fraction: expected a positive number, got 0"),
    ("unknown decay shape", WSD + "  decay_shape: sqrt\n",
     "spec.yaml:11 train.decay_shape: expected one of linear, cosine, 1-sqrt, got 'sqrt'; did you mean '1-sqrt'?"),
    ("negative warmup", WSD + "  warmup_steps: -1\n",
     "spec.yaml:11 train.warmup_steps: expected a value of at least 0, got -1"),
    ("share_prefix not a flag", WSD + "  share_prefix: yes please\n",
     "spec.yaml:11 train.share_prefix: expected true or false, got 'yes please'"),
    ("unknown schedule", "  schedule: wds\n",
     "spec.yaml:10 train.schedule: expected one of cosine, linear, constant, wsd, got 'wds'; did you mean 'wsd'?"),
]


@pytest.mark.parametrize("train, expected", [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_wsd_key_errors_name_the_key(write_spec, cli, train: str, expected: str) -> None:
    code, out, err = cli("validate", write_spec(spec_with(train)))
    assert (code, out) == (2, "") and err.strip() == f"error: {expected}"


def test_an_override_that_leaves_wsd_behind_says_so(write_spec, cli) -> None:
    text = spec_with(WSD + "  share_prefix: true\n") + (
        "overrides:\n  - when: {family: mdm}\n    set: {schedule: cosine}\n")
    code, out, err = cli("validate", write_spec(text))
    assert (code, out) == (2, "")
    assert err.strip() == ("error: spec.yaml:14 grid: share_prefix applies to schedule wsd only, not cosine: set "
                           "schedule: wsd or leave share_prefix out (after this block's settings and overrides)")
