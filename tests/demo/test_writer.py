"""The demo mirror is laid out and shaped like the real Hub repositories."""

from __future__ import annotations

import json
import re
import tarfile

import pandas as pd
import pyarrow.parquet as pq
import pytest
from hfutils.index import tar_get_index_info

from e6ingest.demo import build_demo
from e6ingest.manifests import load_manifest
from e6ingest.shards.layout import OutputError


def _reference_columns(reference):
    """(name, physical type) of every column in the real danbooru2024 parquet footer."""
    text = (reference / "danbooru2024-metadata-parquet-schema.txt").read_text()
    names = dict(re.findall(r"schema\.(\d+)\.name\t(.+)", text))
    types = dict(re.findall(r"schema\.(\d+)\.type\t(.+)", text))
    return [(names[i], types[i]) for i in sorted(types, key=int)]


@pytest.mark.slow
def test_every_repository_of_both_datasets_is_there(small_demo):
    for name in ("e621", "danbooru2024"):
        manifest = load_manifest(name)
        for repo in manifest.repos:
            assert (small_demo / repo).is_dir(), repo
        for entry in manifest.metadata:
            assert (small_demo / entry.repo / entry.path).is_file()
        for images in manifest.images:
            for shard in (0, 999):
                assert (small_demo / images.repo / images.tar_path(shard)).is_file()
                assert (small_demo / images.index_repo_id / images.index_path(shard)).is_file()
    # The e621 2024 index lives in its own repository, as on the Hub.
    assert not list((small_demo / "NebulaeWis/e621-2024-webp-4Mpixel").rglob("*.json"))


def test_index_is_exactly_what_hfutils_makes(small_demo):
    manifest = load_manifest("e621")
    checked = 0
    for images in manifest.images:
        for tar_path in sorted((small_demo / images.repo).rglob("*.tar"))[:400]:
            shard = int(re.findall(r"\d+", tar_path.stem)[-1])
            ours = json.loads(
                (small_demo / images.index_repo_id / images.index_path(shard)).read_text()
            )
            if not ours["files"]:
                continue
            theirs = tar_get_index_info(str(tar_path), silent=True)
            # hfutils hashes members as stored: only deliberately corrupted ones may differ.
            for name, info in theirs["files"].items():
                assert ours["files"][name]["offset"] == info["offset"]
                assert ours["files"][name]["size"] == info["size"]
            assert {k: ours[k] for k in ("filesize", "hash", "hash_lfs")} == {
                k: theirs[k] for k in ("filesize", "hash", "hash_lfs")
            }
            checked += 1
    assert checked > 10


def test_danbooru_metadata_has_the_real_88_columns_and_pandas_index(small_demo, reference):
    path = small_demo / "deepghs/danbooru2024-webp-4Mpixel/metadata.parquet"
    schema = pq.read_schema(path)
    physical = {"string": "BYTE_ARRAY", "int64": "INT64", "double": "DOUBLE", "bool": "BOOLEAN"}
    ours = [(f.name, physical[str(f.type)]) for f in schema]
    assert ours == _reference_columns(reference)
    assert len(ours) == 88 and ours[-1][0] == "id"
    frame = pd.read_parquet(path)
    assert frame.index.name == "id"
    assert set(frame["rating"]) <= {"g", "s", "q", "e"}


def test_e621_metadata_schemas(small_demo):
    posts = pq.read_table(
        small_demo / "boxingscorpionbagel/e621-2024/metadata/posts-2024-04-07.parquet"
    )
    assert set(posts.column("is_deleted").to_pylist()) <= {"t", "f"}
    assert str(posts.schema.field("created_at").type) == "timestamp[us, tz=UTC]"
    assert isinstance(posts.column("tag_string")[0].as_py(), str)
    newest = pq.read_table(small_demo / "deepghs/e621_newest/table.parquet")
    assert newest.schema.field("tags").type.value_type == "string"
    assert newest.schema.field("is_deleted").type == "bool"
    assert re.match(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}-04:00", newest.column("created_at")[0].as_py()
    )


@pytest.mark.slow
def test_demo_content_is_realistic(demo_root):
    frame = pd.read_parquet(demo_root / "deepghs/danbooru2024-webp-4Mpixel/metadata.parquet")
    shares = frame["rating"].value_counts(normalize=True)
    assert 0.25 < shares["g"] < 0.45 and 0.1 < shares["e"] < 0.25
    tags = frame["tag_string_general"].str.split().explode().value_counts()
    assert tags.iloc[0] > 20 * tags.iloc[len(tags) // 2]  # a Zipf-like head and long tail
    assert (frame["image_width"] * frame["image_height"] > 2048 * 2048).sum() >= 10
    assert frame["image_width"].min() >= 300
    assert (frame["file_ext"] == "webm").sum() > 5
    kinds = set()
    for tar_path in (demo_root / "deepghs/danbooru2024-webp-4Mpixel/images").glob("*.tar"):
        with tarfile.open(tar_path) as tar:
            kinds.update(m.name.rsplit(".", 1)[1] for m in tar.getmembers())
    assert {"webp", "jpg", "png", "gif", "avif"} <= kinds


@pytest.mark.slow
def test_demo_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build_demo(a, posts=15, seed=7, workers=1)
    build_demo(b, posts=15, seed=7, workers=2)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_demo_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        build_demo(tmp_path / "x", posts=5)
