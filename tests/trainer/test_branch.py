"""Prefix sharing in the trainer: a branch trained from its trunk's checkpoint reports the curve of the
same trial trained alone and ends with its weights, for ar and mdm with dropout; the trunk's own curve
and weights are those it has alone; a checkpoint of another trial is refused."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sweeper.plan import _BRANCH_FIELDS, eval_steps
from sweeper.trainer import train
from sweeper.trainer.branch import BRANCH_FIELDS, BRANCH_POINT_KEY, BRANCHED_KEY, SHARED_KEY
from sweeper.trainer.checkpoint import read_best, read_checkpoint
from sweeper.trainer.optim import lr_at

from .helpers import Recorder, random_tokens, tiny_config

POOL = random_tokens(40 * 32 + 1, 64, seed=0)  # 2.5 steps of 16 sequences an epoch
VAL = random_tokens(6 * 32 + 1, 64, seed=1)
CURVE = ("tokens", "epoch", "flops", "train/loss", "lr", "val/loss", "val/loss_best")
FINAL = ("final/val_loss", "final/val_loss_best", "final/tokens_trained")


def wsd(steps: int, **changes: object):
    """A tiny wsd trial planned as the planner plans one (decay_fraction 0.2, 6 log-spaced evaluations
    over its own steps), with cadences that make its log points differ from every other length's."""
    cadence = {20: (3, 7), 30: (4, 9), 50: (5, 10)}[steps]  # log_every_steps, checkpoint_every_steps
    return tiny_config(**{"schedule": "wsd", "steps": steps, "decay_steps": max(1, round(0.2 * steps)),
                          "warmup_steps": 3, "epochs": steps * 16 / 40, "tokens": steps * 16 * 32, "lr_peak": 1e-3,
                          "lr_min": 1e-4, "eval_steps": eval_steps(steps, 6, "log"), "log_every_steps": cadence[0],
                          "checkpoint_every_steps": cadence[1], "dropout": 0.1, **changes})


def _extra(trunk, *branches) -> frozenset[int]:
    """Plan.trunk_eval_steps minus the trunk's own."""
    return frozenset(s for b in branches for s in b.eval_steps if s <= b.decay_start) - set(trunk.eval_steps)


def _train(config, root: Path, **kwargs) -> Recorder:
    rec = Recorder()
    train(config, POOL, VAL, rec, checkpoint_dir=str(root), **kwargs)
    return rec


def _weights(root: Path, step: int) -> dict[str, torch.Tensor]:
    return read_checkpoint(root / f"step_{step:08d}")[1]["model"]


def _diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _points(rec: Recorder, keys: tuple[str, ...] = CURVE) -> list[tuple[float | None, ...]]:
    return [tuple(m.get(k) for k in keys) for m in rec.metrics]


