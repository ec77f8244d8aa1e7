"""The worker's reporter: what each trainer report becomes for Tune (metrics, checkpoints and their metadata)."""

from __future__ import annotations

import json
from pathlib import Path

from ray import tune

from sweeper.driver.checkpoints import CHECKPOINT_METADATA
from sweeper.driver.worker import TrialReporter


def reporter_after_first_point(resume_from: str | None, sent: list) -> TrialReporter:
    reporter = TrialReporter(resume_from, tune.Checkpoint, lambda metrics, checkpoint: sent.append((metrics, checkpoint)))
    reporter.first = False  # the first point asks Ray for its node: covered by the end-to-end tests
    return reporter


def test_a_new_checkpoint_goes_to_tune_with_its_step_and_tokens(tmp_path: Path) -> None:
    sent: list = []
    written = tmp_path / "checkpoints" / "step_7"
    written.mkdir(parents=True)
    (written / "state.pt").write_bytes(b"x")
    reporter_after_first_point(None, sent)({"tokens": 896.0, "train/loss": 3.2}, str(written))
    (metrics, checkpoint), = sent
    assert metrics == {"tokens": 896.0, "train/loss": 3.2}
    assert json.loads((written / CHECKPOINT_METADATA).read_text()) == {"step": 7, "tokens": 896}
    assert checkpoint.get_metadata() == {"step": 7, "tokens": 896}


def test_a_trial_resumed_at_its_last_step_reports_its_final_point_without_a_new_checkpoint(tmp_path: Path) -> None:
    # A node lost after the final checkpoint was stored but before the trial ended: the retry
    # restores that checkpoint (a folder named after where it was restored, not step_N) and the
    # trainer reports the final point again with it; it is already stored, so nothing is sent.
    sent: list = []
    restored = tmp_path / "restored"
    restored.mkdir()
    reporter_after_first_point(str(restored), sent)({"tokens": 8064.0, "final/val_loss": 2.6}, str(restored))
    assert sent == [({"tokens": 8064.0, "final/val_loss": 2.6}, None)]


def test_a_finished_trial_returns_cached_cuda_memory(monkeypatch) -> None:
    import torch

    from sweeper.driver.worker import release_device_memory

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    release_device_memory()
    assert calls == ["empty_cache"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    release_device_memory()
    assert calls == ["empty_cache"]  # nothing to release without CUDA
