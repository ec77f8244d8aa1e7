"""Where token caches live, and moving their files there and back.

A `StorageLocation` is a profile's `storage`: a local folder or s3://bucket/prefix, with an optional
S3-compatible endpoint. A cache is the folder `<storage>/data/<cache name>/`. Its data files are named
by the SHA-256 of their bytes, so a file never changes once written, two racing preparers write the
same bytes under the same name, and a reader holding an older manifest still finds its files.
`manifest.json` is written last and is the only file a reader looks for first: a cache without one
does not exist, so a preparer that dies half-way leaves nothing anyone reads.

Local folders: files are staged in `<storage>/data/.staging-*` (the same file system) and renamed into
place, so each appears whole or not at all. S3: an object becomes visible only when its upload is
complete; data objects go up first, the manifest last. A worker reading an s3:// cache downloads each
file once into the node-local cache ($SWEEPER_DATA_CACHE, default ~/.cache/sweeper/data), keyed by its
checksum and verified against it, and memory-maps it from there.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sweeper.data.errors import CacheFileError, DataError
from sweeper.data.verify import corrupt_message, file_digests
from sweeper.storage import StorageLocation

MANIFEST = "manifest.json"
_CHUNK_BYTES = 8 << 20


def node_cache_root() -> Path:
    """This machine's cache of downloaded files (content-addressed, so safe to share and to delete)."""
    root = os.environ.get("SWEEPER_DATA_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "sweeper" / "data"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


# --- caches -------------------------------------------------------------------------------------

class LocalCache:
    def __init__(self, storage: StorageLocation, name: str):
        self.storage = storage
        self.root = Path(storage.cache_uri(name))
        self.uri = str(self.root)

    def read_text(self, name: str) -> str | None:
        try:
            return (self.root / name).read_text()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise DataError(f"{self.storage.origin}.path", f"cannot read {self.root / name}: {error}") from None

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        parent = self.root.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            _remove_dead_staging(parent)
            folder = Path(tempfile.mkdtemp(prefix=f".staging-{socket.gethostname()}-{os.getpid()}-", dir=parent))
        except OSError as error:
            raise DataError(f"{self.storage.origin}.path", f"cannot write under {parent}: {error}") from None
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def publish(self, files: Mapping[str, Path], manifest_text: str, staging: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for name, path in files.items():
            with open(path, "rb") as f:
                os.fsync(f.fileno())  # on disk before any manifest names it, even across a crash
            os.replace(path, self.root / name)
        manifest = staging / MANIFEST
        with open(manifest, "w") as f:
            f.write(manifest_text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(manifest, self.root / MANIFEST)

    def put_text(self, name: str, text: str) -> None:
        """Write one small file whole or not at all."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".put-", dir=self.root)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, self.root / name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)

    def local_file(self, name: str, sha256: str, size: int) -> Path:
        """The file in the storage folder (its contents are checked by the caller, sweeper.data.verify)."""
        path = self.root / name
        if not path.is_file():
            raise CacheFileError(f"{self.storage.origin}.path", corrupt_message(str(path), "is missing"))
        return path

    def remove(self, name: str) -> None:
        """Delete a data file that failed its check, so a rebuild writes it anew."""
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.root / name)

    def digests(self, name: str, chunk_bytes: int) -> tuple[int, str, tuple[str, ...]] | None:
        """(bytes, SHA-256, SHA-256 of each chunk) of the file as stored, or None when it is missing."""
        path = self.root / name
        try:
            return path.stat().st_size, *file_digests(path, chunk_bytes)
        except FileNotFoundError:
            return None


class S3Cache:
    def __init__(self, storage: StorageLocation, name: str):
        self.storage = storage
        self.bucket, prefix = split_s3(storage.cache_uri(name))
        self.prefix = prefix.rstrip("/") + "/"
        self.uri = f"s3://{self.bucket}/{self.prefix}"
        self.client = s3_client(storage.endpoint)
        self.key = f"{storage.origin}.path"

    def read_text(self, name: str) -> str | None:
        with s3_errors(self.key, self.uri, self.storage.endpoint, endpoint_key=f"{self.storage.origin}.endpoint"):
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read()
            except self.client.exceptions.NoSuchKey:
                return None
        return body.decode()

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        tmp = node_cache_root() / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="staging-", dir=tmp))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def publish(self, files: Mapping[str, Path], manifest_text: str, staging: Path) -> None:
        # Content-named objects are never deleted, even after a failure: a racing preparer's manifest
        # may already name the same object, and a complete object without a manifest is never read.
        with s3_errors(self.key, self.uri, self.storage.endpoint, endpoint_key=f"{self.storage.origin}.endpoint"):
            for name, path in files.items():
                if not self._has(name, path.stat().st_size):
                    self.client.upload_file(str(path), self.bucket, self.prefix + name)
                _adopt(path, _sha_from_name(name))
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + MANIFEST, Body=manifest_text.encode())

    def put_text(self, name: str, text: str) -> None:
        with s3_errors(self.key, self.uri, self.storage.endpoint, endpoint_key=f"{self.storage.origin}.endpoint"):
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=text.encode())

    def remove(self, name: str) -> None:
        """Delete a data object that failed its check (and this node's copy), so a rebuild uploads it
        anew: an object of the right size is otherwise taken as already uploaded."""
        with s3_errors(self.key, self.uri, self.storage.endpoint, endpoint_key=f"{self.storage.origin}.endpoint"):
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + name)
        _node_path(_sha_from_name(name)).unlink(missing_ok=True)

    def digests(self, name: str, chunk_bytes: int) -> tuple[int, str, tuple[str, ...]] | None:
        """(bytes, SHA-256, SHA-256 of each chunk) of the object as stored (read once, streamed; no
        node's copy stands in for it), or None when there is none."""
        with s3_errors(self.key, self.uri, self.storage.endpoint, endpoint_key=f"{self.storage.origin}.endpoint"):
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"]
            except self.client.exceptions.NoSuchKey:
                return None
            whole, chunks, size = hashlib.sha256(), [], 0
            while piece := body.read(chunk_bytes):
                while len(piece) < chunk_bytes and (more := body.read(chunk_bytes - len(piece))):
                    piece += more  # a stream may return less than asked before its end
                whole.update(piece)
                chunks.append(hashlib.sha256(piece).hexdigest())
                size += len(piece)
        return size, whole.hexdigest(), tuple(chunks)

    def _has(self, name: str, size: int) -> bool:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.prefix + name)
        except self.client.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return int(head["ContentLength"]) == size

    def local_file(self, name: str, sha256: str, size: int) -> Path:
        path = _node_path(sha256)
        if path.is_file() and path.stat().st_size == size:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".download-", dir=path.parent)
        os.close(fd)
        try:
            with s3_errors(self.key, self.uri, self.storage.endpoint,
                           endpoint_key=f"{self.storage.origin}.endpoint"):
                self.client.download_file(self.bucket, self.prefix + name, tmp)
            if sha256_file(Path(tmp)) != sha256:
                raise CacheFileError(self.key, corrupt_message(f"{self.uri}{name}",
                                                          "does not match the SHA-256 its manifest records"))
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        return path


Cache = LocalCache | S3Cache


def open_cache(storage: StorageLocation, name: str) -> Cache:
    return S3Cache(storage, name) if storage.is_s3 else LocalCache(storage, name)


def _node_path(sha256: str) -> Path:
    return node_cache_root() / "files" / sha256[:2] / sha256


def _sha_from_name(name: str) -> str:
    return name.rsplit("-", 1)[-1].split(".", 1)[0]


def _adopt(path: Path, sha256: str) -> None:
    """Move a just-uploaded file into the node-local cache (the same file system as the staging
    folder), so this machine never downloads it again."""
    target = _node_path(sha256)
    if len(sha256) != 64 or target.is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)


def _remove_dead_staging(parent: Path) -> None:
    """Staging folders of preparers on this host that were killed (their process is gone)."""
    host = socket.gethostname()
    for folder in parent.glob(f".staging-{host}-*-*"):
        try:
            pid = int(folder.name[len(f".staging-{host}-"):].split("-", 1)[0])
        except ValueError:
            continue
        if not _alive(pid):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- S3 -----------------------------------------------------------------------------------------

def split_s3(uri: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> ("bucket", "some/prefix")."""
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    return bucket, key


_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


def s3_client(endpoint: str | None) -> Any:
    """A boto3 client for `endpoint`, with credentials from boto3's usual chain (environment,
    ~/.aws, instance role). Short connect timeouts and few retries, so an unreachable endpoint is an
    error in seconds rather than minutes."""
    return _client(endpoint, tuple(os.environ.get(name) for name in _CREDENTIAL_VARIABLES))


@functools.lru_cache(maxsize=8)
def _client(endpoint: str | None, credentials: tuple[str | None, ...]) -> Any:
    """One client per endpoint and credential environment (a changed environment gets a new one)."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 2, "mode": "standard"})
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or \
        ("us-east-1" if endpoint else None)
    # A session of its own: the default one would keep the credentials it resolved first.
    return boto3.session.Session().client("s3", endpoint_url=endpoint or None, region_name=region, config=config)


_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "Forbidden", "AllAccessDisabled"}


@contextlib.contextmanager
def s3_errors(key: str, uri: str, endpoint: str | None, *, endpoint_key: str | None = None) -> Iterator[None]:
    """Turn boto3's failures into one DataError naming `key` (or `endpoint_key` when the endpoint is
    what cannot be reached). Messages never include credentials."""
    from botocore import exceptions as bx

    where = endpoint or "AWS S3"
    try:
        yield
    except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError, bx.ConnectionClosedError,
            bx.ProxyConnectionError) as error:
        raise DataError(endpoint_key if endpoint and endpoint_key else key,
                        f"cannot reach {where} for {uri}: {error}") from None
    except (bx.NoCredentialsError, bx.PartialCredentialsError) as error:
        raise DataError(key, f"no usable AWS credentials for {uri} ({error}); set AWS_ACCESS_KEY_ID and "
                             "AWS_SECRET_ACCESS_KEY or AWS_PROFILE") from None
    except bx.ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", "?"))
        bucket = split_s3(uri)[0]
        if code in _DENIED:
            raise DataError(key, f"access denied to {uri} at {where} ({code}): check the AWS credentials "
                                 "in the environment and the bucket's permissions") from None
        if code == "NoSuchBucket":
            raise DataError(key, f"there is no bucket '{bucket}' at {where}") from None
        raise DataError(key, f"S3 error {code} on {uri} at {where}: "
                             f"{error.response.get('Error', {}).get('Message', '')}") from None
