"""A trial's scratch folder: removed when its process ends, and, when a kill skipped that, by the
trial's next process on the machine; never another trial's, another rank's or a live process's.
Real processes killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sweeper.driver.scratch import OWNER_FILE, remove_abandoned, trial_scratch

HOLD = """
import sys, time
from sweeper.driver.scratch import trial_scratch
rank = None if sys.argv[2] == "-" else int(sys.argv[2])
with trial_scratch(sys.argv[1], rank) as folder:
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "model.pt").write_bytes(b"x" * 4096)
    print(folder, flush=True)
    time.sleep(600)
"""


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def hold(root: Path, trial_id: str, rank: int | None = None) -> tuple[subprocess.Popen, Path]:
    """A process inside `trial_scratch`, and its folder."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, trial_id, "-" if rank is None else str(rank)],
                               stdout=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(root)})
    folder = Path(process.stdout.readline().strip())
    assert folder.parent == root and (folder / OWNER_FILE).is_file()
    return process, folder


def killed(root: Path, trial_id: str, rank: int | None = None) -> Path:
    process, folder = hold(root, trial_id, rank)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert folder.is_dir()  # the kill skipped the cleanup
    return folder


def test_the_folder_is_removed_when_the_block_ends_even_by_an_error(root: Path) -> None:
    with pytest.raises(RuntimeError), trial_scratch("abc123") as folder:
        assert folder.is_dir() and folder.name.startswith("sweeper-abc123-")
        raise RuntimeError("training failed")
    assert not folder.exists() and not list(root.iterdir())


def test_the_next_process_of_a_trial_removes_what_a_killed_one_left(root: Path) -> None:
    left = [killed(root, "abc123"), killed(root, "abc123")]
    with trial_scratch("abc123") as folder:
        assert not any(f.exists() for f in left)
        assert [p.name for p in root.iterdir()] == [folder.name]
    assert not list(root.iterdir())


def test_a_live_process_other_trials_other_ranks_and_unlocked_folders_are_kept(root: Path) -> None:
    live, live_folder = hold(root, "abc123")
    try:
        other_trial = killed(root, "abc1234")  # its prefix extends this trial's
        other_rank = killed(root, "abc123", rank=1)
        unlocked = Path(tempfile.mkdtemp(prefix="sweeper-abc123-"))  # made before the lock existed
        assert remove_abandoned("abc123") == []
        assert all(f.is_dir() for f in (live_folder, other_trial, other_rank, unlocked))
        mine = killed(root, "abc123", rank=0)
        assert remove_abandoned("abc123", rank=0) == [mine] and other_rank.is_dir()
        assert remove_abandoned("abc123", rank=1) == [other_rank]
        assert remove_abandoned("abc1234") == [other_trial]
    finally:
        live.kill()
        live.wait()
    assert remove_abandoned("abc123") == [live_folder] and unlocked.is_dir()
