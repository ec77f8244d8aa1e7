"""A trial under Ray resumes from its newest checkpoint in storage that is whole and loads: a torn one
(its completion marker missing or not matching) is passed over by a listing, a damaged one (right
sizes, wrong bytes) when it fails to load; the first result names each, with where the trial goes on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import ray
from ray import tune

from sweeper.driver.worker import RESUMED_KEY, WARNING_KEY, train_from_newest_whole
from sweeper.trainer import train

from trainer.helpers import Recorder, random_tokens, tiny_config

POOL = random_tokens(40 * 32 + 1, 64, seed=0)
VAL = random_tokens(6 * 32 + 1, 64, seed=1)
CONFIG = tiny_config(checkpoint_every_steps=6)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """The trainer's checkpoints at steps 6 and 12 of a 16-step trial, and its uninterrupted curve."""
    root = tmp_path_factory.mktemp("written")
    full = Recorder()
    train(CONFIG, POOL, VAL, full, checkpoint_dir=str(root), max_steps=12, keep_checkpoints=2)
    whole = Recorder()  # checkpointing too: a checkpoint is a log point, which the curve shows
    train(CONFIG, POOL, VAL, whole, checkpoint_dir=str(tmp_path_factory.mktemp("whole")))
    return root, whole.curve()


def persist(written: Path, trial_dir: Path) -> dict[int, Path]:
    """The checkpoints as Tune keeps them in storage: checkpoint_NNNNNN with a step/tokens metadata file."""
    found = {}
    for i, step in enumerate((6, 12)):
        folder = trial_dir / f"checkpoint_{i:06d}"
        shutil.copytree(written / f"step_{step:08d}", folder)
        (folder / ".metadata.json").write_text(json.dumps({"step": step, "tokens": step * 16 * 32}))
        found[step] = folder
    return found


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    sent: list[dict] = []
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: sent.append(dict(metrics)))

    class Context:
        def get_node_id(self) -> str:
            return "node-1"

    monkeypatch.setattr(ray, "get_runtime_context", lambda: Context())
    return sent


@pytest.mark.parametrize("damage, problem", [
    (lambda state: state.write_bytes(state.read_bytes()[:500]),
     "has a state.pt of 500 bytes, not the {size:,} its complete.json records"),
    (lambda state: state.write_bytes(bytes(b ^ 0x55 for b in state.read_bytes())),
     "has a state.pt that does not match the SHA-256 its complete.json records"),
])
def test_the_newest_checkpoint_is_passed_over_for_the_one_before(written, reports, tmp_path: Path, damage,
                                                               problem: str) -> None:
    root, curve = written
    persisted = persist(root, tmp_path / "trial")
    state = persisted[12] / "state.pt"
    size = state.stat().st_size
    damage(state)
    payload = {"trial_dir": str(tmp_path / "trial"), "storage_endpoint": None}
    failure, checkpoint = train_from_newest_whole(CONFIG, POOL, VAL, payload, tmp_path / "scratch")
    assert failure is None and checkpoint is not None and checkpoint.endswith("step_00000016")
    first = reports[0]
    assert first[WARNING_KEY] == (f"the checkpoint {persisted[12]} {problem.format(size=size)}: "
                                  f"resuming from {persisted[6]}")
    assert first[RESUMED_KEY] == 8 * 16 * 32  # the first point after step 6
    resumed = Recorder()
    resumed.reports = [(m, None) for m in reports]
    assert resumed.curve() == curve[-len(reports):]  # exactly the uninterrupted run's points from there


def test_with_no_whole_checkpoint_the_trial_trains_from_step_zero(written, reports, tmp_path: Path) -> None:
    root, curve = written
    persisted = persist(root, tmp_path / "trial")
    for folder in persisted.values():
        (folder / "complete.json").unlink()
    payload = {"trial_dir": str(tmp_path / "trial"), "storage_endpoint": None}
    failure, checkpoint = train_from_newest_whole(CONFIG, POOL, VAL, payload, tmp_path / "scratch")
    assert failure is None and checkpoint is not None and checkpoint.endswith("step_00000016")
    reason = "has no complete.json (it was cut off while being written or copied, or an older sweeper wrote it)"
    assert reports[0][WARNING_KEY] == (f"the checkpoint {persisted[12]} {reason}; the checkpoint {persisted[6]} "
                                       f"{reason}: training from step 0")
    assert RESUMED_KEY not in reports[0] and reports[0]["tokens"] == 0
    resumed = Recorder()
    resumed.reports = [(m, None) for m in reports]
    assert resumed.curve() == curve
