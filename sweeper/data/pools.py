"""Preparing a sweep's data: the tokenizer, one train array holding the largest pool, the validation set.

The cache for a DataSpec is the folder `<storage>/data/<slug>-<key>/`, where the key hashes what
decides the tokens: the sources (for files, the matched files and sizes), validation_tokens and the
tokenizer settings (not seq_len, nor how-not-what keys such as `streaming`). Pools of every U are
prefixes of the one train array, so a sweep with a larger U rebuilds the array longer and checks
that the old one is its prefix; a smaller or equal U only adds a line to the manifest.

Validation: the first `validation_tokens` tokens of `data.validation` (its synthetic stream 1), or
without one, of the train source itself; pools then start at the next document. Holding out the
*start* keeps the validation set fixed when a sweep grows its largest pool (held out after the
largest pool, it would move, and curves already logged under the same trial ids would stop being
comparable). Train documents whose text equals a validation document are skipped, and counted.

A trained BPE is cached by itself in `<storage>/data/tokenizers/` (it depends on the train source
and tokenizer settings only), so caches that differ in validation_tokens share it.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sweeper.data import sources, synthetic
from sweeper.data.errors import DataError
from sweeper.data.manifest import (DataFile, Manifest, PoolInfo, TokenArray, TokenizerInfo, open_documents_index,
                                   read_manifest)
from sweeper.data.verify import CHUNK_BYTES, file_digests
from sweeper.data.pack import Cursor, Packed, Progress, pool_statistics, write_tokens
from sweeper.data.cache import MANIFEST, open_cache
from sweeper.storage import StorageLocation
from sweeper.data.tokenizer import (SymbolTokenizer, TextTokenizer, Tokenizer, check_vocab_size, from_json,
                                    load_pretrained, train_bpe)
from sweeper.spec import DataSpec, SyntheticSource, TokenizerSpec

KEY_SCHEMA = "sweeper.data-key/1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    manifest: Manifest
    action: Literal["built", "reused", "updated"]  # updated: pools or checksums added to the manifest only
    seconds: float
    repaired: tuple[str, ...] = ()  # files that failed their check, so the cache was built again


def cache_name(data: DataSpec, storage: StorageLocation) -> str:
    """`<slug>-<key>`: the folder under `<storage>/data/` for this DataSpec."""
    return _name(data, _identities(data, storage))


def find(data: DataSpec, storage: StorageLocation) -> Manifest | None:
    """The prepared cache for `data`, or None. Reads only."""
    return read_manifest(storage, cache_name(data, storage))


def prepare(data: DataSpec, unique_tokens: Iterable[int], storage: StorageLocation, *,
            progress: Progress | None = None, verify: bool = True) -> Prepared:
    """Make sure pools of every U in `unique_tokens` and the validation set are cached; see the module
    docstring. Idempotent: when they are, it reads one manifest (and with `verify`, every file of the
    cache as stored, against its checksums: an s3:// cache's objects are read through) and returns
    `action="reused"`. A cache with a missing or corrupted file is built again (`repaired` names them).

    Raises DataError for what the user can fix (sources, storage, sizes)."""
    started = time.perf_counter()
    wanted = sorted({int(u) for u in unique_tokens})
    if not wanted or wanted[0] < 1:
        raise ValueError(f"unique_tokens must be positive counts, got {wanted}")
    identities = _identities(data, storage)
    name = _name(data, identities)
    existing = read_manifest(storage, name)
    repaired: tuple[str, ...] = ()
    checked = False
    if existing is not None and verify:
        existing, repaired, checked = _verify(existing)
    if existing is not None and not repaired and existing.train.tokens >= wanted[-1]:
        return _record_pools(existing, wanted, started, checked)
    if repaired:  # rebuild whatever the broken cache held: pools trained on before must stay the same
        wanted = sorted({*wanted, *(p.unique_tokens for p in existing.pools)})  # type: ignore[union-attr]
    manifest = _build(data, wanted, storage, name, identities, existing, progress)
    if manifest.train.tokens > wanted[-1]:  # a racing preparer published a longer array meanwhile
        return _record_pools(manifest, wanted, started)
    return Prepared(manifest=manifest, action="built", seconds=time.perf_counter() - started, repaired=repaired)


def _verify(manifest: Manifest) -> tuple[Manifest, tuple[str, ...], bool]:
    """Read every file of the cache as stored (for s3://, the objects themselves) against its checksums:
    (the manifest, with chunk checksums recorded for files that had none, the names of files that are
    missing or do not match (now deleted, so a rebuild writes them anew), whether checksums were added)."""
    cache = open_cache(manifest.storage, manifest.name)
    bad: list[str] = []
    upgraded: dict[str, DataFile] = {}
    for data in manifest.files():
        found = cache.digests(data.file, data.chunk_bytes or CHUNK_BYTES)
        if found is None or found[:2] != (data.bytes, data.sha256) or (data.chunks and found[2] != data.chunks):
            bad.append(data.file)
        elif not data.chunks:  # from before chunk checksums, and whole
            upgraded[data.file] = dataclasses.replace(data, chunk_bytes=CHUNK_BYTES, chunks=found[2])
    for name in bad:
        cache.remove(name)
    if bad or not upgraded:
        return manifest, tuple(bad), False
    return _with_files(manifest, upgraded), (), True


def _with_files(manifest: Manifest, files: dict[str, DataFile]) -> Manifest:
    def new(data: DataFile) -> DataFile:
        return files.get(data.file, data)

    tokenizer = manifest.tokenizer
    if tokenizer.data is not None:
        tokenizer = dataclasses.replace(tokenizer, data=new(tokenizer.data))
    return dataclasses.replace(manifest, train=dataclasses.replace(manifest.train, data=new(manifest.train.data)),
                               validation=dataclasses.replace(manifest.validation,
                                                              data=new(manifest.validation.data)),
                               documents_index=new(manifest.documents_index), tokenizer=tokenizer)


def _record_pools(manifest: Manifest, wanted: list[int], started: float, changed: bool = False) -> Prepared:
    """The pools are prefixes of what is cached; list any new ones in the manifest (and write it when
    `changed`: checksums were added to it)."""
    missing = [u for u in wanted if manifest.pool(u) is None]
    if not missing and not changed:
        return Prepared(manifest=manifest, action="reused", seconds=time.perf_counter() - started)
    index = open_documents_index(manifest)
    pools = sorted([*manifest.pools, *(_pool(index, u) for u in missing)], key=lambda p: p.unique_tokens)
    updated = dataclasses.replace(manifest, pools=tuple(pools))
    open_cache(manifest.storage, manifest.name).put_text(MANIFEST, updated.to_json())
    return Prepared(manifest=updated, action="updated", seconds=time.perf_counter() - started)


def _identities(data: DataSpec, storage: StorageLocation) -> dict[str, Any]:
    """What decides the tokens (files sources list their files here, once per call)."""
    return {"train": sources.identity(data.train, "data.train", storage),
            "validation": sources.identity(data.validation, "data.validation", storage) if data.validation else None,
            "validation_tokens": data.validation_tokens,
            "tokenizer": sources.settings(data.tokenizer)}


def _name(data: DataSpec, identities: dict[str, Any]) -> str:
    text = json.dumps({"schema": KEY_SCHEMA, **identities}, sort_keys=True)
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{sources.slug(data.train)}-{_tokenizer_slug(data.tokenizer)}-{key}"


# --- building -----------------------------------------------------------------------------------

def _build(data: DataSpec, wanted: list[int], storage: StorageLocation, name: str, identities: dict[str, Any],
           existing: Manifest | None, progress: Progress | None) -> Manifest:
    tokenizer = _tokenizer(data, identities, storage, progress)
    check_vocab_size(tokenizer, data.tokenizer)
    dtype = np.dtype("<u2") if tokenizer.vocab_size <= 2**16 else np.dtype("<u4")
    symbols = isinstance(tokenizer, SymbolTokenizer)
    held_out = data.validation is None or (data.validation == data.train and not isinstance(data.train,
                                                                                            SyntheticSource))
    cache = open_cache(storage, name)
    cursors: list[Cursor] = []
    try:
        with cache.staging() as staging:
            train_cursor = Cursor(sources.document_batches(data.train, "data.train", storage=storage,
                                                           as_symbols=symbols), tokenizer)
            cursors.append(train_cursor)
            if held_out:
                val_cursor, val_key = train_cursor, "data.train"
            else:
                batches = sources.document_batches(data.validation, "data.validation",  # type: ignore[arg-type]
                                                   storage=storage, stream=1, as_symbols=symbols)
                val_cursor = Cursor(batches, tokenizer)
                cursors.append(val_cursor)
                val_key = "data.validation"
            seen: set[bytes] = set()
            validation = write_tokens(val_cursor, staging / "validation", dtype=dtype, limit=data.validation_tokens,
                                      stage="validation", progress=progress, keep_hashes=seen)
            if validation.tokens < data.validation_tokens:
                _empty_or_short(val_key, validation.tokens, f"validation_tokens {data.validation_tokens:,}")
            train = write_tokens(train_cursor, staging / "train", dtype=dtype, limit=wanted[-1], stage="train",
                                 progress=progress, drop=frozenset(seen))
            if train.tokens < wanted[-1]:
                _too_few(data, wanted[-1], train.tokens, held_out)
            if existing is not None:
                _check_prefix(train, existing, dtype)
            files, named = _name_files(staging, tokenizer, validation, train)
            earlier = [p.unique_tokens for p in existing.pools] if existing is not None else []
            manifest = Manifest(
                name=name, key=name.rsplit("-", 1)[-1],
                created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                train_source=identities["train"], validation_source=identities["validation"],
                held_out=held_out, validation_tokens=data.validation_tokens,
                tokenizer=TokenizerInfo(kind=data.tokenizer.kind, description=tokenizer.description,
                                        vocab_size=tokenizer.vocab_size, eod_id=tokenizer.eod_id,
                                        fingerprint=tokenizer.fingerprint, data=named.get("tokenizer")),
                dtype=dtype.str, train=_array(named["train"], train),
                validation=_array(named["validation"], validation),
                documents_index=named["documents"],
                pools=tuple(_pool(train.index, u) for u in sorted({*wanted, *earlier})),
                dropped_documents=train.dropped_documents,
                entropy_rate_nats_per_symbol=synthetic.entropy_rate_nats(data.train)
                if isinstance(data.train, SyntheticSource) else None,
                storage=storage)
            current = read_manifest(storage, name)
            if current is not None and current.train.tokens > manifest.train.tokens:
                return current  # a racing preparer published a longer array; ours would shorten it
            cache.publish(files, manifest.to_json(), staging)
            return manifest
    finally:
        for cursor in cursors:
            cursor.close()


def _tokenizer(data: DataSpec, identities: dict[str, Any], storage: StorageLocation,
               progress: Progress | None) -> Tokenizer:
    spec = data.tokenizer
    if spec.kind == "symbols":
        return SymbolTokenizer(data.train.symbols)  # type: ignore[union-attr]
    if spec.kind == "pretrained":
        return load_pretrained(spec)
    what = {"train": identities["train"], "tokenizer": identities["tokenizer"]}
    name = f"bpe-{hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]}.json"
    cache = open_cache(storage, "tokenizers")
    text_bytes = int(spec.train_text_bytes or 0)
    description = f"byte-level BPE learned from the first {text_bytes:,} bytes"
    cached = cache.read_text(name)
    if cached is not None:
        return from_json(cached, description, eod_id=0)
    learned = train_bpe(spec, _first_bytes(data, storage, text_bytes, progress), text_bytes)
    cache.put_text(name, learned.json)
    return learned


def _first_bytes(data: DataSpec, storage: StorageLocation, limit: int, progress: Progress | None) -> Iterator[str]:
    """The train source's documents up to `limit` UTF-8 bytes, the last one cut on a character."""
    taken = 0
    for batch in sources.document_batches(data.train, "data.train", storage=storage):
        for text in batch:
            raw = text.encode("utf-8")  # type: ignore[union-attr]
            if taken + len(raw) >= limit:
                yield raw[:limit - taken].decode("utf-8", errors="ignore")
                if progress:
                    progress("tokenizer", limit, limit)
                return
            taken += len(raw)
            yield text  # type: ignore[misc]
        if progress:
            progress("tokenizer", taken, limit)
    if taken == 0:
        _empty_or_short("data.train", 0, "")


def _name_files(staging: Path, tokenizer: Tokenizer, validation: Packed,
                train: Packed) -> tuple[dict[str, Path], dict[str, DataFile]]:
    """Stage every data file under its content name `<role>-<sha256>.<ext>`."""
    train.index.astype("<i8").tofile(staging / "documents")
    if isinstance(tokenizer, TextTokenizer):
        (staging / "tokenizer").write_text(tokenizer.json)
    files: dict[str, Path] = {}
    named: dict[str, DataFile] = {}
    for role, ext in (("train", "bin"), ("validation", "bin"), ("documents", "bin"), ("tokenizer", "json")):
        path = staging / role
        if not path.exists():
            continue
        digest, chunks = file_digests(path, CHUNK_BYTES)
        name = f"{role}-{digest}.{ext}"
        target = staging / name
        path.rename(target)
        files[name] = target
        named[role] = DataFile(file=name, sha256=digest, bytes=target.stat().st_size, chunk_bytes=CHUNK_BYTES,
                               chunks=chunks)
    return files, named


def _array(data: DataFile, packed: Packed) -> TokenArray:
    return TokenArray(data=data, tokens=packed.tokens, documents=packed.documents, text_bytes=packed.text_bytes)


def _pool(index: np.ndarray, unique_tokens: int) -> PoolInfo:
    documents, text_bytes = pool_statistics(index, unique_tokens)
    return PoolInfo(unique_tokens=unique_tokens, tokens=unique_tokens, documents=documents, text_bytes=text_bytes)


def _check_prefix(train: Packed, existing: Manifest, dtype: np.dtype) -> None:
    """A longer array must begin with the old one, or pools already trained on would change."""
    digest = hashlib.sha256()
    remaining = existing.train.tokens * dtype.itemsize
    with open(train.path, "rb") as f:
        while remaining and (chunk := f.read(min(remaining, 8 << 20))):
            digest.update(chunk)
            remaining -= len(chunk)
    if digest.hexdigest() != existing.train.data.sha256:
        raise DataError("data.train", f"the source no longer gives the tokens cached at {existing.uri} (its first "
                                      f"{existing.train.tokens:,} tokens differ): pin the source (e.g. `revision`) "
                                      "or delete that cache folder to rebuild it")


def _too_few(data: DataSpec, wanted: int, has: int, held_out: bool) -> None:
    after = f" after the {data.validation_tokens:,} validation tokens held out from its start" if held_out else ""
    if has == 0 and not held_out:
        _empty_or_short("data.train", 0, "")
    raise DataError("data.train", f"the source holds {has:,} tokens{after}, fewer than the largest pool's "
                                  f"unique_tokens {wanted:,}: lower unique_tokens or use a larger source")


def _empty_or_short(key: str, has: int, need: str) -> None:
    if has == 0:
        raise DataError(key, "the source holds no text: no documents, or only blank ones")
    raise DataError(key, f"the source holds {has:,} tokens, fewer than {need}")


def _tokenizer_slug(spec: TokenizerSpec) -> str:
    if spec.kind == "pretrained":
        base = Path(spec.file).stem if spec.file else (spec.name or "").rsplit("/", 1)[-1]
        return "".join(c if c.isalnum() or c in "._" else "_" for c in base) or "pretrained"
    return f"bpe{spec.vocab_size}" if spec.kind == "train_bpe" else f"symbols{spec.vocab_size}"
