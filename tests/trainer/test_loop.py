"""train(): the curve it reports, exact epochs, stop/resume, failures, checkpoints."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from sweeper.trainer import METRICS, NonFiniteLoss, TrialOutOfMemory, latest_checkpoint, train
from sweeper.trainer.checkpoint import read_checkpoint

from .helpers import Recorder, random_tokens, tiny_config

POOL = random_tokens(40 * 32 + 1, 64, seed=0)  # 40 samples of 32 + 1 tokens
VAL = random_tokens(6 * 32 + 1, 64, seed=1)
STEP_TOKENS = 16 * 32


def steps_of(recorder: Recorder) -> list[int]:
    return [int(m["tokens"]) // STEP_TOKENS for m in recorder.metrics]


@pytest.mark.parametrize("family", ["ar", "mdm"])
def test_curve_starts_untrained_follows_eval_steps_and_ends_with_final(family: str, tmp_path: Path) -> None:
    config = tiny_config(family=family, peak_flops=1e12)
    rec = Recorder()
    result = train(config, POOL, VAL, rec, checkpoint_dir=str(tmp_path))

    assert steps_of(rec) == [0, 4, 8, 12, 16]  # log every 4; evaluations at 0, 8, 16
    assert [s for s, m in zip(steps_of(rec), rec.metrics) if "val/loss" in m] == [0, 8, 16]
    assert "train/loss" not in rec.metrics[0]
    assert [Path(d).name for _, d in rec.reports if d] == ["step_00000008", "step_00000016"]
    for m in rec.metrics:
        assert set(m) <= set(METRICS)
        assert m["flops"] == 6 * config.num_params * m["tokens"]
        assert m["epoch"] == m["tokens"] / 32 / 40
        assert all(math.isfinite(v) for v in m.values())
    assert all({"train/loss", "lr", "grad_norm", "tokens_per_s", "mfu"} <= set(m) for m in rec.metrics[1:])
    last = rec.metrics[-1]
    assert last["final/val_loss"] == last["val/loss"] == result.final_val_loss
    assert last["final/val_loss_best"] == min(m["val/loss"] for m in rec.metrics if "val/loss" in m)
    assert last["num_params_actual"] == result.num_params_actual > 0
    assert last["final/wall_s"] > 0 and last["final/tokens_per_s"] > 0
    assert result.completed and result.steps_done == 16 and result.tokens == 16 * STEP_TOKENS
    assert last["final/tokens_trained"] == config.tokens_trained == 16 * STEP_TOKENS
    assert last["final/epochs_trained"] == config.epochs_trained == 16 * STEP_TOKENS / config.unique_tokens


def test_no_mfu_without_a_declared_peak() -> None:
    rec = Recorder()
    train(tiny_config(steps=4, eval_steps=(0, 4)), POOL, VAL, rec)
    assert not any("mfu" in m for m in rec.metrics)


def test_max_steps_cuts_the_run_as_an_exact_prefix_with_a_final_evaluation() -> None:
    full, cut = Recorder(), Recorder()
    train(tiny_config(), POOL, VAL, full)
    result = train(tiny_config(), POOL, VAL, cut, max_steps=6)
    assert steps_of(cut) == [0, 4, 6]
    assert "val/loss" in cut.metrics[-1] and "final/val_loss" in cut.metrics[-1]
    assert not result.completed and result.steps_done == 6
    assert cut.curve()[:2] == full.curve()[:2]  # the schedule spans the planned steps, not max_steps


def test_epoch_accounting_is_exact() -> None:
    # 16 steps x 16 sequences = 256 samples of a 40-sample pool: 6.4 epochs, the last one partial
    rec = Recorder()
    result = train(tiny_config(), POOL, VAL, rec)
    assert rec.metrics[-1]["epoch"] == 6.4
    assert result.tokens == 16 * 16 * 32


def test_a_tiny_model_overfits_a_tiny_set() -> None:
    pool = random_tokens(8 * 32 + 1, 64, seed=5)  # 8 samples: one batch is the whole pool
    config = tiny_config(steps=150, warmup_steps=10, eval_steps=(0, 150), lr_peak=1e-2, lr_min=1e-3,
                         batch_sequences=8, micro_batch=8, log_every_steps=50, weight_decay=0.0)
    rec = Recorder()
    result = train(config, pool, pool, rec)
    assert rec.metrics[0]["val/loss"] == pytest.approx(math.log(64), abs=0.05)
    assert result.final_val_loss < 0.05  # memorised: ln 64 = 4.16 nats at the start


def test_non_finite_loss_is_terminal_and_names_the_step(tmp_path: Path) -> None:
    config = tiny_config(lr_peak=1e6, lr_min=0.0, grad_clip=None, checkpoint_every_steps=2)
    rec = Recorder()
    with pytest.raises(NonFiniteLoss) as error:
        train(config, POOL, VAL, rec, checkpoint_dir=str(tmp_path))
    failure = error.value
    assert failure.retryable is False
    assert failure.step == 4 and failure.tokens == 4 * STEP_TOKENS and not math.isfinite(failure.value)
    assert "optimizer step 4" in str(failure) and "lower lr_peak" in str(failure)
    assert latest_checkpoint(tmp_path) == str(tmp_path / "step_00000002")  # nothing after the NaN
    assert all(math.isfinite(v) for m in rec.metrics for v in m.values())


def test_out_of_memory_failure_names_the_micro_batch_to_lower() -> None:
    failure = TrialOutOfMemory(16, "cuda:0", "CUDA out of memory. Tried to allocate 2.00 GiB")
    assert failure.retryable is False
    assert "micro_batch=16" in str(failure) and "e.g. 8" in str(failure)


@pytest.mark.parametrize("family", ["ar", "mdm"])
def test_stop_and_resume_reproduces_the_uninterrupted_curve_bit_for_bit(family: str, tmp_path: Path) -> None:
    config = tiny_config(family=family, dropout=0.1, checkpoint_every_steps=6)
    full, first, second = Recorder(), Recorder(), Recorder()
    train(config, POOL, VAL, full, checkpoint_dir=str(tmp_path / "full"))
    train(config, POOL, VAL, first, checkpoint_dir=str(tmp_path / "cut"), max_steps=6)
    checkpoint = latest_checkpoint(tmp_path / "cut")
    assert checkpoint is not None and checkpoint.endswith("step_00000006")
    result = train(config, POOL, VAL, second, checkpoint_dir=str(tmp_path / "cut"), resume_from=checkpoint)
    # points at steps 0, 4, 6 (checkpoint), 8, 12, 16; the cut run ends at 6 with an extra evaluation
    assert steps_of(full) == [0, 4, 6, 8, 12, 16] and steps_of(second) == [8, 12, 16]
    assert first.curve()[:2] + second.curve() == full.curve()[:2] + full.curve()[3:]
    train_keys = ("tokens", "train/loss", "lr", "grad_norm", "epoch")
    assert first.curve(*train_keys)[2] == full.curve(*train_keys)[2]
    assert second.metrics[-1]["final/val_loss"] == full.metrics[-1]["final/val_loss"]
    assert result.completed


def test_resuming_a_finished_trial_reports_its_final_metrics_again(tmp_path: Path) -> None:
    config = tiny_config()
    done, again = Recorder(), Recorder()
    train(config, POOL, VAL, done, checkpoint_dir=str(tmp_path))
    result = train(config, POOL, VAL, again, checkpoint_dir=str(tmp_path),
                   resume_from=latest_checkpoint(tmp_path))
    assert len(again.reports) == 1
    assert again.metrics[0]["final/val_loss"] == done.metrics[-1]["final/val_loss"]
    assert result.completed and result.steps_done == 16


def test_resume_refuses_a_checkpoint_of_another_trial(tmp_path: Path) -> None:
    train(tiny_config(), POOL, VAL, Recorder(), checkpoint_dir=str(tmp_path), max_steps=8)
    with pytest.raises(ValueError, match="fields seed differ"):
        train(tiny_config(seed=8), POOL, VAL, Recorder(), resume_from=latest_checkpoint(tmp_path))
    # how-fields may change: a different micro-batch resumes fine
    train(tiny_config(micro_batch=4), POOL, VAL, Recorder(), resume_from=latest_checkpoint(tmp_path))


def test_resume_refuses_another_precision(tmp_path: Path) -> None:
    # precision is in the trial id: a curve continued in another precision is another experiment
    train(tiny_config(), POOL, VAL, Recorder(), checkpoint_dir=str(tmp_path), max_steps=2)
    with pytest.raises(ValueError, match="fields precision differ"):
        train(tiny_config(precision="bf16"), POOL, VAL, Recorder(), resume_from=latest_checkpoint(tmp_path))


def test_gradient_accumulation_matches_one_big_micro_batch() -> None:
    one, two = Recorder(), Recorder()
    train(tiny_config(micro_batch=16), POOL, VAL, one)
    train(tiny_config(micro_batch=8), POOL, VAL, two)
    a, b = np.array(one.curve("train/loss", "val/loss")[1:], dtype=float), \
        np.array(two.curve("train/loss", "val/loss")[1:], dtype=float)
    assert np.allclose(np.nan_to_num(a), np.nan_to_num(b), rtol=1e-4)


def test_checkpoints_hold_the_whole_state_and_old_ones_are_pruned(tmp_path: Path) -> None:
    config = tiny_config(checkpoint_every_steps=2)
    train(config, POOL, VAL, Recorder(), checkpoint_dir=str(tmp_path), keep_checkpoints=2)
    assert sorted(os.listdir(tmp_path)) == ["step_00000014", "step_00000016"]  # no temporaries left
    saved, state = read_checkpoint(tmp_path / "step_00000016")
    assert saved == config
    assert set(state) == {"model", "optimizer", "loop", "rng"}
    assert state["loop"]["step"] == 16
    assert set(state["rng"][0]) == {"torch", "cuda", "numpy", "python"}
    assert "embed.weight" in state["model"]
