"""A token cache that was corrupted or cut short never trains: opening a pool checks the chunks it
spans against the manifest's checksums, `sweeper data` (and `prepare`) rebuild a cache that fails,
and caches written before chunk checksums keep working."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from sweeper.data import cache_name, open_pool, open_validation, prepare
from sweeper.data.errors import CacheFileError, DataError
from sweeper.data.manifest import read_manifest
from sweeper.data.verify import _verified
from sweeper.spec import load_spec
from sweeper.storage import StorageLocation

from .helpers import synthetic_data

SPEC = """\
version: 1
name: t
data:
  train: {kind: synthetic, states: 16, symbols: 64, branching: 2, emissions: 2, document_length: 256, seed: 0}
  tokenizer: {kind: symbols, vocab_size: 65}
  seq_len: 16
  validation_tokens: 1024
models:
  tiny: {d_model: 32, layers: 1, heads: 2, h_f: 64}
grid: {family: ar, model: tiny, unique_tokens: [2k, 4k]}
"""


@pytest.fixture(autouse=True)
def _fresh_process() -> None:
    """Each test checks files as a new process would (what one process verified, it does not again)."""
    _verified.clear()


def overwrite_with_valid_ids(path: Path, seed: int = 1) -> None:
    """Random ids the tokenizer could have made, same size: only the checksums can tell."""
    size = path.stat().st_size
    path.write_bytes(np.random.default_rng(seed).integers(0, 65, size // 2, dtype="<u2").tobytes())


def test_overwritten_ids_are_refused_naming_the_file_and_the_fix(storage: StorageLocation) -> None:
    manifest = prepare(synthetic_data(), [4000], storage).manifest
    train = Path(manifest.uri) / manifest.train.data.file
    overwrite_with_valid_ids(train)
    with pytest.raises(CacheFileError) as error:
        open_pool(manifest, 4000)
    assert str(error.value) == (
        f"storage.path: the token cache file {train} does not match its checksum in the manifest at bytes "
        f"0-{manifest.train.data.bytes:,} (corrupted or cut short); run `sweeper data` with this sweep's spec to "
        "rebuild the cache (then `sweeper run --retry-failed` for trials that failed on it)")


def test_a_truncated_array_is_refused(storage: StorageLocation) -> None:
    manifest = prepare(synthetic_data(), [4000], storage).manifest
    validation = Path(manifest.uri) / manifest.validation.data.file
    validation.write_bytes(validation.read_bytes()[:100])
    with pytest.raises(CacheFileError, match=rf"{validation} holds 100 bytes, not the 2,048 its manifest records"):
        open_validation(manifest)


def test_a_pool_checks_only_the_chunks_it_spans_and_each_once(storage: StorageLocation,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sweeper.data.pools.CHUNK_BYTES", 1024)
    manifest = prepare(synthetic_data(), [4000], storage).manifest
    assert manifest.train.data.chunk_bytes == 1024 and len(manifest.train.data.chunks) == 8  # 8,000 bytes
    train = Path(manifest.uri) / manifest.train.data.file
    clean = open_pool(manifest, 4000).copy()
    _verified.clear()
    raw = bytearray(train.read_bytes())
    raw[-1] ^= 1  # the last chunk: tokens 3,584-3,999
    train.write_bytes(bytes(raw))
    assert open_pool(manifest, 3584).tolist() == clean[:3584].tolist()  # does not read the bad chunk
    with pytest.raises(CacheFileError, match="at bytes 7,168-8,000"):
        open_pool(manifest, 3585)
    train.write_bytes(bytes(raw[:-1]) + bytes([raw[-1] ^ 1]))  # repaired behind its back
    open_pool(manifest, 4000)
    raw[0] ^= 1
    train.write_bytes(bytes(raw))
    open_pool(manifest, 4000)  # this process checked it already: not read again


def test_prepare_rebuilds_a_corrupted_cache_under_the_same_key(storage: StorageLocation) -> None:
    data = synthetic_data()
    manifest = prepare(data, [2000, 4000], storage).manifest
    clean = open_pool(manifest, 4000).tolist()
    train = Path(manifest.uri) / manifest.train.data.file
    overwrite_with_valid_ids(train)
    again = prepare(data, [2000], storage)  # a sweep that needs only the smaller pool
    assert again.action == "built" and again.repaired == (manifest.train.data.file,)
    assert again.manifest.name == manifest.name and again.manifest.train.data == manifest.train.data
    assert [p.unique_tokens for p in again.manifest.pools] == [2000, 4000]  # what the cache held, rebuilt
    _verified.clear()
    assert open_pool(again.manifest, 4000).tolist() == clean
    assert prepare(data, [2000], storage).action == "reused"


def test_a_missing_file_is_rebuilt(storage: StorageLocation) -> None:
    data = synthetic_data()
    manifest = prepare(data, [4000], storage).manifest
    (Path(manifest.uri) / manifest.documents_index.file).unlink()
    again = prepare(data, [4000], storage)
    assert again.repaired == (manifest.documents_index.file,)
    assert (Path(manifest.uri) / manifest.documents_index.file).is_file()


def test_a_cache_from_before_chunk_checksums_keeps_working(storage: StorageLocation) -> None:
    # Written before chunk checksums: each file's entry has its SHA-256 and size only.
    data = synthetic_data()
    manifest = prepare(data, [4000], storage).manifest
    path = Path(manifest.uri) / "manifest.json"
    record = json.loads(path.read_text())
    for entry in (record["train"]["data"], record["validation"]["data"], record["documents_index"]):
        del entry["chunk_bytes"], entry["chunks"]
    path.write_text(json.dumps(record, indent=2) + "\n")
    legacy = read_manifest(storage, manifest.name)
    assert legacy is not None and legacy.train.data.chunks == ()
    clean = open_pool(legacy, 4000).tolist()  # checked whole against the file's SHA-256
    # a corrupted one is refused all the same
    _verified.clear()
    train = Path(manifest.uri) / manifest.train.data.file
    original = train.read_bytes()
    overwrite_with_valid_ids(train)
    with pytest.raises(CacheFileError, match="does not match the SHA-256 its manifest records"):
        open_pool(legacy, 4000)
    train.write_bytes(original)
    # the next prepare checks it and records the chunk checksums; no tokens are touched, the key stays
    upgraded = prepare(data, [4000], storage)
    assert upgraded.action == "updated" and upgraded.repaired == ()
    assert upgraded.manifest.name == cache_name(data, storage)
    assert read_manifest(storage, manifest.name) == manifest
    assert open_pool(upgraded.manifest, 4000).tolist() == clean
    assert prepare(data, [4000], storage).action == "reused"


def test_errors_crossing_processes_keep_their_message_and_key(storage: StorageLocation) -> None:
    manifest = prepare(synthetic_data(), [4000], storage).manifest
    (Path(manifest.uri) / manifest.train.data.file).write_bytes(b"")
    with pytest.raises(CacheFileError) as error:
        open_pool(manifest, 4000)
    copy = pickle.loads(pickle.dumps(error.value))
    assert isinstance(copy, DataError) and (str(copy), copy.key) == (str(error.value), "storage.path")


def test_sweeper_data_rebuilds_what_a_trial_refused(cli, write_spec) -> None:
    spec = write_spec(SPEC)
    assert cli("data", spec)[0] == 0
    storage = StorageLocation(path="sweeper-store")
    manifest = read_manifest(storage, cache_name(load_spec(spec).data, storage))
    train = Path(manifest.uri) / manifest.train.data.file
    clean = train.read_bytes()
    overwrite_with_valid_ids(train)
    code, out, err = cli("data", spec)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == (f"{Path(manifest.uri).resolve()}: {manifest.train.data.file} did not match the checksums "
                        "in its manifest; the cache was built again")
    assert lines[1].startswith("t: prepared in ")
    assert train.read_bytes() == clean
    code, out, _ = cli("data", spec)
    assert code == 0 and out.splitlines()[0].endswith("(nothing to do)")
