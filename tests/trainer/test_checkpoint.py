"""A torn or damaged checkpoint is never taken for whole: its completion marker, written last, lists
every file's size and SHA-256, and reading a checkpoint checks them."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from sweeper.trainer import CheckpointUnreadable, latest_checkpoint, load_model, train
from sweeper.trainer.checkpoint import COMPLETE_FILE, STATE_FILE, checkpoint_problem, read_checkpoint

from .helpers import Recorder, random_tokens, tiny_config

POOL = random_tokens(40 * 32 + 1, 64, seed=0)
VAL = random_tokens(6 * 32 + 1, 64, seed=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Checkpoints at steps 6, 12 and 16 of a 16-step trial (all kept), and its curve."""
    root = tmp_path_factory.mktemp("checkpoints")
    full = Recorder()
    train(tiny_config(checkpoint_every_steps=6), POOL, VAL, full, checkpoint_dir=str(root), keep_checkpoints=3)
    (root / "curve.json").write_text(json.dumps(full.curve()))
    return root


@pytest.fixture
def root(trained: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "checkpoints"
    shutil.copytree(trained, copy)
    return copy


def test_the_marker_lists_every_file_and_is_written_last(root: Path) -> None:
    newest = root / "step_00000016"
    files = json.loads((newest / COMPLETE_FILE).read_text())["files"]
    assert sorted(files) == ["config.json", "state.pt"]
    assert files[STATE_FILE]["bytes"] == (newest / STATE_FILE).stat().st_size
    assert checkpoint_problem(newest) is None
    assert (newest / COMPLETE_FILE).stat().st_mtime_ns >= (newest / STATE_FILE).stat().st_mtime_ns


@pytest.mark.parametrize("damage, problem", [
    (lambda d: (d / STATE_FILE).write_bytes((d / STATE_FILE).read_bytes()[:1000]),
     r"has a state.pt of 1,000 bytes, not the [\d,]+ its complete.json records"),
    (lambda d: (d / COMPLETE_FILE).unlink(),
     r"has no complete.json \(it was cut off while being written or copied, or an older sweeper wrote it\)"),
    (lambda d: (d / STATE_FILE).write_bytes(bytes(b ^ 0xFF for b in (d / STATE_FILE).read_bytes())),
     r"has a state.pt that does not match the SHA-256 its complete.json records"),
    (lambda d: (d / "config.json").unlink(), r"lacks config.json"),
])
def test_a_damaged_newest_checkpoint_is_refused_and_the_one_before_it_resumes(root: Path, damage, problem: str) -> None:
    newest = root / "step_00000016"
    damage(newest)
    with pytest.raises(CheckpointUnreadable, match=rf"^the checkpoint {re.escape(str(newest))} {problem}$") as error:
        read_checkpoint(newest)
    assert error.value.path == str(newest)
    fallback = latest_checkpoint(root)
    if "SHA-256" in problem:  # sizes alone cannot tell: reading it does
        assert fallback == str(newest)
        return
    assert fallback == str(root / "step_00000012")
    resumed = Recorder()
    train(tiny_config(checkpoint_every_steps=6), POOL, VAL, resumed, resume_from=fallback)
    assert list(resumed.curve()[-1]) == json.loads((root / "curve.json").read_text())[-1]  # exactly the same end


def test_sampling_still_reads_a_checkpoint_from_before_markers(root: Path) -> None:
    (root / "step_00000016" / COMPLETE_FILE).unlink()
    model, config = load_model(root / "step_00000016")
    assert config.trial_id == tiny_config().trial_id
    with pytest.raises(CheckpointUnreadable, match="has no complete.json"):
        read_checkpoint(root / "step_00000016")  # but resuming does not take it
    (root / "step_00000012" / STATE_FILE).write_bytes(b"torn")
    (root / "step_00000012" / COMPLETE_FILE).unlink()
    with pytest.raises(CheckpointUnreadable, match=r"step_00000012 does not load \("):
        load_model(root / "step_00000012")


def test_elapsed_time_checkpoints_land_on_log_points_and_leave_the_curve_alone(tmp_path: Path) -> None:
    """A cadence planned from a too-low time estimate (here: only at the end) is backed by elapsed
    time: with checkpoint_every_s passed at every log point, each log point gets a checkpoint, and
    the curve is the one an untimed run records."""
    planned_only, timed = Recorder(), Recorder()
    config = tiny_config(checkpoint_every_steps=16)
    train(config, POOL, VAL, planned_only, checkpoint_dir=str(tmp_path / "planned"), keep_checkpoints=10)
    train(tiny_config(checkpoint_every_steps=16, checkpoint_every_s=1e-9), POOL, VAL, timed,
          checkpoint_dir=str(tmp_path / "timed"), keep_checkpoints=10)
    assert sorted(p.name for p in (tmp_path / "planned").glob("step_*")) == ["step_00000016"]
    assert sorted(p.name for p in (tmp_path / "timed").glob("step_*")) == \
        [f"step_{s:08d}" for s in (4, 8, 12, 16)]  # the log points (log_every_steps 4)
    assert timed.curve() == planned_only.curve()
    assert [bool(written) for _, written in timed.reports] == [False, True, True, True, True]
