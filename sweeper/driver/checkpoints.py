"""A trial's checkpoints in storage: which may resume it, newest first, and which are torn.

Ray Tune persists each checkpoint the trainer writes (a step_* folder with its completion marker,
sweeper.trainer.checkpoint) as `{trial folder}/checkpoint_NNNNNN/`, copying it file by file, and
adds a small metadata file with its step and tokens (sweeper.driver.worker.TrialReporter). A copy cut
off by a crash, a lost node or a full disk has no marker, or files of other sizes than the marker
records: such a checkpoint is never taken for whole. Checking sizes here costs one listing; the
checksums are checked when the trainer reads the state.
"""

from __future__ import annotations

import json
from typing import Any

CHECKPOINT_METADATA = ".metadata.json"  # written by Checkpoint.set_metadata


def resume_candidates(trial_dir: str, endpoint: str | None = None) -> tuple[list[Any], list[str]]:
    """The trial's checkpoints in storage that may resume it, newest first, and one line for each that
    is torn: its completion marker missing (cut off while being copied to storage, or written before
    markers existed) or a file of another size than the marker records."""
    from ray import tune

    filesystem, found = _persisted(trial_dir, endpoint)
    candidates, passed_over = [], []
    for _, path in found:
        problem = _torn(filesystem, path)
        if problem is None:
            candidates.append(tune.Checkpoint(path=path, filesystem=filesystem))
        else:
            passed_over.append(f"the checkpoint {shown_path(trial_dir, path)} {problem}")
    return candidates, passed_over


def latest_persisted(trial_dir: str, endpoint: str | None = None) -> Any:
    """The newest checkpoint under the trial's folder in storage that is whole, or that has no
    completion marker at all (written before markers existed; loading it tells), or None."""
    from ray import tune

    from sweeper.trainer.checkpoint import COMPLETE_FILE

    filesystem, found = _persisted(trial_dir, endpoint)
    for _, path in found:
        problem = _torn(filesystem, path)
        if problem is None or COMPLETE_FILE in problem:
            return tune.Checkpoint(path=path, filesystem=filesystem)
    return None


def _persisted(trial_dir: str, endpoint: str | None) -> tuple[Any, list[tuple[int, str]]]:
    """(filesystem, [(step, path)] of the trial's checkpoints in storage, highest step first)."""
    import pyarrow.fs

    from sweeper.storage import filesystem_for

    filesystem, root = filesystem_for(trial_dir, endpoint)
    try:
        entries = filesystem.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    except FileNotFoundError:
        return filesystem, []
    found = []
    for entry in entries:
        if entry.type != pyarrow.fs.FileType.Directory or not entry.base_name.startswith("checkpoint_"):
            continue
        try:
            with filesystem.open_input_stream(f"{entry.path}/{CHECKPOINT_METADATA}") as stream:
                found.append((int(json.loads(stream.read())["step"]), entry.path))
        except (OSError, ValueError, KeyError):
            continue  # a checkpoint still being written, or not one of ours
    return filesystem, sorted(found, reverse=True)


def _torn(filesystem: Any, path: str) -> str | None:
    """What the checkpoint in storage lacks against its completion marker (sizes only: its checksums
    are checked when it is read), or None."""
    import pyarrow.fs

    from sweeper.trainer.checkpoint import COMPLETE_FILE

    try:
        with filesystem.open_input_stream(f"{path}/{COMPLETE_FILE}") as stream:
            files = json.loads(stream.read())["files"]
        infos = filesystem.get_file_info([f"{path}/{name}" for name in files])
    except FileNotFoundError:
        return f"has no {COMPLETE_FILE} (it was cut off while being written or copied, or an older sweeper wrote it)"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"has an unreadable {COMPLETE_FILE}"
    for (name, record), info in zip(files.items(), infos):
        if info.type != pyarrow.fs.FileType.File:
            return f"lacks {name}"
        if info.size != record["bytes"]:
            return f"has a {name} of {info.size:,} bytes, not the {record['bytes']:,} its {COMPLETE_FILE} records"
    return None


def shown_path(trial_dir: str, path: str) -> str:
    """A checkpoint's path (as pyarrow names it) as the user knows the storage: s3:// keeps its scheme."""
    return f"s3://{path}" if trial_dir.startswith("s3://") else path
