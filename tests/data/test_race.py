"""Publishing is atomic: racing preparers (real processes) never corrupt a cache, and a preparer killed
half-way leaves nothing that anyone reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sweeper.storage import StorageLocation
from sweeper.data import open_pool, prepare
from sweeper.data.manifest import local_path, read_manifest
from sweeper.data.cache import sha256_file

from .helpers import S3Server, files_data, numbered_lines

REPO = Path(__file__).resolve().parents[2]
PREPARER = """
import json, sys, time
from pathlib import Path
from sweeper.data import StorageLocation, prepare
from sweeper.spec import DataSpec, FilesSource, TokenizerSpec

corpus, path, endpoint, unique_tokens, barrier = sys.argv[1:6]
data = DataSpec(train=FilesSource(kind="files", paths=(corpus,)), seq_len=16, validation_tokens=64,
                tokenizer=TokenizerSpec(kind="pretrained", name="gpt2", vocab_size=50257))
storage = StorageLocation(path=path, endpoint=endpoint or None)
Path(barrier + ".ready." + sys.argv[6]).touch()
while not Path(barrier).exists():
    time.sleep(0.01)
started = time.time()
prepared = prepare(data, [int(unique_tokens)], storage)
print(json.dumps({"action": prepared.action, "train": prepared.manifest.train.data.sha256,
                  "started": started, "ended": time.time()}))
"""


def start(corpus: Path, storage: StorageLocation, unique_tokens: int, barrier: Path, n: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PREPARER, str(corpus), storage.path, storage.endpoint or "",
                             str(unique_tokens), str(barrier), str(n)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def race(corpus: Path, storage: StorageLocation, tmp_path: Path) -> list[dict]:
    barrier = tmp_path / "go"
    racers = [start(corpus, storage, 200_000, barrier, n) for n in range(2)]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"go.ready.{n}").exists() for n in range(2)):
        assert time.monotonic() < deadline and all(r.poll() is None for r in racers), racers[0].stderr.read()
        time.sleep(0.01)
    barrier.touch()  # both start preparing the same cache at once
    results = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
        results.append(json.loads(out))
    assert max(r["started"] for r in results) < min(r["ended"] for r in results), "the preparers did not overlap"
    return results


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(numbered_lines(14_000))  # ~240k GPT-2 tokens: each racer tokenizes for about a second
    return path


def assert_whole(storage: StorageLocation, name: str) -> None:
    manifest = read_manifest(storage, name)
    assert manifest is not None
    for data in (manifest.train.data, manifest.validation.data, manifest.documents_index, manifest.tokenizer.data):
        assert sha256_file(local_path(manifest, data)) == data.sha256
    assert len(open_pool(manifest, 200_000)) == 200_000


def test_two_processes_racing_on_a_folder(corpus: Path, storage: StorageLocation, tmp_path: Path) -> None:
    results = race(corpus, storage, tmp_path)
    assert [r["action"] for r in results] == ["built", "built"]  # both did the work: no locks
    assert results[0]["train"] == results[1]["train"]  # and made the same bytes
    data_folder = Path(storage.path) / "data"
    (cache,) = [p for p in data_folder.iterdir() if not p.name.startswith(".")]
    assert_whole(storage, cache.name)
    assert not [p.name for p in data_folder.iterdir() if p.name.startswith(".staging")]
    assert not [p.name for p in cache.iterdir() if p.name.startswith(".")]
    assert prepare(files_data([str(corpus)]), [200_000], storage).action == "reused"


@pytest.mark.slow
def test_two_processes_racing_on_s3(corpus: Path, s3: S3Server, tmp_path: Path) -> None:
    remote = s3.storage("race")
    results = race(corpus, remote, tmp_path)
    assert results[0]["train"] == results[1]["train"]
    prepared = prepare(files_data([str(corpus)]), [200_000], remote)
    assert prepared.action == "reused"
    assert_whole(remote, prepared.manifest.name)


def test_a_killed_preparer_publishes_nothing(tmp_path: Path, storage: StorageLocation) -> None:
    corpus = tmp_path / "big.txt"
    corpus.write_text(numbered_lines(60_000))
    barrier = tmp_path / "go"
    barrier.touch()
    victim = start(corpus, storage, 900_000, barrier, 0)
    data_folder = Path(storage.path) / "data"
    deadline = time.monotonic() + 60
    while not list(data_folder.glob(".staging-*/train")) or \
            next(data_folder.glob(".staging-*/train")).stat().st_size < 100_000:
        assert victim.poll() is None and time.monotonic() < deadline, victim.communicate()
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert not list(data_folder.rglob("manifest.json"))
    assert prepare(files_data([str(corpus)]), [1000], storage).action == "built"  # rebuilt, not misread
    assert not list(data_folder.glob(".staging-*"))  # the dead preparer's staging folder is gone too
    assert np.asarray(open_pool(read_manifest(storage, next(data_folder.glob("files-*")).name), 1000)).size == 1000
