"""The sweep's storage: where it is (a local folder, AWS S3, or an S3-compatible store at the
profile's `endpoint`), how it is laid out (one folder per experiment, one per trial), and how
Ray Tune and pyarrow read and write it.

Tune persists checkpoints and its own state through a pyarrow filesystem. For a folder or plain
AWS S3, the URI alone says which; an S3-compatible store (MinIO, SeaweedFS, ...) needs the
endpoint, so every reader and writer of the storage builds its filesystem here. Credentials come
from the AWS SDK's usual chain (environment, ~/.aws, instance role), never from a file of ours.
"""

from __future__ import annotations

import os
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


def filesystem_for(uri: str, endpoint: str | None = None) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it) for a storage URI: `s3://bucket/prefix` or a folder."""
    import pyarrow.fs

    if not uri.startswith("s3://"):
        return pyarrow.fs.FileSystem.from_uri(uri if "://" in uri else os.path.abspath(uri))
    path = uri.removeprefix("s3://").rstrip("/")
    if not endpoint:
        return pyarrow.fs.S3FileSystem(region=_region(None)), path
    parsed = urlparse(endpoint)
    return pyarrow.fs.S3FileSystem(endpoint_override=parsed.netloc or parsed.path, scheme=parsed.scheme or "https",
                                   region=_region(endpoint), connect_timeout=5, request_timeout=30), path


def _region(endpoint: str | None) -> str:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        return region
    return "us-east-1"  # S3-compatible stores ignore it; AWS resolves buckets in other regions itself


def write_text(uri: str, endpoint: str | None, text: str) -> None:
    filesystem, path = filesystem_for(uri, endpoint)
    parent = path.rsplit("/", 1)[0]
    filesystem.create_dir(parent, recursive=True)
    with filesystem.open_output_stream(path) as stream:
        stream.write(text.encode())


def read_text(uri: str, endpoint: str | None) -> str | None:
    """The file's text, or None where there is no such file."""
    filesystem, path = filesystem_for(uri, endpoint)
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read().decode()
    except FileNotFoundError:
        return None
    except OSError as error:
        if "not exist" in str(error) or "NoSuchKey" in str(error) or "404" in str(error):
            return None
        raise


def delete(uri: str, endpoint: str | None) -> None:
    filesystem, path = filesystem_for(uri, endpoint)
    try:
        filesystem.delete_file(path)
    except (FileNotFoundError, OSError):
        pass  # already gone


_UNSAFE = re.compile(r"[^A-Za-z0-9_.+=@,-]+")



MAX_FOLDER_BYTES = 255



def experiment_folder(experiment: str) -> str:
    """The sweep's folder under storage: the experiment's name when it is one safe folder name (so
    existing checkpoints are found where they are), else a readable slug of it and a hash of the
    whole name: never a separator, '.', '..', a control character or an edge space, at most 255 bytes."""
    safe = (experiment not in ("", ".", "..") and "/" not in experiment and "\\" not in experiment
            and experiment.isprintable() and experiment == experiment.strip()
            and len(experiment.encode()) <= MAX_FOLDER_BYTES)
    if safe:
        return experiment
    slug = _UNSAFE.sub("-", experiment).strip("-.")[:100] or "experiment"
    return f"{slug}-{hashlib.sha256(experiment.encode()).hexdigest()[:12]}"



def sweep_dir(root: str, experiment: str) -> str:
    return f"{root}/{experiment_folder(experiment)}"



def trial_dir(root: str, experiment: str, trial_id: str) -> str:
    return f"{sweep_dir(root, experiment)}/{trial_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageLocation:
    """A local folder (made absolute against the working folder) or s3://bucket/prefix.
    `origin` names the setting in error messages, e.g. `backends/local.yaml storage`."""

    path: str
    endpoint: str | None = None
    origin: str = "storage"

    def __post_init__(self) -> None:
        if not self.is_s3:
            object.__setattr__(self, "path", str(Path(self.path).expanduser().resolve()))

    @property
    def root(self) -> str:
        """The storage as a URI Ray and pyarrow understand: an absolute folder or s3://bucket/prefix."""
        return self.path.rstrip("/") if self.is_s3 else self.path

    @property
    def is_s3(self) -> bool:
        return self.path.startswith("s3://")

    def cache_uri(self, name: str) -> str:
        return f"{self.path.rstrip('/')}/data/{name}"