@pytest.fixture(scope="module", params=["ar", "mdm"])
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One trunk (50 steps) with branches at 16 (20 steps) and 24 (30 steps), and each trained alone."""
    family = request.param
    root = tmp_path_factory.mktemp(family)
    trunk, short, mid = (wsd(s, family=family, trial_id=f"{family}-{s}") for s in (50, 20, 30))
    assert (short.decay_start, mid.decay_start) == (16, 24)
    out = {"configs": (trunk, short, mid), "root": root, "alone": {}, "shared": {}}
    for c in (trunk, short, mid):
        out["alone"][c.steps] = _train(c, root / f"alone-{c.steps}")
    out["shared"][50] = _train(trunk, root / "trunk", extra_eval_steps=_extra(trunk, short, mid),
                               keep_steps=frozenset({16, 24}))
    for c in (short, mid):
        out["shared"][c.steps] = _train(c, root / f"branch-{c.steps}",
                                        branch_from=str(root / "trunk" / f"step_{c.decay_start:08d}"))
    return out


def test_the_trunk_reports_the_curve_and_ends_with_the_weights_it_has_alone(runs: dict) -> None:
    alone, shared, root = runs["alone"][50], runs["shared"][50], runs["root"]
    marks = [(m, d) for m, d in shared.reports if BRANCH_POINT_KEY in m]
    assert [(m[BRANCH_POINT_KEY], Path(d).name) for m, d in marks] == [(16, "step_00000016"), (24, "step_00000024")]
    assert all(set(m) == {"tokens", BRANCH_POINT_KEY} for m, _ in marks)  # neither is a log point of the trunk
    curve = Recorder()
    curve.reports = [r for r in shared.reports if BRANCH_POINT_KEY not in r[0]]
    assert curve.curve() == alone.curve()  # train/loss, val/loss, val/loss_best, lr, grad_norm, epoch
    assert _points(curve, FINAL)[-1] == _points(alone, FINAL)[-1]
    assert _diff(_weights(root / "trunk", 50), _weights(root / "alone-50", 50)) == 0.0
    trunk_state, alone_state = (read_checkpoint(r / "step_00000050")[1] for r in (root / "trunk", root / "alone-50"))
    assert torch.equal(trunk_state["rng"][0]["torch"], alone_state["rng"][0]["torch"])  # dropout's stream
    # the branch points outlive the newest-two rule; the record holds the extra evaluations
    assert sorted(p.name for p in (root / "trunk").iterdir()) == ["step_00000016", "step_00000024", "step_00000040",
                                                                  "step_00000050"]
    record = read_checkpoint(root / "trunk" / "step_00000024")[1]["trunk"]
    assert sorted(record["evals"]) == [0, 1, 2, 3, 4, 5, 6, 8, 10, 11, 15, 23]
    assert len(record["train_losses"]) == 24


@pytest.mark.parametrize("steps", [20, 30])
def test_a_branch_reports_the_curve_of_its_trial_trained_alone(runs: dict, steps: int) -> None:
    alone, shared = runs["alone"][steps], runs["shared"][steps]
    c = next(c for c in runs["configs"] if c.steps == steps)
    tokens_at_branch = c.decay_start * c.tokens_per_step
    assert _points(shared) == _points(alone)  # every point, before and after the branch
    assert _points(shared, FINAL)[-1] == _points(alone, FINAL)[-1]
    assert shared.metrics[-1]["final/val_loss"] == alone.metrics[-1]["final/val_loss"]  # within 1e-5: exactly
    before = [m for m in shared.metrics if m["tokens"] <= tokens_at_branch]
    assert before and all(m.get(SHARED_KEY) == 1.0 for m in before)
    assert shared.metrics[0][BRANCHED_KEY] == tokens_at_branch and BRANCHED_KEY not in shared.metrics[1]
    after = [(a, b) for a, b in zip(alone.metrics, shared.metrics) if b["tokens"] > tokens_at_branch]
    assert after and all(SHARED_KEY not in b and a["grad_norm"] == b["grad_norm"] for a, b in after)
    root = runs["root"]
    assert _diff(_weights(root / f"branch-{steps}", steps), _weights(root / f"alone-{steps}", steps)) == 0.0


def test_the_lr_of_a_branch_is_its_trunks_until_the_branch_point(runs: dict) -> None:
    trunk, short, mid = runs["configs"]
    for branch in (short, mid):
        shared = range(branch.decay_start)
        assert [lr_at(s, branch) for s in shared] == [lr_at(s, trunk) for s in shared]
        assert lr_at(branch.decay_start, branch) < lr_at(branch.decay_start, trunk)


def test_the_planner_and_the_trainer_agree_on_what_a_branch_may_change() -> None:
    assert BRANCH_FIELDS == _BRANCH_FIELDS


@pytest.mark.parametrize("changes, fields", [({"lr_peak": 2e-3}, "lr_peak"),
                                             ({"unique_tokens": 4096, "seed": 8}, "unique_tokens, seed")])
def test_a_checkpoint_of_another_trial_is_refused(runs: dict, changes: dict, fields: str) -> None:
    trunk, short, _ = runs["configs"]
    other = wsd(20, family=trunk.family, trial_id="other", **changes)
    with pytest.raises(ValueError, match=rf"cannot branch from the checkpoint of trial {trunk.trial_id}: "
                                         rf"fields {fields} differ \("):
        train(other, POOL, VAL, Recorder(), branch_from=str(runs["root"] / "trunk" / "step_00000016"))


def test_a_branch_point_after_the_decay_start_is_refused(runs: dict) -> None:
    _, short, _ = runs["configs"]
    with pytest.raises(ValueError, match=r"learning rates differ at step 16 .* decay_start = 16"):
        train(short, POOL, VAL, Recorder(), branch_from=str(runs["root"] / "trunk" / "step_00000024"))


def test_a_trunk_without_the_branchs_evaluations_is_refused(runs: dict, tmp_path: Path) -> None:
    trunk, short, _ = runs["configs"]
    train(trunk, POOL, VAL, Recorder(), checkpoint_dir=str(tmp_path), keep_steps=frozenset({16}), max_steps=16)
    with pytest.raises(ValueError, match=r"did not evaluate at step\(s\) \[3, 6, 11\] .* extra_eval_steps"):
        train(short, POOL, VAL, Recorder(), branch_from=str(tmp_path / "step_00000016"))
    train(trunk, POOL, VAL, Recorder(), checkpoint_dir=str(tmp_path / "plain"), max_steps=16)
    with pytest.raises(ValueError, match="keeps no trunk record: train the trunk with keep_steps"):
        train(short, POOL, VAL, Recorder(), branch_from=str(tmp_path / "plain" / "step_00000016"))


def test_a_trunk_resumed_at_a_branch_point_goes_on_exactly(runs: dict, tmp_path: Path) -> None:
    # step 16 is no log point of the trunk: its losses since step 15 are carried over the resume
    trunk, short, mid = runs["configs"]
    sharing = dict(extra_eval_steps=_extra(trunk, short, mid), keep_steps=frozenset({16, 24}))
    _train(trunk, tmp_path, max_steps=18, **sharing)
    resumed = _train(trunk, tmp_path, resume_from=str(tmp_path / "step_00000016"), **sharing)
    after = [p for p in runs["shared"][50].reports if p[0]["tokens"] > 16 * trunk.tokens_per_step]
    assert _points(resumed) == [tuple(m.get(k) for k in CURVE) for m, _ in after]
    assert _diff(_weights(tmp_path, 50), _weights(runs["root"] / "alone-50", 50)) == 0.0
    assert not math.isnan(resumed.metrics[-1]["final/val_loss"])


def test_a_branch_keeps_the_best_weights_it_keeps_alone(tmp_path: Path) -> None:
    # validated on its own training tokens, the trial's best evaluation is its last, after the branch point
    seen = POOL[:6 * 32 + 1]
    trunk, short = wsd(50, trial_id="seen-50"), wsd(20, trial_id="seen-20")
    train(trunk, POOL, seen, Recorder(), checkpoint_dir=str(tmp_path / "trunk"), max_steps=16,
          extra_eval_steps=_extra(trunk, short), keep_steps=frozenset({16}))
    for name, kwargs in (("alone", {}), ("branch", {"branch_from": str(tmp_path / "trunk" / "step_00000016")})):
        train(short, POOL, seen, Recorder(), checkpoint_dir=str(tmp_path / name), keep_best=True, **kwargs)
    alone, branch = (read_best(tmp_path / name / "step_00000020") for name in ("alone", "branch"))
    assert alone is not None and branch is not None and alone["step"] == 20
    assert (branch["step"], branch["val_loss"]) == (alone["step"], alone["val_loss"])
    assert _diff(branch["model"], alone["model"]) == 0.0


def test_a_branch_whose_best_evaluation_is_the_trunks_keeps_no_best_weights(runs: dict, tmp_path: Path) -> None:
    # validated on unseen random tokens, the trial is best early: those weights are the trunk's, gone by now
    _, short, _ = runs["configs"]
    alone = [m for m in runs["alone"][20].metrics if "val/loss" in m]
    assert min(alone, key=lambda m: m["val/loss"])["tokens"] < 16 * short.tokens_per_step
    _train(short, tmp_path, keep_best=True, branch_from=str(runs["root"] / "trunk" / "step_00000016"))
    assert read_best(tmp_path / "step_00000020") is None


def test_sharing_arguments_are_checked(tmp_path: Path) -> None:
    c = wsd(20)
    with pytest.raises(ValueError, match="keep_steps needs a checkpoint_dir"):
        train(c, POOL, VAL, Recorder(), keep_steps=frozenset({16}))
    with pytest.raises(ValueError, match=r"keep_steps must lie in 1..20 and extra_eval_steps in 0..20"):
        train(c, POOL, VAL, Recorder(), checkpoint_dir=str(tmp_path), keep_steps=frozenset({0}))
    with pytest.raises(ValueError, match="branch_from starts a branch"):
        train(c, POOL, VAL, Recorder(), resume_from=str(tmp_path), branch_from=str(tmp_path))
