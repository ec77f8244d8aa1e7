"""The worker's reporter: what each trainer report becomes for Tune (metrics, checkpoints and their metadata)."""

from __future__ import annotations

import json
from pathlib import Path

from ray import tune

from sweeper.driver.checkpoints import CHECKPOINT_METADATA, CURVE_FILE
from sweeper.driver.worker import CURVE_KEY, RESUMED_KEY, TrialReporter, kept_curve


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
    # beside it, the curve up to it, with it
    assert json.loads((written / CURVE_FILE).read_text()) == {"curve": [[896, {"train/loss": 3.2}]]}


def test_every_checkpoint_keeps_the_whole_curve_and_a_resume_hands_it_to_the_driver(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    import ray

    monkeypatch.setattr(ray, "get_runtime_context", lambda: type("Context", (), {"get_node_id": lambda self: "n"})())
    sent: list = []
    reporter = TrialReporter(None, tune.Checkpoint, lambda metrics, checkpoint: sent.append((metrics, checkpoint)))
    points = [{"tokens": 0.0, "val/loss": 4.2}, {"tokens": 128.0, "train/loss": 4.0},
              {"tokens": 256.0, "train/loss": 3.9, "val/loss": 3.8}]
    for i, point in enumerate(points):
        written = None
        if i == 2:
            written = tmp_path / "step_00000002"
            written.mkdir()
        reporter(point, str(written) if written else None)
    curve = kept_curve(sent[-1][1])
    assert curve == [[0, {"val/loss": 4.2}], [128, {"train/loss": 4.0}], [256, {"train/loss": 3.9, "val/loss": 3.8}]]

    resumed: list = []
    again = TrialReporter(str(tmp_path / "restored"), tune.Checkpoint,
                          lambda metrics, checkpoint: resumed.append(metrics), curve=curve)
    again({"tokens": 384.0, "train/loss": 3.7}, None)
    assert resumed[0][CURVE_KEY] == curve and resumed[0][RESUMED_KEY] == 384.0
    again({"tokens": 512.0, "train/loss": 3.6}, None)
    assert CURVE_KEY not in resumed[1]
    assert again.curve == [*curve, [384, {"train/loss": 3.7}], [512, {"train/loss": 3.6}]]


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
