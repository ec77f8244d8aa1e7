"""Checking a token cache's files against the checksums its manifest records.

Every data file's manifest entry holds its size and SHA-256 and the SHA-256 of each CHUNK_BYTES piece
of it. A trial checks the chunks it reads (the prefix of the train array that holds its pool, the
whole validation array) when it opens them, once per process: reused worker processes pay once, and a
pool reads only its own chunks. That costs ~1.2 ms per MB on one core of a 2-core x86-64 machine
(64 MB in 76 ms).

Caches written before chunk checksums existed record the whole file's SHA-256 only: a trial then
checks each file whole against it, and `prepare` (`sweeper data`, `sweeper run`) records the chunk
checksums of such a cache once it has checked them, without rebuilding anything.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sweeper.data.manifest import DataFile

CHUNK_BYTES = 16 << 20

# (file path, file SHA-256) -> how many bytes from its start this process has found intact
_verified: dict[tuple[str, str], int] = {}


def file_digests(path: Path, chunk_bytes: int = CHUNK_BYTES) -> tuple[str, tuple[str, ...]]:
    """(SHA-256 of the file, SHA-256 of each `chunk_bytes` piece), in one read."""
    whole = hashlib.sha256()
    chunks = []
    with open(path, "rb") as f:
        while piece := f.read(chunk_bytes):
            whole.update(piece)
            chunks.append(hashlib.sha256(piece).hexdigest())
    return whole.hexdigest(), tuple(chunks)


def check_file(path: Path, data: DataFile, *, upto: int | None = None) -> str | None:
    """None when the first `upto` bytes of `path` (all of it by default) match `data`'s checksums,
    else what is wrong, as the end of a sentence that names the file."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "is missing"
    if size != data.bytes:
        return f"holds {size:,} bytes, not the {data.bytes:,} its manifest records"
    want = data.bytes if upto is None else min(upto, data.bytes)
    key = (str(path), data.sha256)
    done = _verified.get(key, 0)
    if done >= want:
        return None
    if not data.chunks:  # a cache from before chunk checksums: the whole file, once
        if file_digests(path)[0] != data.sha256:
            return "does not match the SHA-256 its manifest records"
        _verified[key] = data.bytes
        return None
    step = data.chunk_bytes
    first, last = done // step, -(-want // step)
    if len(data.chunks) != -(-data.bytes // step):
        return "has a manifest entry whose chunk checksums do not cover it"
    with open(path, "rb") as f:
        f.seek(first * step)
        for i in range(first, last):
            if hashlib.sha256(f.read(step)).hexdigest() != data.chunks[i]:
                return (f"does not match its checksum in the manifest at bytes {i * step:,}-"
                        f"{min((i + 1) * step, data.bytes):,}")
    _verified[key] = min(last * step, data.bytes)
    return None


def corrupt_message(where: str, problem: str) -> str:
    """The one sentence for a cache file that fails its check: `where` names it, `problem` says how."""
    return (f"the token cache file {where} {problem} (corrupted or cut short); run `sweeper data` with this "
            "sweep's spec to rebuild the cache (then `sweeper run --retry-failed` for trials that failed on it)")


def forget(path: Path) -> None:
    """Check `path` again next time (it was replaced)."""
    for key in [k for k in _verified if k[0] == str(path)]:
        del _verified[key]
