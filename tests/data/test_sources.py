"""Sources read the documents a user expects, in order, and refuse bad input with the key to fix."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import numpy as np
import pytest

from sweeper.data import DataError, open_pool, open_tokenizer, open_validation, prepare
from sweeper.storage import StorageLocation
from sweeper.data.sources import document_batches
from sweeper.spec import BundledSource, DataSpec, FilesSource, HFSource

from .helpers import files_data, gpt2, leftovers, numbered_lines

STORAGE = StorageLocation(path=".")


def documents(source, **kwargs) -> list[str]:
    return [d for batch in document_batches(source, "data.train", storage=STORAGE, **kwargs) for d in batch]


def test_text_lines_jsonl_parquet_and_gzip_by_glob(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("first line\n\n  \nsecond line\r\n")
    with gzip.open(tmp_path / "corpus" / "b.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "from jsonl", "id": 1}) + "\n\n" + json.dumps({"text": None, "id": 2}) + "\n")
    pq.write_table(pa.table({"text": ["from parquet", None, "again"], "n": [1, 2, 3]}),
                   tmp_path / "corpus" / "c.parquet")
    source = FilesSource(kind="files", paths=(str(tmp_path / "corpus" / "*"),))
    assert documents(source) == ["first line", "second line", "from jsonl", "from parquet", "again"]


def test_one_document_per_file(tmp_path: Path) -> None:
    for name in ("b.md", "a.md"):
        (tmp_path / name).write_text(f"# {name}\n\nbody of {name}\n")
    source = FilesSource(kind="files", paths=(str(tmp_path / "**" / "*.md"),), document="file")
    assert documents(source) == ["# a.md\n\nbody of a.md\n", "# b.md\n\nbody of b.md\n"]


def test_bundled_shakespeare_is_38_plays_in_order() -> None:
    plays = documents(BundledSource(kind="bundled"))
    assert len(plays) == 38 and plays[0].startswith("# A Midsummer Night's Dream")
    assert 5_000_000 < sum(len(p.encode()) for p in plays) < 5_600_000


@pytest.mark.parametrize("build", [
    lambda tmp: (FilesSource(kind="files", paths=(str(tmp / "nothing" / "*.txt"),)),
                 f"data.train.paths[0]: no file matches '{tmp / 'nothing' / '*.txt'}'"),
    lambda tmp: (FilesSource(kind="files", paths=(str(tmp / "missing.txt"),)),
                 f"data.train.paths[0]: no such file {tmp / 'missing.txt'}"),
    lambda tmp: (FilesSource(kind="files", paths=(str(tmp / "data.bin"),)),
                 f"data.train.format: cannot tell the format of {tmp / 'data.bin'}; "
                 "set format: text, jsonl or parquet"),
    lambda tmp: (FilesSource(kind="files", paths=(str(tmp / "records.jsonl"),), text_field="content"),
                 f"data.train.text_field: 'content' is not a field of {tmp / 'records.jsonl'}:1 (fields: text, url)"),
    lambda tmp: (FilesSource(kind="files", paths=(str(tmp / "bad.jsonl"),)),
                 f"data.train.paths: {tmp / 'bad.jsonl'}:2 is not JSON: Expecting value: line 1 column 1 (char 0)"),
    lambda tmp: (FilesSource(kind="files", paths=(str(tmp / "table.parquet"),), text_field="body"),
                 f"data.train.text_field: 'body' is not a column of {tmp / 'table.parquet'} (columns: text)"),
])
def test_bad_files(tmp_path: Path, build) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "data.bin").write_bytes(b"\x00")
    (tmp_path / "records.jsonl").write_text(json.dumps({"text": "a", "url": "u"}) + "\n")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "a"}) + "\nnot json\n")
    pq.write_table(pa.table({"text": ["a"]}), tmp_path / "table.parquet")
    source, message = build(tmp_path)
    with pytest.raises(DataError) as error:
        documents(source)
    assert str(error.value) == message


def test_an_empty_source_leaves_nothing_behind(tmp_path: Path, storage: StorageLocation) -> None:
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    with pytest.raises(DataError) as error:
        prepare(files_data([str(tmp_path / "blank.txt")]), [100], storage)
    assert str(error.value) == "data.train: the source holds no text: no documents, or only blank ones"
    assert leftovers(Path(storage.path)) == []


# --- Hugging Face, through the same `datasets` calls, on a local dataset repository ------------

@pytest.fixture
def hf_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder laid out like a Hub dataset with config `en` and train/validation splits (as C4)."""
    repo = tmp_path / "c4-mini"
    (repo / "en").mkdir(parents=True)
    for split, count, start in (("train", 300, 0), ("validation", 60, 10_000)):
        lines = numbered_lines(count, start=start).splitlines()
        with gzip.open(repo / "en" / f"c4-{split}.00000-of-00001.json.gz", "wt") as f:
            f.writelines(json.dumps({"text": line, "url": f"https://example.org/{i}"}) + "\n"
                         for i, line in enumerate(lines))
    (repo / "README.md").write_text("---\nconfigs:\n- config_name: en\n  data_files:\n"
                                    "  - split: train\n    path: en/c4-train.*.json.gz\n"
                                    "  - split: validation\n    path: en/c4-validation.*.json.gz\n---\n")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return repo


