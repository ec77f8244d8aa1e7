"""Packing: documents -> token ids with an end-of-document id after each -> one flat array on disk.

A reader thread pulls batches from the source while the calling thread tokenizes the previous batch
(`tokenizers` encodes a batch on all cores and releases the GIL) and appends it to the file, so
reading, tokenizing and writing overlap. A `Cursor` hands out whole documents; `write_tokens` takes
documents until it holds exactly `limit` tokens, cutting the last one, and leaves the cursor at the
next document, so whatever is cut from the same stream next starts on a document boundary.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sweeper.data.sources import Document
from sweeper.data.tokenizer import Tokenizer

Progress = Callable[[str, int, int | None], None]  # (stage, done, total): tokens, or bytes for "tokenizer"
_QUEUE_DEPTH = 4


@dataclass(slots=True)
class TokenBatch:
    ids: np.ndarray  # all documents' ids, each followed by the end-of-document id
    lengths: np.ndarray  # tokens per document, end of document included
    text_bytes: np.ndarray  # UTF-8 bytes per document (symbol count for symbol documents)
    hashes: list[bytes]  # 8-byte BLAKE2b of each document, for the train/validation overlap check
    next_document: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Packed:
    path: Path
    tokens: int
    documents: int  # documents begun (the last may be cut)
    text_bytes: int  # of those documents, the cut one pro rata
    index: np.ndarray  # (documents, 2) int64: cumulative [token end, text byte end] per document
    dropped_documents: int  # skipped because the validation set holds the same text


class Cursor:
    """Tokenized documents of one source, in order, read ahead by a thread."""

    def __init__(self, batches: Iterator[list[Document]], tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self._queue: queue.Queue[object] = queue.Queue(_QUEUE_DEPTH)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(batches,), daemon=True)
        self._thread.start()
        self._current: TokenBatch | None = None

    def _read(self, batches: Iterator[list[Document]]) -> None:
        try:
            for batch in batches:
                if not self._put(batch):
                    return
            self._put(None)
        except BaseException as error:  # re-raised in the consuming thread
            self._put(error)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def close(self) -> None:
        self._stop.set()

    def batch(self) -> TokenBatch | None:
        """The batch holding the next unread document, or None at the end of the source."""
        if self._current is not None and self._current.next_document < len(self._current.lengths):
            return self._current
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        if item is None:
            self._current = None
            return None
        self._current = self._tokenize(item)  # type: ignore[arg-type]
        return self._current

    def _tokenize(self, documents: list[Document]) -> TokenBatch:
        raw = [d.encode("utf-8") if isinstance(d, str) else d.tobytes() for d in documents]
        sizes = np.fromiter((len(r) if isinstance(d, str) else d.size for r, d in zip(raw, documents)), np.int64,
                            len(documents))
        ids, lengths = self.tokenizer.encode_packed(documents)
        hashes = [hashlib.blake2b(r, digest_size=8).digest() for r in raw]
        return TokenBatch(ids, lengths, sizes, hashes)


def write_tokens(cursor: Cursor, path: Path, *, dtype: np.dtype, limit: int, stage: str,
                 progress: Progress | None = None, drop: frozenset[bytes] = frozenset(),
                 keep_hashes: set[bytes] | None = None) -> Packed:
    """Append whole documents from `cursor` to `path` until it holds `limit` tokens (the last document
    cut there), skipping documents whose hash is in `drop` and adding the hashes of those taken to
    `keep_hashes`. The cursor is left at the document after the last one taken."""
    token_ends: list[np.ndarray] = []
    byte_ends: list[np.ndarray] = []
    tokens = text_bytes = dropped = 0
    with open(path, "wb") as out:
        while tokens < limit:
            batch = cursor.batch()
            if batch is None:  # the source ended first: the caller says how many tokens it had
                break
            first = batch.next_document
            waiting = len(batch.lengths) - first
            keep = np.ones(waiting, dtype=bool)
            if drop:
                keep = np.fromiter((h not in drop for h in batch.hashes[first:]), bool, waiting)
            kept = first + np.flatnonzero(keep)  # document numbers within the batch
            lengths = batch.lengths[kept]
            ends = tokens + np.cumsum(lengths)
            taken = min(len(kept), int(np.searchsorted(ends, limit, side="left")) + 1)
            consumed = int(kept[taken - 1]) + 1 - first if taken < len(kept) else waiting
            dropped += consumed - taken
            offsets = np.concatenate(([0], np.cumsum(batch.lengths)))
            if taken == consumed:  # nothing dropped: one contiguous slice
                chunk = batch.ids[offsets[first]:offsets[first + taken]]
            else:
                pieces = [batch.ids[offsets[d]:offsets[d + 1]] for d in kept[:taken]]
                chunk = np.concatenate(pieces) if pieces else batch.ids[:0]
            chunk = chunk[:limit - tokens].astype(dtype)
            out.write(chunk.tobytes())
            # The document that reaches the limit is cut there; its text bytes count pro rata.
            doc_ends = np.minimum(ends[:taken], limit)
            got = np.diff(doc_ends, prepend=tokens)
            doc_bytes = np.round(batch.text_bytes[kept[:taken]] * got / lengths[:taken]).astype(np.int64)
            token_ends.append(doc_ends)
            byte_ends.append(text_bytes + np.cumsum(doc_bytes))
            if keep_hashes is not None:
                keep_hashes.update(batch.hashes[d] for d in kept[:taken])
            tokens += len(chunk)
            text_bytes += int(doc_bytes.sum())
            batch.next_document = first + consumed
            if progress:
                progress(stage, tokens, limit)
    index = np.stack([np.concatenate([np.zeros(0, np.int64), *token_ends]),
                      np.concatenate([np.zeros(0, np.int64), *byte_ends])], axis=1).astype(np.int64)
    return Packed(path=path, tokens=tokens, documents=len(index), text_bytes=text_bytes, index=index,
                  dropped_documents=dropped)


def pool_statistics(index: np.ndarray, unique_tokens: int) -> tuple[int, int]:
    """(documents begun, text bytes) in the first `unique_tokens` tokens, from a packed index."""
    documents = int(np.searchsorted(index[:, 0], unique_tokens, side="left")) + 1
    documents = min(documents, len(index))
    end_tokens, end_bytes = index[documents - 1]
    start_tokens, start_bytes = index[documents - 2] if documents > 1 else (0, 0)
    span = end_tokens - start_tokens
    fraction = (min(unique_tokens, end_tokens) - start_tokens) / span if span else 1.0
    return documents, int(round(start_bytes + (end_bytes - start_bytes) * fraction))
