"""Pools and the validation set as trials see them: nested, exact, disjoint, cached once."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from sweeper.data import DataError, find, open_pool, open_tokenizer, open_validation, prepare
from sweeper.storage import StorageLocation

from .helpers import files_data, leftovers, numbered_lines, synthetic_data


def documents_in(tokens: np.ndarray, tokenizer) -> list[str]:
    """Decoded documents (split at the end-of-document id); the first and last may be cut."""
    ends = np.flatnonzero(np.asarray(tokens) == tokenizer.eod_id)
    pieces = np.split(np.asarray(tokens), ends + 1)
    return [tokenizer.decode(p[p != tokenizer.eod_id]) for p in pieces if len(p)]


def doc_numbers(texts: list[str]) -> set[int]:
    return {int(m) for text in texts for m in re.findall(r"doc(\d+)", text)}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(numbered_lines(400))
    return path


def test_pools_are_exact_nested_prefixes(corpus: Path, storage: StorageLocation) -> None:
    sizes = [1000, 2500, 4000]
    manifest = prepare(files_data([str(corpus)]), sizes, storage).manifest
    pools = [open_pool(manifest, u) for u in sizes]
    assert [len(p) for p in pools] == sizes
    assert [(p.unique_tokens, p.tokens) for p in manifest.pools] == [(u, u) for u in sizes]
    for small, large in zip(pools, pools[1:]):
        assert np.array_equal(small, large[:len(small)])
    assert pools[0].dtype == np.uint16 and not pools[0].flags.writeable
    assert len(open_validation(manifest)) == 64
    # Documents are packed with GPT-2's end-of-document id after each.
    tokenizer = open_tokenizer(manifest)
    assert manifest.eod_id == 50256 and manifest.vocab_size == 50257
    whole = documents_in(pools[-1], tokenizer)
    assert whole[1].startswith("doc") and whole[1].endswith(".")
    # Per-pool counts: documents begun, and text bytes (the cut last document pro rata).
    for info, pool in zip(manifest.pools, pools):
        ends = int((np.asarray(pool) == manifest.eod_id).sum())
        assert info.documents == ends + (pool[-1] != manifest.eod_id)
        texts = documents_in(pool, tokenizer)
        whole_bytes = sum(len(t.encode()) for t in texts[:ends])
        assert whole_bytes <= info.text_bytes <= whole_bytes + 120


def test_held_out_validation_is_the_start_and_overlaps_no_pool(corpus: Path, storage: StorageLocation) -> None:
    manifest = prepare(files_data([str(corpus)], validation_tokens=100), [3000], storage).manifest
    tokenizer = open_tokenizer(manifest)
    validation = doc_numbers(documents_in(open_validation(manifest), tokenizer))
    pool = doc_numbers(documents_in(open_pool(manifest, 3000), tokenizer))
    assert manifest.held_out and validation == set(range(len(validation)))
    assert not validation & pool
    assert min(pool) == max(validation) + 1  # the pool starts at the document after the cut one


def test_a_separate_validation_source_never_overlaps(tmp_path: Path, storage: StorageLocation) -> None:
    train, validation = tmp_path / "train.txt", tmp_path / "validation.txt"
    train.write_text(numbered_lines(300))
    # The validation file repeats three train documents: the pools must skip them.
    validation.write_text(numbered_lines(3, start=5) + numbered_lines(50, start=1000))
    data = files_data([str(train)], validation=[str(validation)], validation_tokens=800)
    manifest = prepare(data, [3000], storage).manifest
    tokenizer = open_tokenizer(manifest)
    held = doc_numbers(documents_in(open_validation(manifest), tokenizer))
    pool = doc_numbers(documents_in(open_pool(manifest, 3000), tokenizer))
    assert {5, 6, 7} <= held and not held & pool
    assert not manifest.held_out and manifest.dropped_documents == 3
    assert {4, 8} <= pool


def test_the_second_call_is_a_no_op_and_smaller_pools_only_touch_the_manifest(corpus: Path,
                                                                             storage: StorageLocation) -> None:
    data = files_data([str(corpus)])
    first = prepare(data, [2000, 4000], storage)
    files = {p: p.stat().st_mtime_ns for p in Path(first.manifest.uri).iterdir()}
    again = prepare(data, [4000, 2000], storage)
    assert (first.action, again.action) == ("built", "reused")
    assert again.manifest == first.manifest
    assert {p: p.stat().st_mtime_ns for p in Path(first.manifest.uri).iterdir()} == files
    more = prepare(data, [3000], storage)
    assert more.action == "updated" and [p.unique_tokens for p in more.manifest.pools] == [2000, 3000, 4000]
    assert more.manifest.train == first.manifest.train
    assert find(data, storage) == more.manifest


def test_a_larger_pool_extends_the_array_and_keeps_the_old_prefix(corpus: Path, storage: StorageLocation) -> None:
    data = files_data([str(corpus)])
    small = prepare(data, [1500], storage).manifest
    before = np.array(open_pool(small, 1500))
    large = prepare(data, [5000], storage)
    assert large.action == "built"
    assert np.array_equal(open_pool(large.manifest, 1500), before)
    assert [p.unique_tokens for p in large.manifest.pools] == [1500, 5000]


def test_synthetic_pools_and_validation_streams(storage: StorageLocation) -> None:
    held = prepare(synthetic_data(), [5000], storage).manifest
    apart = prepare(synthetic_data(separate_validation=True), [5000], storage).manifest
    # Same train stream either way, except that holding out moves the pools past the validation documents.
    assert held.held_out and not apart.held_out
    assert not np.array_equal(open_validation(held), open_validation(apart))
    # 1,024 validation tokens cut the 4th document of 257, so the held-out pool starts at the 5th.
    assert np.array_equal(open_pool(held, 5000)[:257 * 3], np.array(open_pool(apart, 5000))[257 * 4:257 * 7])
    pool = np.asarray(open_pool(held, 5000))
    assert pool.max() == 64 and set(np.flatnonzero(pool == 64) % 257) == {256}


def test_a_vocabulary_past_uint16_is_stored_as_uint32(tmp_path: Path, storage: StorageLocation) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    from sweeper.spec import TokenizerSpec

    words = {"[UNK]": 0, **{f"w{i}": i + 1 for i in range(69_998)}, "<|endoftext|>": 69_999}  # w{i} -> i + 1
    tokenizer = Tokenizer(models.WordLevel(words, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(tmp_path / "words.json"))
    (tmp_path / "text.txt").write_text("".join(f"w{i} w65000 w69997\n" for i in range(40)))
    spec = TokenizerSpec(kind="pretrained", file=str(tmp_path / "words.json"), vocab_size=70_000)
    manifest = prepare(files_data([str(tmp_path / "text.txt")], tokenizer=spec, validation_tokens=20), [40],
                       storage).manifest
    assert manifest.dtype == "<u4"
    # 4 tokens a document: the 20 validation tokens are the first 5, the pool starts at the 6th.
    assert list(open_pool(manifest, 7)) == [6, 65001, 69998, 69999, 7, 65001, 69998]


def test_open_pool_refuses_more_than_was_prepared(corpus: Path, storage: StorageLocation) -> None:
    manifest = prepare(files_data([str(corpus)]), [1000], storage).manifest
    with pytest.raises(DataError, match="holds 1,000 train tokens, not 1,001"):
        open_pool(manifest, 1001)


def test_too_large_a_pool_leaves_nothing_behind(corpus: Path, storage: StorageLocation) -> None:
    with pytest.raises(DataError) as error:
        prepare(files_data([str(corpus)]), [1_000_000], storage)
    assert re.fullmatch(r"data\.train: the source holds [\d,]+ tokens after the 64 validation tokens held out from "
                        r"its start, fewer than the largest pool's unique_tokens 1,000,000: lower unique_tokens or "
                        r"use a larger source", str(error.value))
    assert leftovers(Path(storage.path)) == []


def test_progress_reports_each_stage_to_its_total(storage: StorageLocation) -> None:
    from sweeper.spec import BundledSource, DataSpec, TokenizerSpec

    events: list[tuple[str, int, int | None]] = []
    data = DataSpec(train=BundledSource(kind="bundled"), seq_len=32, validation_tokens=1000,
                    tokenizer=TokenizerSpec(kind="train_bpe", vocab_size=300, train_text_bytes=50_000))
    prepare(data, [4000], storage, progress=lambda *event: events.append(event))
    last = {stage: (done, total) for stage, done, total in events}
    assert last == {"tokenizer": (50_000, 50_000), "validation": (1000, 1000), "train": (4000, 4000)}
    assert [s for s, _, _ in events].index("train") > [s for s, _, _ in events].index("validation")


def test_a_source_that_changed_under_its_cache_is_refused(tmp_path: Path, storage: StorageLocation) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(numbered_lines(400))
    data = files_data([str(corpus)])
    old = prepare(data, [1000], storage).manifest
    corpus.write_text(numbered_lines(400).replace("river", "rivet"))  # same size, other text
    with pytest.raises(DataError) as error:
        prepare(data, [2000], storage)
    assert str(error.value) == (f"data.train: the source no longer gives the tokens cached at {old.uri} (its first "
                                "1,000 tokens differ): pin the source (e.g. `revision`) or delete that cache folder "
                                "to rebuild it")
    assert find(data, storage) == old  # the cache is as it was
