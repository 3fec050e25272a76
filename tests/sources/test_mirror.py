"""The mirror source reads verified bytes by index and classifies every failure."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from e6ingest.manifests import parse_manifest
from e6ingest.sources import FailureKind, MirrorError, MirrorSource, PostFailure


def _manifest(index_repo: str | None = None):
    images = {"repo": "o/images", "tar": "images/{shard:04d}.tar",
              "index": "images/{shard:04d}.json", "shards": 10}  # fmt: skip
    if index_repo:
        images["index_repo"] = index_repo
    return parse_manifest(
        {"name": "t", "site": "e621", "images": [images],
         "metadata": [{"repo": "o/meta", "path": "m.parquet", "schema": "e621_newest"}]},
        "test.toml",
    )  # fmt: skip


def _write_shard(root, shard, files, names=None, index_repo="o/images"):
    buf = io.BytesIO()
    index = {}
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for post_id, data in files.items():
            name = (names or {}).get(post_id, f"{post_id}.webp")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            index[name] = {
                "offset": tar.offset - -(-len(data) // 512) * 512,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
    tar_path = root / "o/images/images" / f"{shard:04d}.tar"
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    tar_path.write_bytes(buf.getvalue())
    index_path = root / index_repo / "images" / f"{shard:04d}.json"
    index_path.parent.mkdir(parents=True, exist_ok=True)
    index_path.write_text(json.dumps({"filesize": len(buf.getvalue()), "files": index}))
    return tar_path


def test_fetch_by_index_with_dot_slash_names_and_index_repo(tmp_path):
    _write_shard(tmp_path, 3, {13: b"thirteen", 23: b"twenty-three" * 100},
                 names={23: "./23.webp"}, index_repo="o/index")  # fmt: skip
    with MirrorSource(tmp_path, _manifest("o/index")) as source:
        assert source.fetch(13).data == b"thirteen"
        fetched = source.fetch(23)
        assert fetched.data == b"twenty-three" * 100
        assert "o/images/images/0003.tar:23.webp" in fetched.location


def test_missing_post_is_missing(tmp_path):
    _write_shard(tmp_path, 3, {13: b"x"})
    with pytest.raises(PostFailure) as info, MirrorSource(tmp_path, _manifest()) as source:
        source.fetch(33)
    assert info.value.kind is FailureKind.MISSING and "post 33" in info.value.message


def test_bytes_not_matching_the_index_are_corrupt(tmp_path):
    tar_path = _write_shard(tmp_path, 3, {13: b"original bytes"})
    blob = bytearray(tar_path.read_bytes())
    blob[blob.index(b"original")] ^= 0xFF
    tar_path.write_bytes(bytes(blob))
    with pytest.raises(PostFailure) as info, MirrorSource(tmp_path, _manifest()) as source:
        source.fetch(13)
    assert info.value.kind is FailureKind.CORRUPT and "sha256" in info.value.message


def test_absent_index_is_unavailable_not_missing(tmp_path):
    with pytest.raises(PostFailure) as info, MirrorSource(tmp_path, _manifest()) as source:
        source.fetch(13)
    assert info.value.kind is FailureKind.UNAVAILABLE
    assert "0003.json" in info.value.message


def test_unreadable_index_is_unavailable(tmp_path):
    _write_shard(tmp_path, 3, {13: b"x"})
    (tmp_path / "o/images/images/0003.json").write_text("{not json")
    with pytest.raises(PostFailure) as info, MirrorSource(tmp_path, _manifest()) as source:
        source.fetch(13)
    assert info.value.kind is FailureKind.UNAVAILABLE


def test_missing_metadata_file_names_it(tmp_path):
    manifest = _manifest()
    with pytest.raises(MirrorError, match=r"o/meta/m\.parquet"):
        MirrorSource(tmp_path, manifest).metadata_file(manifest.metadata[0])


def test_demo_mirror_fetches_e621_from_both_image_repos(small_demo):
    import polars as pl

    from e6ingest.manifests import load_manifest

    manifest = load_manifest("e621")
    ids = {}
    for entry, repo in zip(manifest.metadata, manifest.images, strict=True):
        frame = pl.read_parquet(small_demo / entry.repo / entry.path, columns=["id", "file_ext"])
        ids[repo.repo] = frame.filter(pl.col("file_ext") == "webp")["id"].to_list()
    with MirrorSource(small_demo, manifest) as source:
        for repo, post_ids in ids.items():
            found = []
            for post_id in post_ids:
                try:
                    found.append(source.fetch(post_id).location)
                except PostFailure as exc:
                    assert exc.kind in (FailureKind.MISSING, FailureKind.CORRUPT)
            assert found and all(loc.startswith(repo) for loc in found)


@pytest.mark.parametrize(
    "entry",
    [
        {"offset": "abc", "size": 1},
        {"offset": 2**70, "size": 1},
        {"offset": 0},
        None,
        {"offset": 0, "size": 2**40},
        {"offset": 0, "size": -1},
        {"offset": True, "size": 1},
        {"offset": 0, "size": 1, "sha256": 12},
    ],
)
def test_a_malformed_index_entry_is_corrupt_for_its_post_only(tmp_path, entry):
    _write_shard(tmp_path, 3, {13: b"thirteen", 23: b"twenty-three"})
    path = tmp_path / "o/images/images/0003.json"
    index = json.loads(path.read_text())
    index["files"]["13.webp"] = entry
    path.write_text(json.dumps(index))
    with MirrorSource(tmp_path, _manifest()) as source:
        with pytest.raises(PostFailure) as info:
            source.fetch(13)
        assert source.fetch(23).data == b"twenty-three"
    assert info.value.kind is FailureKind.CORRUPT
    assert "0003.json" in info.value.message and "13.webp" in info.value.message


def test_an_entry_claiming_bytes_past_the_tar_is_corrupt(tmp_path):
    _write_shard(tmp_path, 3, {13: b"thirteen"})
    path = tmp_path / "o/images/images/0003.json"
    index = json.loads(path.read_text())
    index["files"]["13.webp"]["size"] = index["filesize"]
    path.write_text(json.dumps(index))
    with pytest.raises(PostFailure) as info, MirrorSource(tmp_path, _manifest()) as source:
        source.fetch(13)
    assert info.value.kind is FailureKind.CORRUPT and "beyond the tar" in info.value.message


def test_an_offset_past_any_tar_without_a_filesize_is_corrupt(tmp_path):
    _write_shard(tmp_path, 3, {13: b"thirteen", 23: b"twenty-three"})
    path = tmp_path / "o/images/images/0003.json"
    index = json.loads(path.read_text())
    del index["filesize"]
    index["files"]["13.webp"]["offset"] = 2**63  # seeking there raises OverflowError
    path.write_text(json.dumps(index))
    with MirrorSource(tmp_path, _manifest()) as source:
        with pytest.raises(PostFailure) as info:
            source.fetch(13)
        assert source.fetch(23).data == b"twenty-three"
    assert info.value.kind is FailureKind.CORRUPT and "beyond the tar" in info.value.message


@pytest.mark.parametrize(
    "document",
    [[], "text", {"files": []}, {"files": {}, "filesize": -5}, {"filesize": 1},
     "[" * 100_000 + "]" * 100_000, '{"files": ' + "[" * 100_000 + "]" * 100_000 + "}"],
)  # fmt: skip
def test_a_malformed_index_is_unavailable_for_its_shard(tmp_path, document):
    _write_shard(tmp_path, 3, {13: b"thirteen"})
    text = document if isinstance(document, str) and document[:1] in "[{" else json.dumps(document)
    (tmp_path / "o/images/images/0003.json").write_text(text)
    with pytest.raises(PostFailure) as info, MirrorSource(tmp_path, _manifest()) as source:
        source.fetch(13)
    assert info.value.kind is FailureKind.UNAVAILABLE and "0003.json" in info.value.message


@pytest.mark.slow
def test_a_pull_over_malformed_indexes_finishes_and_reruns(small_demo, tmp_path):
    import shutil

    from e6ingest.config import make_config
    from e6ingest.pipeline import pull

    mirror = tmp_path / "mirror"
    shutil.copytree(small_demo, mirror)
    indexes = sorted((mirror / "deepghs/e621-2024-webp-4Mpixel_index").rglob("*.json"))
    with_files = [p for p in indexes if json.loads(p.read_text())["files"]][:3]
    broken = json.loads(with_files[0].read_text())
    broken["files"] = {name: {"offset": "abc"} for name in broken["files"]}
    with_files[0].write_text(json.dumps(broken))
    with_files[1].write_text("[1, 2, 3]")
    config = make_config({"ratings": "e,q,s", "shard_size": 20})
    for _ in range(2):  # a rerun works as well
        summary = pull(config, tmp_path / "out", mirror, workers=1)
        assert summary.failed.get("corrupt", 0) >= 1
        assert summary.failed.get("unavailable", 0) >= 1
