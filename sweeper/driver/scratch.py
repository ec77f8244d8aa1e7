"""A trial process's scratch folder, and the folders its killed predecessors left behind.

A trial worker stages checkpoints in a local folder (`{tmp}/sweeper-{trial id}-…`, or
`…-rank{r}-…` for one process of a trial over several devices) and removes it when it ends. A
process killed outright (SIGKILL, the OOM killer, a lost node that comes back) skips that, and its
folder, as large as a few checkpoints, would stay until the machine's /tmp is cleaned. So each
folder holds an exclusive `flock` on its `.owner` file for as long as its process (or a child that
inherited the descriptor) lives; the kernel releases it when they die, however they die. When the
same trial, and rank, starts again on that machine, the folders of its earlier processes whose lock
can be taken are removed first. Other trials' folders, another rank's, and a live process's are
never touched; folders made before this lock existed have no `.owner` and are left as they are.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

OWNER_FILE = ".owner"


def prefix_of(trial_id: str, rank: int | None = None) -> str:
    """The folder name's prefix for a trial (and one rank of it); tempfile adds a random suffix
    of letters, digits and underscores, never a dash, which keeps one prefix from matching
    another's folders (`sweeper-ab12-` against `sweeper-ab12-rank0-x1y2`)."""
    return f"sweeper-{trial_id}-" if rank is None else f"sweeper-{trial_id}-rank{rank}-"


def _abandoned(folder: Path) -> bool:
    """Whether a scratch folder's process is gone: its `.owner` lock can be taken."""
    try:
        with open(folder / OWNER_FILE, "rb") as owner:
            try:
                fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True
    except OSError:  # no .owner (an older version's folder, or one not yet locked), or unreadable
        return False


def remove_abandoned(trial_id: str, rank: int | None = None, root: Path | None = None) -> list[Path]:
    """Remove the scratch folders that earlier, now dead, processes of this trial (and rank) left
    in `root` (the system's temporary folder by default); returns them."""
    root = Path(tempfile.gettempdir()) if root is None else root
    prefix = prefix_of(trial_id, rank)
    removed = []
    for folder in sorted(root.glob(f"{prefix}*")):
        if "-" in folder.name[len(prefix):] or not folder.is_dir() or not _abandoned(folder):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


@contextmanager
def trial_scratch(trial_id: str, rank: int | None = None) -> Iterator[Path]:
    """A new scratch folder for this process of a trial, locked while it lives and removed when the
    block ends; the trial's abandoned folders on this machine are removed on the way in.

    Raises:
        OSError: the temporary folder is not writable.
    """
    remove_abandoned(trial_id, rank)
    folder = Path(tempfile.mkdtemp(prefix=prefix_of(trial_id, rank)))
    owner = open(folder / OWNER_FILE, "wb")
    try:
        fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        owner.close()