def hf_data(repo: Path, streaming: bool = True, **train: object) -> DataSpec:
    common = {"kind": "hf", "dataset": str(repo), "config": "en", "streaming": streaming}
    return DataSpec(train=HFSource(**common | {"split": "train"} | train),  # type: ignore[arg-type]
                    validation=HFSource(**common | {"split": "validation"}),  # type: ignore[arg-type]
                    tokenizer=gpt2(), seq_len=16, validation_tokens=500)


@pytest.mark.parametrize("streaming", [True, False])
def test_hf_dataset_pools_and_validation_split(hf_repo: Path, storage: StorageLocation, streaming: bool) -> None:
    manifest = prepare(hf_data(hf_repo, streaming), [2000], storage).manifest
    tokenizer = open_tokenizer(manifest)
    pool_text = tokenizer.decode(open_pool(manifest, 2000))
    assert pool_text.startswith("doc0 ") and "doc10000" not in pool_text
    assert tokenizer.decode(open_validation(manifest)).startswith("doc10000 ")
    assert not manifest.held_out and len(open_validation(manifest)) == 500


@pytest.mark.parametrize("change, message", [
    ({"split": "test"}, "data.train.split: {repo}: Bad split: test. Available splits: ['train', 'validation']"),
    ({"config": "fr"}, "data.train.config: {repo}: BuilderConfig 'fr' not found. Available: ['en']"),
    ({"text_field": "body"}, "data.train.text_field: 'body' is not a field of {repo} (fr, train) (fields: text, url)"),
])
def test_hf_bad_settings(hf_repo: Path, storage: StorageLocation, change: dict, message: str) -> None:
    with pytest.raises(DataError) as error:
        prepare(hf_data(hf_repo, **change), [2000], storage)
    expected = message.format(repo=hf_repo)
    if "text_field" in change:
        expected = expected.replace("(fr, train)", "(en, train)")
    assert str(error.value) == expected
    assert leftovers(Path(storage.path)) == []


def test_hf_offline_without_a_local_copy(hf_repo: Path, storage: StorageLocation) -> None:
    data = DataSpec(train=HFSource(kind="hf", dataset="allenai/c4", config="en"), tokenizer=gpt2(), seq_len=16,
                    validation_tokens=100)
    with pytest.raises(DataError, match=r"^data\.train\.dataset: 'allenai/c4' is not in the local Hugging Face "
                                        r"cache and the Hub is offline or unreachable"):
        prepare(data, [1000], storage)


def test_an_unreachable_hub_is_an_error_in_seconds(storage: StorageLocation, monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    data = DataSpec(train=HFSource(kind="hf", dataset="allenai/c4", config="en"), tokenizer=gpt2(), seq_len=16,
                    validation_tokens=100)
    started = time.monotonic()
    with pytest.raises(DataError) as error:
        prepare(data, [1000], storage)
    assert time.monotonic() - started < 5
    assert str(error.value).startswith(f"data.train.dataset: cannot reach the Hugging Face Hub at "
                                       f"http://127.0.0.1:{port} to fetch the dataset 'allenai/c4' (")
    assert leftovers(Path(storage.path)) == []


def test_files_and_hf_give_the_same_tokens_for_the_same_text(hf_repo: Path, storage: StorageLocation,
                                                             tmp_path: Path) -> None:
    text = tmp_path / "same.txt"
    text.write_text(numbered_lines(300))
    from_files = prepare(files_data([str(text)], validation_tokens=500), [2000], storage).manifest
    from_hf = prepare(DataSpec(train=HFSource(kind="hf", dataset=str(hf_repo), config="en"), tokenizer=gpt2(),
                               seq_len=16, validation_tokens=500), [2000], storage).manifest
    assert np.array_equal(open_pool(from_files, 2000), open_pool(from_hf, 2000))
