"""`e6ingest.open_shards`: a webdataset pipeline and the shard index, as a trainer reads them."""

from __future__ import annotations

import json
import shutil

import pytest

import e6ingest
from e6ingest.shards.layout import OutputError


def test_open_shards_pipeline_and_index(small_pull):
    shards = e6ingest.open_shards(small_pull)
    manifest = json.loads((small_pull / "manifest.json").read_text())
    index = shards.index
    assert len(shards) == index.height == manifest["totals"]["written"]
    samples = list(shards.dataset)
    assert [s["__key__"] for s in samples] == index["key"].to_list()
    for sample, row in zip(samples, index.iter_rows(named=True), strict=True):
        assert sample["webp"].size == (row["width"], row["height"])
        assert sample["json"]["bucket"] == [row["bucket_width"], row["bucket_height"]]
        assert sample["txt"] == sample["json"]["caption"]["text"]
    assert set(index["shard"]) == {s["name"] for s in manifest["shards"]}


def test_undecoded_pipeline_gives_bytes(small_pull):
    first = next(iter(e6ingest.open_shards(small_pull, decode=None).dataset))
    assert first["webp"][:4] == b"RIFF" and isinstance(first["json"], bytes)


def test_a_shard_missing_from_the_output_is_named_when_it_opens(small_pull, tmp_path):
    """A copy that lost a shard fails at open, naming it, not mid-epoch in a trainer."""
    copy = tmp_path / "out"
    shutil.copytree(small_pull, copy)
    name = json.loads((copy / "manifest.json").read_text())["shards"][1]["name"]
    (copy / name).unlink()
    with pytest.raises(OutputError, match=f"{name}: a shard of the manifest is not there"):
        e6ingest.open_shards(copy)
    shutil.copy(small_pull / name, copy / name)
    (copy / name).with_suffix(".parquet").unlink()
    with pytest.raises(OutputError, match=r"\.parquet: a shard of the manifest is not there"):
        e6ingest.open_shards(copy)
