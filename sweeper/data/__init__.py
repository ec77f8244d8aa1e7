"""The data layer: sources, tokenizers, nested unique-data pools and a shared token cache.

A sweep names a train source, an optional validation source and a tokenizer (DataSpec). Preparing
it tokenizes documents, appends an end-of-document id to each, packs them, and caches

- one train array per (train source, validation source and size, tokenizer) holding the largest
  pool any trial needs; the pool for U is its first U tokens, exactly U, so smaller pools are
  prefixes of larger ones;
- one validation array of exactly `validation_tokens` tokens that overlaps no pool: the start of
  the validation source, or without one, the start of the train source, the pools beginning at the
  next document;

as uint16 (uint32 when the vocabulary needs it) with a manifest: sources, tokenizer fingerprint,
counts nominal and actual, SHA-256 of every file and of each of its 16 MiB chunks. Opening a pool
checks the chunks it spans (once per process); `prepare` checks every file and rebuilds a cache that
fails (sweeper.data.verify).

Interface (what `sweeper data`, the trainer and the run driver use):

    storage  = profile.storage_location()         # or StorageLocation(path=..., endpoint=...)
    prepared = prepare(spec.data, [t.unique_tokens for t in plan.trials], storage, progress=None)
    prepared.action                                          # "built" | "updated" | "reused" (a no-op)
    prepared.repaired                                        # files that failed their checksums (rebuilt)
    manifest = prepared.manifest                             # or find(spec.data, storage) -> Manifest | None
    tokens   = open_pool(manifest, unique_tokens)            # np.memmap, exactly U tokens, read-only
    val      = open_validation(manifest)                     # np.memmap, validation_tokens tokens
    manifest.vocab_size, manifest.eod_id                     # the tokenizer's size and end-of-document id
    open_tokenizer(manifest).decode(ids)                     # for samples

A Manifest is a small frozen dataclass that pickles: pass it to workers, which call open_pool there.

`progress`, if given, is called as progress(stage, done, total) with stage "tokenizer" (bytes of
BPE training text), "validation" or "train" (tokens). Every mistake a user can fix is a DataError
(a UserError) whose message starts with the spec or profile key to fix, and nothing half-written is
left behind.

Where things live:
- the cache: `<storage.path>/data/<slug>-<key>/` (manifest.json, train-<sha256>.bin,
  validation-<sha256>.bin, documents-<sha256>.bin, tokenizer-<sha256>.json); trained BPEs in
  `<storage.path>/data/tokenizers/`. storage.path is the profile's folder (backends/local.yaml:
  ./sweeper-store) or s3://bucket/prefix (backends/cluster.yaml: $SWEEPER_STORAGE).
- a sweep that needs a larger pool rebuilds the train array longer (checking that the old one is its
  prefix) under a new content name; the old files stay, since a reader may still hold them.
- node-local copies of an s3:// cache: $SWEEPER_DATA_CACHE, default ~/.cache/sweeper/data/files/,
  one file per SHA-256, verified on download; a local storage folder is memory-mapped in place.

Heavy libraries (datasets, tokenizers, boto3, pyarrow) are imported only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

# Exports load on first use, so `import sweeper.cli.data` (the CLI's) stays free of numpy.
_EXPORTS = {
    "DataError": "sweeper.data.errors",
    "DataFile": "sweeper.data.manifest",
    "Manifest": "sweeper.data.manifest",
    "PoolInfo": "sweeper.data.manifest",
    "TokenArray": "sweeper.data.manifest",
    "TokenizerInfo": "sweeper.data.manifest",
    "open_pool": "sweeper.data.manifest",
    "open_tokenizer": "sweeper.data.manifest",
    "open_validation": "sweeper.data.manifest",
    "Prepared": "sweeper.data.pools",
    "cache_name": "sweeper.data.pools",
    "find": "sweeper.data.pools",
    "prepare": "sweeper.data.pools",
    "StorageLocation": "sweeper.storage",
    "entropy_rate_nats": "sweeper.data.synthetic",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sweeper.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
