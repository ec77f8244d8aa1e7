"""Backend profiles (backends/*.yaml): where a sweep runs, logs and stores, and on what hardware.

The spec says *what* to train; a profile says *where*: Ray (embedded or an address), the MLflow
tracking URI, storage for checkpoints and token caches (a folder or s3:// with one `endpoint`),
the hardware the planner sizes trials for, concurrency and retries. Values may name environment
variables as `${NAME}`; they are resolved only when used, so planning never needs credentials, and
a missing variable is a clear error naming the profile key.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from sweeper.console import UserError
from sweeper.storage import StorageLocation
from sweeper.spec.schema import FieldError, describe, read_dataclass, spec_field
from sweeper.spec.nodes import load_yaml

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Hardware:
    """What one trial slot looks like. For CPUs a "device" is one process's slot of cpus_per_trial cores:
    a trial takes one, or processes_per_trial of them when it runs data-parallel."""

    accelerator: Literal["cpu", "cuda"]
    name: str
    nodes: int = spec_field(1, positive=True, max=100_000)
    devices_per_node: int = spec_field(positive=True, max=1024)
    memory_per_device: int = spec_field(positive=True, max=2**50, unit="bytes")
    cpus_per_trial: int = spec_field(1, positive=True, max=4096)
    processes_per_trial: int = spec_field(1, positive=True, max=4096, doc="cpu: data-parallel (gloo) processes per "
                                          "trial, each a device with cpus_per_trial cores")
    peak_flops: float | None = spec_field(None, positive=True, max=1e18, doc="dense bf16 FLOP/s per device (for MFU)")
    assumed_mfu: float | None = spec_field(None, positive=True, max=1, doc="utilisation the estimate assumes")
    sustained_flops: float | None = spec_field(None, positive=True, max=1e18, doc="measured FLOP/s per device")
    step_seconds: float = spec_field(0.0, min=0, max=3600, doc="measured seconds an optimizer step costs beyond its "
                                     "FLOPs: the framework's own work, which dominates models of ~100k parameters")
    trial_seconds: float = spec_field(0.0, min=0, max=86400, doc="measured seconds a trial costs beyond its steps: "
                                      "starting its worker, opening its data, writing its checkpoints")
    price_per_device_hour: float | None = spec_field(None, min=0, max=1e6)
    max_micro_batch: int = spec_field(64, positive=True, max=4096)
    max_trials_per_device: int = spec_field(1, positive=True, max=64, doc="small trials share a GPU up to this many")
    share_below_params: int = spec_field(100_000_000, positive=True, max=10**15,
                                         doc="only trials smaller than this share")

    def __post_init__(self) -> None:
        if self.processes_per_trial > 1 and self.accelerator != "cpu":
            raise FieldError("processes_per_trial", "applies to accelerator: cpu; on GPUs a trial spans as many "
                                                    "devices as its memory needs")
        if self.processes_per_trial > self.total_devices:
            raise FieldError("processes_per_trial", f"{self.processes_per_trial} processes need as many devices, "
                                                    f"but nodes x devices_per_node is {self.total_devices}")
        if self.peak_flops is None and self.sustained_flops is None:
            raise FieldError("", "hardware needs `peak_flops` with `assumed_mfu`, or a measured `sustained_flops`")
        if self.peak_flops is not None and self.sustained_flops is None and self.assumed_mfu is None:
            raise FieldError("peak_flops", "with `peak_flops`, set `assumed_mfu` (e.g. 0.4) for time estimates")

    @property
    def effective_flops(self) -> float:
        """FLOP/s one device delivers in the estimates."""
        if self.sustained_flops is not None:
            return self.sustained_flops
        return self.peak_flops * self.assumed_mfu  # type: ignore[operator]

    @property
    def total_devices(self) -> int:
        return self.nodes * self.devices_per_node

    def assumption(self) -> str:
        if self.sustained_flops is not None:
            said = f"{self.sustained_flops:.3g} FLOP/s sustained per device (measured)"
        else:
            said = f"{self.assumed_mfu:.0%} MFU of {self.peak_flops:.3g} FLOP/s peak per device"
        overheads = [f"{self.step_seconds * 1000:.3g} ms a step"] if self.step_seconds else []
        overheads += [f"{self.trial_seconds:.3g} s a trial"] if self.trial_seconds else []
        return f"{said}{' + ' + ' and '.join(overheads) if overheads else ''}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RaySettings:
    address: str = spec_field("embedded", doc="`embedded` starts Ray in-process; else a cluster address")


@dataclass(frozen=True, slots=True, kw_only=True)
class MlflowSettings:
    tracking_uri: str = "sqlite:///mlflow.db"

    def __post_init__(self) -> None:
        problem = None if "${" in self.tracking_uri else tracking_uri_problem(self.tracking_uri)
        if problem:
            raise FieldError("tracking_uri", f"{describe(self.tracking_uri)} {problem}")


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageSettings:
    path: str = spec_field(doc="a folder (relative to the working folder) or s3://bucket/prefix")
    endpoint: str | None = spec_field(None, doc="S3-compatible endpoint URL, used by boto3, pyarrow and MLflow")

    def __post_init__(self) -> None:
        problem = None if "${" in self.path else storage_path_problem(self.path)
        if problem:
            raise FieldError("path", f"{describe(self.path)} {problem}")


_BUCKET = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/.*)?", re.ASCII)
_SQL_SCHEMES = ("postgresql", "mysql", "mssql")
MAX_STORAGE_PATH = 500


def storage_path_problem(path: str) -> str | None:
    """Why `path` is no storage sweeper can use (a folder, or s3://bucket/prefix), or None."""
    if not path.isprintable():
        return "may not contain control characters"
    if len(path) > MAX_STORAGE_PATH:  # it reaches MLflow tags and S3 keys (at most 1,024 bytes) with more after it
        return f"is {len(path):,} characters; a storage path may have at most {MAX_STORAGE_PATH}"
    if path[:3].lower() == "s3:":
        if not _BUCKET.fullmatch(path):
            return "needs a bucket: write s3://bucket or s3://bucket/prefix (a bucket name is 3-63 of a-z 0-9 . -)"
    elif "://" in path:
        return "is neither a folder nor s3://bucket/prefix, the two storages sweeper reads and writes"
    return None


def tracking_uri_problem(uri: str) -> str | None:
    """Why `uri` would not open the intended MLflow store, or None. An empty or in-memory database
    would silently open a new, empty store and lose every run."""
    if not uri.isprintable():
        return "may not contain control characters"
    scheme = uri.split(":", 1)[0].lower() if re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", uri) else ""
    parsed = urlparse(uri)
    if scheme == "sqlite":
        database = uri[len("sqlite:///"):] if uri.lower().startswith("sqlite:///") else ""
        if not database.split("?", 1)[0] or database.startswith(":memory:"):
            return "names no database file (an in-memory store forgets every run); e.g. sqlite:///mlflow.db"
    elif scheme in ("http", "https"):
        if not parsed.hostname:
            return "names no server; e.g. https://mlflow.example.org"
    elif scheme.split("+", 1)[0] in _SQL_SCHEMES:
        if not parsed.netloc or not parsed.path.strip("/"):
            return f"needs a host and a database; e.g. {scheme}://user@host:5432/mlflow"
    elif scheme == "file":
        if parsed.path in ("", "/"):
            return "names no folder; e.g. file:///home/me/mlruns"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    name: str
    file: str
    description: str = ""
    ray: RaySettings = RaySettings()
    mlflow: MlflowSettings = MlflowSettings()
    storage: StorageSettings
    hardware: Hardware
    concurrency: int = spec_field(1, positive=True, max=100_000)
    retries: int = spec_field(2, min=0, max=1000)
    # (written value, key) -> value with its environment variables resolved: each once per profile
    resolved: dict[tuple[str, str], str] = field(default_factory=dict, compare=False, repr=False)

    def env(self, value: str, key: str) -> str:
        """`value` (the profile's setting `key`) with ${NAME} resolved, once; see resolve_env."""
        if (value, key) not in self.resolved:
            self.resolved[value, key] = resolve_env(value, f"{self.file} {key}")
        return self.resolved[value, key]

    def tracking_uri(self) -> str:
        return self.env(self.mlflow.tracking_uri, "mlflow.tracking_uri")

    def ray_address(self) -> str:
        """`embedded`, or the cluster's address."""
        return self.env(self.ray.address, "ray.address")

    def storage_path(self) -> str:
        """storage.path as written, with its variables resolved: a relative folder stays relative."""
        return self.env(self.storage.path, "storage.path")

    def storage_location(self) -> StorageLocation:
        endpoint = self.env(self.storage.endpoint, "storage.endpoint") if self.storage.endpoint else ""
        return StorageLocation(path=self.storage_path(), endpoint=endpoint or None, origin=f"{self.file} storage")

    def storage_root(self) -> str:
        """The storage as a URI Ray and pyarrow understand (absolute path or s3://)."""
        return self.storage_location().root

    def storage_endpoint(self) -> str | None:
        return self.storage_location().endpoint


def resolve_env(value: str, where: str) -> str:
    """Substitute ${NAME} (or ${NAME:-default}) from the environment; a missing variable without a
    default is a UserError naming `where`. Where `where` ends in a key with a check (storage.path,
    mlflow.tracking_uri), the value from the environment is checked as a written one would be."""

    def lookup(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if os.environ.get(name):
            return os.environ[name]
        if default is not None:
            return default
        raise UserError(f"{where} needs the environment variable {name}, which is not set")

    resolved = _ENV.sub(lookup, value)
    if resolved != value:
        for key, check in _RESOLVED_CHECKS.items():
            problem = check(resolved) if where.endswith(key) else None
            if problem:
                raise UserError(f"{where}: {describe(resolved)} (from {value}) {problem}")
    return resolved


_RESOLVED_CHECKS = {"storage.path": storage_path_problem, "tracking_uri": tracking_uri_problem}


def default_profile_path(name: str, spec_file: str | None = None) -> Path:
    """backends/NAME.yaml: in the working folder, beside the spec's folder, or in the source tree."""
    candidates = [Path.cwd() / "backends"]
    if spec_file:
        candidates.append(Path(spec_file).resolve().parent.parent / "backends")
    candidates.append(Path(__file__).resolve().parent.parent / "backends")
    for folder in candidates:
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    raise UserError(f"no backends/{name}.yaml here or beside the spec; pass --backend FILE")


def load_profile(path: str | Path) -> Profile:
    path = Path(path)
    node = load_yaml(path, display=str(path))
    return read_dataclass(Profile, node, f"profile {path.name}", name=path.stem, file=str(path), resolved={})
