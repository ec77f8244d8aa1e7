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
from pathlib import Path
from typing import Any

CHECKPOINT_METADATA = ".metadata.json"  # written by Checkpoint.set_metadata
# The trial's curve up to the checkpoint, {"curve": [[tokens, {metric: value}], ...]}, written beside
# its state by sweeper.driver.worker.TrialReporter: one JSON document, so a copy cut short does not parse.
CURVE_FILE = "curve.json"


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


def finished_in_storage(sweep_dir: str, steps: dict[str, int], endpoint: str | None = None) -> dict[str, bool]:
    """Of the trials `steps` names (id -> planned optimizer steps), those whose newest checkpoint in
    storage is whole and at their last step, each with whether it keeps the trial's curve (written
    since checkpoints keep curves). One listing of the sweep's folder, then one per trial found."""
    import pyarrow.fs

    from sweeper.storage import filesystem_for

    filesystem, root = filesystem_for(sweep_dir, endpoint)
    try:
        entries = filesystem.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    except FileNotFoundError:
        return {}
    found = {}
    for entry in entries:
        if entry.type != pyarrow.fs.FileType.Directory or entry.base_name not in steps:
            continue
        _, persisted = _persisted(f"{sweep_dir}/{entry.base_name}", endpoint)
        whole = [path for _, path in persisted if _torn(filesystem, path) is None]
        if not whole:
            continue
        with filesystem.open_input_stream(f"{whole[0]}/{CHECKPOINT_METADATA}") as stream:
            metadata = json.loads(stream.read())
        if int(metadata["step"]) == steps[entry.base_name]:
            found[entry.base_name] = read_curve(filesystem, whole[0]) is not None
    return found


def remove_torn_newest(trial_dir: str, endpoint: str | None = None) -> None:
    """Remove the trial's newest checkpoint folder in storage when it is torn (a copy cut off by a
    full disk): it would never be resumed from, and it holds space. Older ones are left as they are."""
    import pyarrow.fs

    from sweeper.storage import filesystem_for

    filesystem, root = filesystem_for(trial_dir, endpoint)
    try:
        entries = filesystem.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    except (FileNotFoundError, OSError):
        return
    folders = sorted(e.path for e in entries
                     if e.type == pyarrow.fs.FileType.Directory and e.base_name.startswith("checkpoint_"))
    if not folders:
        return
    newest = folders[-1]
    if filesystem.get_file_info(f"{newest}/{CHECKPOINT_METADATA}").type != pyarrow.fs.FileType.File \
            or _torn(filesystem, newest) is not None:
        filesystem.delete_dir(newest)


def write_curve(folder: Path, curve: list[list[Any]]) -> None:
    """The curve into a checkpoint folder that is still local (before it is handed to Tune)."""
    partial = folder / f".{CURVE_FILE}.tmp"
    partial.write_text(json.dumps({"curve": curve}))
    partial.rename(folder / CURVE_FILE)


def read_curve(filesystem: Any, path: str) -> list[list[Any]] | None:
    """The curve a checkpoint in storage keeps, or None where it has none that reads whole."""
    try:
        with filesystem.open_input_stream(f"{path}/{CURVE_FILE}") as stream:
            curve = json.loads(stream.read())["curve"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return curve if isinstance(curve, list) else None
