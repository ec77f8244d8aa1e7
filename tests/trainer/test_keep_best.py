"""keep_best: every checkpoint also keeps the weights of the best planned evaluation so far, so a
downstream evaluation of the best-validation model (evals.at: best) has them however many newer
checkpoints the keep-the-newest-two rule has dropped, and across a resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sweeper.trainer import CheckpointUnreadable, load_model, train
from sweeper.trainer.checkpoint import BEST_FILE, COMPLETE_FILE, checkpoint_problem, read_best

from .helpers import Recorder, random_tokens, tiny_config

# A pool of 2 samples at a high LR: the trial memorises it and its validation loss turns up, so the
# best evaluation is an early one and the final weights are not the best.
POOL = random_tokens(2 * 32 + 1, 64, seed=0)
VAL = random_tokens(6 * 32 + 1, 64, seed=1)
CONFIG = tiny_config(steps=24, eval_steps=(0, 2, 4, 8, 16, 24), checkpoint_every_steps=6, log_every_steps=2,
                     lr_peak=2e-2, lr_min=2e-2, schedule="constant", batch_sequences=8, micro_batch=8,
                     unique_tokens=2 * 32 + 1, tokens=24 * 8 * 32, epochs=24 * 8 * 32 / 65)


def _evals(recorder: Recorder) -> list[tuple[int, float]]:
    return [(int(m["tokens"]), m["val/loss"]) for m in recorder.metrics if "val/loss" in m]


def _val_loss(model: torch.nn.Module) -> float:
    from sweeper.trainer.evaluation import ValidationSet, validation_loss
    from sweeper.trainer.distributed import start, stop

    procs = start("cpu")
    try:
        from contextlib import nullcontext

        losses = validation_loss(lambda *a: _sums(model, *a), model, ValidationSet(VAL, CONFIG.seq_len), CONFIG,
                                 procs, nullcontext)
    finally:
        stop(procs)
    return losses["val/loss"]


def _sums(model: torch.nn.Module, tokens: torch.Tensor, masked, p, order=None) -> torch.Tensor:
    from sweeper.trainer.objectives import family_loss_sums

    return family_loss_sums(model, tokens, masked, p, CONFIG.mask_id)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Recorder]:
    root = tmp_path_factory.mktemp("best")
    recorder = Recorder()
    train(CONFIG, POOL, VAL, recorder, checkpoint_dir=str(root), keep_best=True)
    return root, recorder


def test_the_final_checkpoint_keeps_the_weights_of_the_best_evaluation(trained: tuple[Path, Recorder]) -> None:
    root, recorder = trained
    evals = _evals(recorder)
    best_tokens, best_loss = min(evals, key=lambda e: e[1])
    assert best_tokens < evals[-1][0] and evals[-1][1] > best_loss + 0.1  # the run overfits: best is early
    final = root / "step_00000024"
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("step_")) == ["step_00000018", "step_00000024"]
    assert BEST_FILE in json.loads((final / COMPLETE_FILE).read_text())["files"]
    assert checkpoint_problem(final) is None
    best = read_best(final)
    assert best is not None and best["tokens"] == best_tokens and best["val_loss"] == pytest.approx(best_loss)
    model, _ = load_model(final, weights="best")
    assert _val_loss(model) == pytest.approx(best_loss, abs=1e-5)  # the weights are the best evaluation's
    last, _ = load_model(final)
    assert _val_loss(last) == pytest.approx(evals[-1][1], abs=1e-5)


def test_a_resumed_trial_keeps_the_best_from_before_its_resume(trained: tuple[Path, Recorder], tmp_path: Path) -> None:
    root, recorder = trained
    cut = tmp_path / "cut"
    train(CONFIG, POOL, VAL, Recorder(), checkpoint_dir=str(cut), keep_best=True, max_steps=12)
    resumed = Recorder()
    train(CONFIG, POOL, VAL, resumed, checkpoint_dir=str(cut), keep_best=True,
          resume_from=str(cut / "step_00000012"))
    whole, again = read_best(root / "step_00000024"), read_best(cut / "step_00000024")
    assert whole is not None and again is not None
    assert (again["step"], again["tokens"]) == (whole["step"], whole["tokens"])
    assert all(torch.equal(whole["model"][k], again["model"][k]) for k in whole["model"])


def test_a_checkpoint_without_best_weights_says_so(tmp_path: Path) -> None:
    train(CONFIG, POOL, VAL, Recorder(), checkpoint_dir=str(tmp_path), max_steps=6)
    assert read_best(tmp_path / "step_00000006") is None
    with pytest.raises(CheckpointUnreadable, match="keeps no best-validation weights"):
        load_model(tmp_path / "step_00000006", weights="best")


def test_a_damaged_best_file_makes_the_checkpoint_torn(trained: tuple[Path, Recorder], tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "step_00000024"
    shutil.copytree(trained[0] / "step_00000024", copy)
    (copy / BEST_FILE).write_bytes((copy / BEST_FILE).read_bytes()[:100])
    assert checkpoint_problem(copy) is not None and BEST_FILE in checkpoint_problem(copy)
