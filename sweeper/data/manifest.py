"""The manifest of a token cache, and reading a cache through it.

`manifest.json` names every data file with its size, its SHA-256 and that of each 16 MiB chunk, the
sources, the tokenizer (kind, size, end-of-document id, fingerprint = SHA-256 of its JSON), the array
dtype, and for every pool prepared so far its nominal U beside the tokens it actually holds. Readers
memory-map the arrays: straight from a local storage folder, or from the node-local copy of an s3://
cache, after checking the chunks they read against the manifest (sweeper.data.verify).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.data.errors import CacheFileError, DataError
from sweeper.data.cache import MANIFEST, S3Cache, open_cache
from sweeper.data.verify import check_file, corrupt_message, forget
from sweeper.storage import StorageLocation

FORMAT = "sweeper.data/1"


@dataclass(frozen=True, slots=True, kw_only=True)
class DataFile:
    file: str  # name within the cache folder: <role>-<sha256>.<ext>
    sha256: str
    bytes: int
    chunk_bytes: int = 0
    chunks: tuple[str, ...] = ()  # SHA-256 of each chunk_bytes piece; () in caches written before them


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenArray:
    data: DataFile
    tokens: int
    documents: int  # documents begun; the last may be cut
    text_bytes: int  # UTF-8 bytes of those documents (symbols for a synthetic source under `symbols`)

    @property
    def bytes_per_token(self) -> float:
        return self.text_bytes / self.tokens if self.tokens else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolInfo:
    unique_tokens: int  # nominal U, as the sweep asked
    tokens: int  # what the pool holds: exactly U
    documents: int
    text_bytes: int

    @property
    def bytes_per_token(self) -> float:
        return self.text_bytes / self.tokens if self.tokens else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenizerInfo:
    kind: str
    description: str
    vocab_size: int
    eod_id: int
    fingerprint: str  # SHA-256 of the tokenizer's JSON (symbols: of its definition)
    data: DataFile | None  # the tokenizer's JSON, for decoding; None for `symbols`


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """One prepared (sources, tokenizer) cache: `storage` + `name` is its folder. `storage` is not
    written into the file, so a cache folder can be copied to other storage whole."""

    name: str
    key: str
    created: str
    train_source: dict[str, Any]
    validation_source: dict[str, Any] | None
    held_out: bool  # the validation set is the start of the train source, before every pool
    validation_tokens: int
    tokenizer: TokenizerInfo
    dtype: str
    train: TokenArray
    validation: TokenArray
    documents_index: DataFile  # (documents, 2) int64: cumulative [token end, text byte end] of train
    pools: tuple[PoolInfo, ...]
    dropped_documents: int  # train documents skipped because the validation set holds the same text
    entropy_rate_nats_per_symbol: float | None
    storage: StorageLocation = field(compare=False)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def eod_id(self) -> int:
        return self.tokenizer.eod_id

    @property
    def uri(self) -> str:
        return self.storage.cache_uri(self.name)

    def pool(self, unique_tokens: int) -> PoolInfo | None:
        return next((p for p in self.pools if p.unique_tokens == unique_tokens), None)

    def to_json(self) -> str:
        record = {"format": FORMAT, **asdict(self)}
        del record["storage"]
        return json.dumps(record, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, storage: StorageLocation) -> Manifest | None:
        """None for a manifest of another format version (it is rebuilt, not misread)."""
        record = json.loads(text)
        if record.pop("format", None) != FORMAT:
            return None
        tokenizer = dict(record.pop("tokenizer"))
        tokenizer["data"] = _data_file(tokenizer["data"]) if tokenizer["data"] else None
        for role in ("train", "validation"):
            array = dict(record[role])
            record[role] = TokenArray(**array | {"data": _data_file(array["data"])})
        record["documents_index"] = _data_file(record["documents_index"])
        record["pools"] = tuple(PoolInfo(**p) for p in record["pools"])
        return cls(**record, tokenizer=TokenizerInfo(**tokenizer), storage=storage)

    def files(self) -> tuple[DataFile, ...]:
        """Every data file the cache holds."""
        tokenizer = (self.tokenizer.data,) if self.tokenizer.data is not None else ()
        return (self.train.data, self.validation.data, self.documents_index, *tokenizer)


def _data_file(record: dict[str, Any]) -> DataFile:
    return DataFile(**record | {"chunks": tuple(record.get("chunks", ()))})


def read_manifest(storage: StorageLocation, name: str) -> Manifest | None:
    text = open_cache(storage, name).read_text(MANIFEST)
    if text is None:
        return None
    try:
        return Manifest.from_json(text, storage)
    except (ValueError, TypeError, KeyError):
        return None  # unreadable: treated as absent and rebuilt over


# --- reading ------------------------------------------------------------------------------------

def local_path(manifest: Manifest, data: DataFile, *, upto: int | None = None) -> Path:
    """A readable local file whose first `upto` bytes (all by default) match the manifest's checksums:
    the storage folder's own, or this node's copy of the S3 object (a bad copy is fetched again).
    Checked once per process.

    Raises CacheFileError (a DataError) naming the file when it is missing or does not match: the
    cache must be rebuilt, which `sweeper data` does."""
    cache = open_cache(manifest.storage, manifest.name)
    path = cache.local_file(data.file, data.sha256, data.bytes)
    problem = check_file(path, data, upto=upto)
    if problem is not None and isinstance(cache, S3Cache):  # this node's copy went bad: fetch it again
        path.unlink(missing_ok=True)
        forget(path)
        path = cache.local_file(data.file, data.sha256, data.bytes)
        problem = check_file(path, data, upto=upto)
    if problem is not None:
        where = f"{cache.uri}{data.file}" if isinstance(cache, S3Cache) else str(path)
        raise CacheFileError(f"{manifest.storage.origin}.path", corrupt_message(where, problem))
    return path


def open_pool(manifest: Manifest, unique_tokens: int) -> np.ndarray:
    """The first `unique_tokens` tokens of the train array, memory-mapped read-only: exactly U tokens,
    documents packed with the end-of-document id after each. Raises DataError for a U the cache does
    not hold, CacheFileError for chunks that do not match the manifest."""
    if not 0 < unique_tokens <= manifest.train.tokens:
        raise DataError("grid.unique_tokens", f"the cache {manifest.uri} holds {manifest.train.tokens:,} train tokens, "
                                              f"not {unique_tokens:,}; run `sweeper data` for this sweep first")
    return _memmap(manifest, manifest.train, unique_tokens)[:unique_tokens]


def open_validation(manifest: Manifest) -> np.ndarray:
    """The validation tokens (validation_tokens of them), memory-mapped read-only. Raises
    CacheFileError when they do not match the manifest."""
    return _memmap(manifest, manifest.validation)


def open_documents_index(manifest: Manifest) -> np.ndarray:
    path = local_path(manifest, manifest.documents_index)
    return np.fromfile(path, dtype="<i8").reshape(-1, 2)


def open_tokenizer(manifest: Manifest) -> Any:
    """The tokenizer that made the cache (for decoding samples): `.decode(ids)`, `.vocab_size`, `.eod_id`."""
    from sweeper.data.tokenizer import SymbolTokenizer, from_json

    info = manifest.tokenizer
    if info.data is None:
        return SymbolTokenizer(info.vocab_size - 1)
    text = local_path(manifest, info.data).read_text()
    return from_json(text, info.description, info.eod_id)


def _memmap(manifest: Manifest, array: TokenArray, tokens: int | None = None) -> np.ndarray:
    """The array, after checking the chunks that hold its first `tokens` tokens (all by default)."""
    itemsize = np.dtype(manifest.dtype).itemsize
    path = local_path(manifest, array.data, upto=None if tokens is None else tokens * itemsize)
    return np.memmap(path, dtype=np.dtype(manifest.dtype).newbyteorder("<"), mode="r", shape=(array.tokens,))
