"""A tiny model of each family, trained for a few hundred steps on tests/specs/smoke.yaml's synthetic
source (the trainer itself, no Ray), picks the true next four symbols among four far above chance
(0.25) on the offline task tests/evals/tasks/symbols_next.yaml; the time per eval is printed."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from sweeper.data.synthetic import documents
from sweeper.evals.stage import evaluate_task, quiet, task_manager
from sweeper.spec import load_spec
from sweeper.trainer import latest_checkpoint, load_model, train

from .helpers import REPO, TASKS, config, lm, symbols

pytestmark = pytest.mark.slow
STEPS = 200


def packed(stream: int, tokens: int) -> np.ndarray:
    source = load_spec(REPO / "tests" / "specs" / "smoke.yaml").data.train
    docs = next(documents(source, stream))
    flat, _ = symbols().encode_packed(list(docs))
    return flat[:tokens].astype(np.uint16)


@pytest.mark.parametrize("family", ["ar", "mdm"])
def test_a_trained_tiny_model_beats_chance(tmp_path: Path, offline, family: str) -> None:
    c = config(family=family, seq_len=16, steps=STEPS, warmup_steps=20, eval_steps=(0, STEPS), batch_sequences=16,
               micro_batch=16, log_every_steps=100, mdm_eval_samples=2, checkpoint_every_steps=STEPS,
               lr_peak=3e-3)
    train(c, packed(0, 60_000), packed(1, 16 * 17 + 1), lambda metrics, checkpoint: None,
          checkpoint_dir=str(tmp_path))
    model, trained = load_model(latest_checkpoint(str(tmp_path)))
    quiet()
    manager = task_manager([str(TASKS)], ["symbols_next"])
    started = time.monotonic()
    metrics = evaluate_task(lm(trained, symbols(), model, mc_samples=32), "symbols_next", manager, num_fewshot=0,
                            limit=100)
    print(f"{family}: symbols_next, 100 questions x 4 choices, {time.monotonic() - started:.1f} s, {metrics}")
    assert metrics["eval/symbols_next/acc"] > 0.6
