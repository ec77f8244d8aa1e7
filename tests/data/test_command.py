"""`sweeper data` as a user meets it: what it prints, that a second call does nothing, and one exact
line on stderr with exit code 2 for every bad input, leaving nothing behind."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from sweeper.storage import StorageLocation
from sweeper.data import cache_name
from sweeper.data.tokenizer import load_pretrained
from sweeper.spec import load_spec

from .helpers import S3Server, gpt2, leftovers, numbered_lines

REPO = Path(__file__).resolve().parents[2]
SPEC = """\
version: 1
name: t
data:
  train: {train}
  tokenizer: {tokenizer}
  seq_len: 16
  validation_tokens: 64
models:
  tiny: {{d_model: 32, layers: 1, heads: 2, h_f: 64}}
grid:
  family: ar
  model: tiny
  unique_tokens: {unique_tokens}
"""
FILES = "{kind: files, paths: [corpus.txt]}"
GPT2 = "{kind: pretrained, name: gpt2, vocab_size: 50257}"


def spec_text(train: str = FILES, tokenizer: str = GPT2, unique_tokens: str = "[1k, 2k]") -> str:
    return SPEC.format(train=train, tokenizer=tokenizer, unique_tokens=unique_tokens)


@pytest.fixture
def corpus(write_spec) -> Path:
    path = write_spec(numbered_lines(200), name="corpus.txt")
    return path


def test_prepares_then_says_it_already_has(cli, write_spec, corpus: Path) -> None:
    spec = write_spec(spec_text())
    code, out, err = cli("data", spec)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    location = str(Path.cwd().resolve() / "sweeper-store" / "data" / cache_name(load_spec(spec).data,
                                                                                StorageLocation(path="sweeper-store")))
    assert lines[0].startswith("t: prepared in ") and lines[0].endswith(f" s at {location}")
    assert lines[1] == ("  tokenizer   pretrained: GPT-2 BPE (gpt2); 50,257 ids, end of document = 50256; "
                        f"fingerprint {load_pretrained(gpt2()).fingerprint[:12]}")
    assert lines[2] == "  train       corpus.txt"
    assert lines[3].startswith("  validation  64 tokens (4 documents), held out from the start of the train source, "
                               "before every pool; ")
    assert lines[4].split() == ["pool", "U", "tokens", "documents", "bytes/token"]
    assert lines[5].split()[:2] == ["1k", "1,000"] and lines[6].split()[:2] == ["2k", "2,000"]
    assert lines[7] == "  cache       2,000 train + 64 validation tokens as uint16 (4,128 bytes)"
    code, again, _ = cli("data", spec)
    assert code == 0 and again.splitlines()[0] == f"t: already prepared at {location} (nothing to do)"
    assert again.splitlines()[1:] == lines[1:]


def test_the_smoke_spec_shows_its_entropy_rate(cli, write_spec) -> None:
    code, out, _ = cli("data", REPO / "tests" / "specs" / "smoke.yaml")
    assert code == 0
    assert "  entropy     1.1192 nats/symbol (1.6146 bits): the irreducible loss per symbol under the `symbols` " \
           "tokenizer" in out.splitlines()


def test_the_quickstart_prepares_offline(cli, write_spec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = cli("data", REPO / "sweeps" / "quickstart.yaml")  # bundled text, a BPE learned here
    assert (code, err) == (0, "")
    pools = [line.split()[:2] for line in out.splitlines() if line.split()[:1] in (["8k"], ["32k"], ["100k"],
                                                                                   ["300k"], ["1M"])]
    assert pools == [["8k", "8,000"], ["32k", "32,000"], ["100k", "100,000"], ["300k", "300,000"],
                     ["1M", "1,000,000"]], out
    code, out, _ = cli("data", REPO / "sweeps" / "quickstart.yaml")
    assert code == 0 and "already prepared" in out.splitlines()[0]


def test_the_hidden_markov_study_prepares_offline_and_shows_its_floor(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = cli("data", REPO / "sweeps" / "hmm-cpu.yaml")
    assert (code, err) == (0, "")
    assert "  entropy     0.9742 nats/symbol (1.4054 bits): the irreducible loss per symbol under the `symbols` " \
           "tokenizer" in out.splitlines()
    pools = [line.split()[:2] for line in out.splitlines()[6:12]]
    assert pools == [["4k", "4,000"], ["8k", "8,000"], ["16k", "16,000"], ["100k", "100,000"],
                     ["300k", "300,000"], ["1M", "1,000,000"]]


def held_out_tokens_left(corpus: Path, validation_tokens: int) -> int:
    """What a held-out pool can hold: the corpus's GPT-2 tokens after the document the validation set cuts."""
    tokenizer = load_pretrained(gpt2())
    lengths = [len(ids) for ids in (tokenizer.encode_packed([line])[0] for line in corpus.read_text().splitlines())]
    total = 0
    for i, n in enumerate(lengths):
        total += n
        if total >= validation_tokens:
            return sum(lengths[i + 1:])
    return 0


