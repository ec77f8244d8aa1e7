"""Tokenizers: GPT-2's exact ids offline, a trained BPE that is cached and reused, vocab_size checked."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from sweeper.data import DataError, open_pool, open_tokenizer, open_validation, prepare
from sweeper.storage import StorageLocation
from sweeper.data.tokenizer import _bundled_gpt2, load_pretrained
from sweeper.spec import BundledSource, DataSpec, TokenizerSpec

from .helpers import files_data, gpt2, leftovers, numbered_lines


def test_gpt2_by_name_gives_the_canonical_ids_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = load_pretrained(gpt2())
    assert tokenizer.encode_packed(["Hello world"])[0].tolist() == [15496, 995, 50256]
    assert (tokenizer.vocab_size, tokenizer.eod_id) == (50257, 50256)
    assert tokenizer.decode([15496, 995]) == "Hello world"


def test_gpt2_from_its_files_matches_the_name(tmp_path: Path, storage: StorageLocation) -> None:
    encoder = _bundled_gpt2() / "encoder.json"
    by_file = load_pretrained(TokenizerSpec(kind="pretrained", file=str(encoder), vocab_size=50257))
    assert by_file.fingerprint == load_pretrained(gpt2()).fingerprint
    (tmp_path / "hello.txt").write_text("Hello world\n" + numbered_lines(10))
    spec = TokenizerSpec(kind="pretrained", file=str(encoder), vocab_size=50257)
    manifest = prepare(files_data([str(tmp_path / "hello.txt")], tokenizer=spec, validation_tokens=3, seq_len=2),
                       [20], storage).manifest
    # The validation set is the first document, "Hello world" and its end.
    assert open_validation(manifest).tolist() == [15496, 995, 50256]
    assert manifest.tokenizer.fingerprint == by_file.fingerprint


def test_a_vocab_size_mismatch_names_the_key(tmp_path: Path, storage: StorageLocation) -> None:
    (tmp_path / "a.txt").write_text(numbered_lines(20))
    data = files_data([str(tmp_path / "a.txt")], tokenizer=TokenizerSpec(kind="pretrained", name="gpt2",
                                                                         vocab_size=50304))
    with pytest.raises(DataError) as error:
        prepare(data, [100], storage)
    assert str(error.value) == ("data.tokenizer.vocab_size: GPT-2 BPE (gpt2) has 50,257 tokens, but the spec says "
                                "vocab_size: 50304; set vocab_size: 50257")
    assert leftovers(Path(storage.path)) == []


@pytest.mark.parametrize("spec, message", [
    (TokenizerSpec(kind="pretrained", file="no/such/tokenizer.json", vocab_size=100),
     "data.tokenizer.file: no such file no/such/tokenizer.json"),
    (TokenizerSpec(kind="pretrained", name="someone/no-such-tokenizer", vocab_size=100),
     "data.tokenizer.name: the tokenizer 'someone/no-such-tokenizer' is not in the local Hugging Face cache and "
     "the Hub is offline (HF_HUB_OFFLINE); use `file:` for a tokenizer on disk"),
])
def test_a_tokenizer_that_cannot_be_found(spec: TokenizerSpec, message: str, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(DataError) as error:
        load_pretrained(spec)
    assert str(error.value) == message


def test_an_unreachable_hub_fails_in_seconds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import socket

    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    started = time.monotonic()
    with pytest.raises(DataError) as error:
        load_pretrained(TokenizerSpec(kind="pretrained", name="someone/tokenizer", vocab_size=100))
    assert time.monotonic() - started < 5
    assert str(error.value).startswith(f"data.tokenizer.name: cannot reach the Hugging Face Hub at "
                                       f"http://127.0.0.1:{port} to fetch the tokenizer 'someone/tokenizer' (")


def bpe_data(validation_tokens: int, vocab_size: int = 512) -> DataSpec:
    return DataSpec(train=BundledSource(kind="bundled"), seq_len=32, validation_tokens=validation_tokens,
                    tokenizer=TokenizerSpec(kind="train_bpe", vocab_size=vocab_size, train_text_bytes=300_000))


def test_a_trained_bpe_is_deterministic_cached_and_shared(storage: StorageLocation) -> None:
    first = prepare(bpe_data(1000), [5000], storage).manifest
    tokenizers = sorted((Path(storage.path) / "data" / "tokenizers").iterdir())
    assert len(tokenizers) == 1
    # Another validation size is another cache, but the same learned tokenizer, read back, not retrained.
    stamp = tokenizers[0].stat().st_mtime_ns
    second = prepare(bpe_data(2000), [5000], storage).manifest
    assert second.uri != first.uri and second.tokenizer.fingerprint == first.tokenizer.fingerprint
    assert tokenizers[0].stat().st_mtime_ns == stamp
    assert (first.vocab_size, first.eod_id) == (512, 0)
    text = open_tokenizer(first).decode(open_pool(first, 5000)[:40])
    assert "ACT I" in text
    # Learned again from scratch elsewhere: the same merges, so the same ids.
    elsewhere = StorageLocation(path=str(Path(storage.path).parent / "elsewhere"))
    again = prepare(bpe_data(1000), [5000], elsewhere).manifest
    assert again.tokenizer.fingerprint == first.tokenizer.fingerprint
    assert np.array_equal(open_pool(again, 5000), open_pool(first, 5000))


def test_a_bpe_larger_than_its_text_allows(tmp_path: Path, storage: StorageLocation) -> None:
    (tmp_path / "a.txt").write_text(numbered_lines(30))
    spec = TokenizerSpec(kind="train_bpe", vocab_size=5000, train_text_bytes=100_000)
    with pytest.raises(DataError, match=r"^data\.tokenizer\.vocab_size: a byte-level BPE learned only [\d,]+ tokens "
                                        r"from the first 100,000 bytes of the train text, fewer than vocab_size "
                                        r"5,000: lower vocab_size or raise train_text_bytes$"):
        prepare(files_data([str(tmp_path / "a.txt")], tokenizer=spec), [100], storage)
    assert not (Path(storage.path) / "data" / "tokenizers").exists() or \
        not any((Path(storage.path) / "data" / "tokenizers").iterdir())
