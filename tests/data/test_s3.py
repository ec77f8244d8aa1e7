"""A token cache on a real S3-compatible server (SeaweedFS): publish, download to the node, verify."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import boto3
import numpy as np
import pytest

from sweeper.data import DataError, cache_name, open_pool, open_validation, prepare
from sweeper.storage import StorageLocation
from sweeper.spec import DataSpec, FilesSource

from .helpers import S3Server, files_data, gpt2, numbered_lines, synthetic_data


def client(server: S3Server):
    return boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key)


def test_round_trip_through_s3_matches_a_local_cache(s3: S3Server, storage: StorageLocation, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(numbered_lines(300))
    data = files_data([str(corpus)])
    remote = s3.storage("round-trip")
    built = prepare(data, [1000, 3000], remote)
    assert built.action == "built" and built.manifest.uri.startswith("s3://sweeper-test/round-trip/data/")
    keys = {o["Key"].rsplit("/", 1)[-1] for o in
            client(s3).list_objects_v2(Bucket=s3.bucket, Prefix="round-trip/data/")["Contents"]}
    assert "manifest.json" in keys and built.manifest.train.data.file in keys
    # Another node: an empty node-local cache downloads, verifies and memory-maps.
    monkeypatch.setenv("SWEEPER_DATA_CACHE", str(tmp_path / "other-node"))
    again = prepare(data, [1000, 3000], remote)
    assert again.action == "reused"
    pool = open_pool(again.manifest, 3000)
    assert isinstance(pool, np.memmap) and str(tmp_path / "other-node") in str(pool.filename)
    local = prepare(data, [3000], storage).manifest
    assert np.array_equal(pool, open_pool(local, 3000))
    assert np.array_equal(open_validation(again.manifest), open_validation(local))


def test_files_source_on_s3(s3: S3Server, storage: StorageLocation) -> None:
    for name, start in (("part-0.txt", 0), ("part-1.txt", 100)):
        client(s3).put_object(Bucket=s3.bucket, Key=f"corpus/{name}", Body=numbered_lines(100, start=start).encode())
    source = FilesSource(kind="files", paths=(f"s3://{s3.bucket}/corpus/part-*.txt",))
    data = DataSpec(train=source, tokenizer=gpt2(), seq_len=16, validation_tokens=64)
    via_s3 = StorageLocation(path=storage.path, endpoint=s3.endpoint)  # source files use the storage endpoint
    manifest = prepare(data, [3000], via_s3).manifest
    assert manifest.train_source["matched"][1][0] == f"s3://{s3.bucket}/corpus/part-1.txt"
    missing = DataSpec(train=FilesSource(kind="files", paths=(f"s3://{s3.bucket}/corpus/*.nothing",)),
                       tokenizer=gpt2(), seq_len=16, validation_tokens=64)
    with pytest.raises(DataError) as error:
        prepare(missing, [100], via_s3)
    assert str(error.value) == f"data.train.paths[0]: no file matches 's3://{s3.bucket}/corpus/*.nothing'"


def test_a_corrupted_object_is_caught_on_download(s3: S3Server, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    data = synthetic_data()
    remote = s3.storage("tampered")
    manifest = prepare(data, [2000], remote).manifest
    key = f"tampered/data/{manifest.name}/{manifest.train.data.file}"
    body = bytearray(client(s3).get_object(Bucket=s3.bucket, Key=key)["Body"].read())
    body[0] ^= 1
    client(s3).put_object(Bucket=s3.bucket, Key=key, Body=bytes(body))
    monkeypatch.setenv("SWEEPER_DATA_CACHE", str(tmp_path / "fresh-node"))
    with pytest.raises(DataError, match=r"does not match the SHA-256 its manifest records .* run `sweeper data`"):
        open_pool(manifest, 2000)
    assert not list((tmp_path / "fresh-node").rglob(manifest.train.data.sha256))
    # `sweeper data` reads every object to check it (no node's copy stands in), and uploads the broken one anew
    again = prepare(data, [2000], remote)
    assert again.action == "built" and again.repaired == (manifest.train.data.file,)
    assert again.manifest.train.data == manifest.train.data
    monkeypatch.setenv("SWEEPER_DATA_CACHE", str(tmp_path / "other-node"))
    assert open_pool(again.manifest, 2000).tolist() == open_pool(prepare(data, [2000], s3.storage("clean")).manifest,
                                                                 2000).tolist()


def test_unauthorised(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    data = synthetic_data()
    remote = s3.storage("denied")
    with pytest.raises(DataError) as error:
        prepare(data, [2000], remote)
    assert str(error.value) == (f"storage.path: access denied to s3://{s3.bucket}/denied/data/"
                                f"{cache_name(data, remote)}/ at {s3.endpoint} (SignatureDoesNotMatch): check the "
                                "AWS credentials in the environment and the bucket's permissions")
    assert "not-the-secret" not in str(error.value)


def test_no_such_bucket(s3: S3Server) -> None:
    with pytest.raises(DataError) as error:
        prepare(synthetic_data(), [2000], StorageLocation(path="s3://no-such-bucket/x", endpoint=s3.endpoint))
    assert str(error.value) == f"storage.path: there is no bucket 'no-such-bucket' at {s3.endpoint}"


def test_unreachable_endpoint_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    data = synthetic_data()
    remote = StorageLocation(path="s3://bucket/prefix", endpoint=endpoint)
    started = time.monotonic()
    with pytest.raises(DataError) as error:
        prepare(data, [2000], remote)
    assert time.monotonic() - started < 10
    assert str(error.value).startswith(f"storage.endpoint: cannot reach {endpoint} for "
                                       f"s3://bucket/prefix/data/{cache_name(data, remote)}/: Could not connect")
