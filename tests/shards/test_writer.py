"""Shard writing: deterministic bytes, correct offsets, complete only when all files exist."""

from __future__ import annotations

import hashlib
import io
import tarfile

import polars as pl

from e6ingest.shards import Sample, ShardWriter, shard_complete
from e6ingest.shards.stats import ShardCounts


def _write(directory, samples):
    writer = ShardWriter(directory, 7)
    for sample in samples:
        writer.add(sample)
    return writer.finish(ShardCounts(selected=len(samples)), seconds=1.0)


SAMPLES = [
    Sample(f"e621/{i}", bytes([i]) * (100 + i), f"caption {i}",
           {"id": i, "site": "e621", "rating": "e", "size": [10, 20], "bucket": [704, 1408]})
    for i in range(1, 4)
]  # fmt: skip


def test_deterministic_and_indexed(tmp_path):
    a = _write(tmp_path / "a", SAMPLES)
    b = _write(tmp_path / "b", SAMPLES)
    tar_a = (tmp_path / "a" / "00007.tar").read_bytes()
    assert tar_a == (tmp_path / "b" / "00007.tar").read_bytes()
    assert a.tar_sha256 == b.tar_sha256 == hashlib.sha256(tar_a).hexdigest()
    index = pl.read_parquet(tmp_path / "a" / "00007.parquet")
    assert index["key"].to_list() == ["e621/1", "e621/2", "e621/3"]
    for row in index.iter_rows(named=True):
        data = tar_a[row["offset"] : row["offset"] + row["bytes"]]
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
    with tarfile.open(fileobj=io.BytesIO(tar_a)) as tar:
        names = tar.getnames()
        assert names[:3] == ["e621/1.webp", "e621/1.txt", "e621/1.json"]
        assert {m.mtime for m in tar.getmembers()} == {1_700_000_000}
    assert shard_complete(tmp_path / "a", 7)


def test_unfinished_shard_is_not_complete(tmp_path):
    writer = ShardWriter(tmp_path, 0)
    writer.add(SAMPLES[0])
    assert not shard_complete(tmp_path, 0)
    assert not (tmp_path / "00000.tar").exists()
    writer.abort()
    assert list(tmp_path.iterdir()) == []