@pytest.mark.parametrize("case", ["missing file", "empty source", "text field", "too large", "no tokenizer",
                                  "vocab size"])
def test_bad_input_is_one_line_and_exit_2(cli, write_spec, corpus: Path, case: str) -> None:
    write_spec("\n\n", name="blank.txt")
    write_spec(json.dumps({"body": "no text field here"}) + "\n", name="records.jsonl")
    spec, message = {
        "missing file": (spec_text(train="{kind: files, paths: ['missing/*.txt']}"),
                         "data.train.paths[0]: no file matches 'missing/*.txt'"),
        "empty source": (spec_text(train="{kind: files, paths: [blank.txt]}"),
                         "data.train: the source holds no text: no documents, or only blank ones"),
        "text field": (spec_text(train="{kind: files, paths: [records.jsonl]}"),
                       f"data.train.text_field: 'text' is not a field of {Path('records.jsonl').resolve()}:1 "
                       "(fields: body)"),
        "too large": (spec_text(unique_tokens="1M"),
                      f"data.train: the source holds {held_out_tokens_left(corpus, 64):,} tokens after the 64 "
                      "validation tokens held out from its start, fewer than the largest pool's unique_tokens "
                      "1,000,000: lower unique_tokens or use a larger source"),
        "no tokenizer": (spec_text(tokenizer="{kind: pretrained, file: tokenizers/none.json, vocab_size: 100}"),
                         "data.tokenizer.file: no such file tokenizers/none.json"),
        "vocab size": (spec_text(tokenizer="{kind: pretrained, name: gpt2, vocab_size: 50304}"),
                       "data.tokenizer.vocab_size: GPT-2 BPE (gpt2) has 50,257 tokens, but the spec says "
                       "vocab_size: 50304; set vocab_size: 50257"),
    }[case]
    code, out, err = cli("data", write_spec(spec))
    assert (code, out) == (2, "")
    assert err == f"error: spec.yaml {message}\n"
    assert leftovers(Path("sweeper-store")) == []


def s3_profile(write_spec, endpoint: str, path: str) -> Path:
    local = (REPO / "backends" / "local.yaml").read_text()
    assert "storage:\n  path: sweeper-store\n" in local
    text = local.replace("storage:\n  path: sweeper-store\n", f"storage:\n  path: {path}\n  endpoint: {endpoint}\n")
    return write_spec(text, name="s3.yaml")


def test_an_unreachable_bucket(cli, write_spec, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    spec = write_spec(spec_text())
    profile = s3_profile(write_spec, endpoint, "s3://bucket/prefix")
    code, out, err = cli("data", spec, "--backend", "s3.yaml")
    name = cache_name(load_spec(spec).data, StorageLocation(path="s3://bucket/prefix"))
    assert (code, out) == (2, "") and profile.exists()
    assert err.startswith(f"error: s3.yaml storage.endpoint: cannot reach {endpoint} for "
                          f"s3://bucket/prefix/data/{name}/: Could not connect to the endpoint URL")
    assert err.count("\n") == 1


def test_an_unauthorised_bucket(cli, write_spec, corpus: Path, s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    spec = write_spec(spec_text())
    s3_profile(write_spec, s3.endpoint, f"s3://{s3.bucket}/cli")
    code, out, err = cli("data", spec, "--backend", "s3.yaml")
    name = cache_name(load_spec(spec).data, StorageLocation(path=f"s3://{s3.bucket}/cli"))
    assert (code, out) == (2, "")
    assert err == (f"error: s3.yaml storage.path: access denied to s3://{s3.bucket}/cli/data/{name}/ at {s3.endpoint} "
                   "(SignatureDoesNotMatch): check the AWS credentials in the environment and the bucket's "
                   "permissions\n")


def test_a_cluster_profile_without_its_storage_variable(cli, write_spec, corpus: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWEEPER_STORAGE", raising=False)
    write_spec((REPO / "backends" / "cluster.yaml").read_text(), name="backends/cluster.yaml")
    code, out, err = cli("data", write_spec(spec_text()), "--cluster")
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and "SWEEPER_STORAGE" in err and err.count("\n") == 1
