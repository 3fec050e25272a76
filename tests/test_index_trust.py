"""The tag index never answers for other content than it was built from: a metadata file
replaced in place (same size, same modification time, even the same footer) or damaged is
noticed before the index is used, and the answer is the scan's."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from e6ingest import dataset
from e6ingest.cli import main
from e6ingest.metadata import SchemaError
from e6ingest.query import parse_query
from e6ingest.query.index import open_index
from e6ingest.query.vocabulary import cached_vocabulary
from tests.conftest import E621_NEWEST_ROWS


def _write(path, ratings: str) -> None:
    """Rows of one rating each, written so that swapping ratings keeps every byte's place
    (no compression, no dictionary, no statistics: the footer is the same too)."""
    rows = [dict(E621_NEWEST_ROWS[0], id=i + 1, rating=r) for i, r in enumerate(ratings)]
    pq.write_table(pa.Table.from_pylist(rows), path, compression="none", use_dictionary=False,
                   write_statistics=False)  # fmt: skip


def _replace_in_place(path, ratings: str) -> None:
    """Rewrite ``path`` with other ratings, keeping its inode, size and modification time."""
    stat = path.stat()
    other = path.with_name("other.parquet")
    _write(other, ratings)
    data = other.read_bytes()
    assert len(data) == stat.st_size
    with path.open("r+b") as handle:  # the same inode
        handle.write(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    other.unlink()


def _count(root, path, text: str) -> int:
    return open_index([path], [None], root).count(parse_query(text))


def test_a_file_replaced_with_the_same_size_mtime_and_footer_is_indexed_again(tmp_path):
    path, root = tmp_path / "posts.parquet", tmp_path / "index"
    _write(path, "eeeeeeesss")
    footer = path.read_bytes()[-200:]
    assert _count(root, path, "rating:e") == 7
    _replace_in_place(path, "esssssssss")
    assert path.read_bytes()[-200:] == footer  # nothing but the content tells them apart
    assert _count(root, path, "rating:e") == 1
    scan = dataset.open_dataset(files=[path], index=False)
    assert scan.count(scan.query("rating:e")) == 1
    assert len(list(root.iterdir())) == 1  # the stale index is gone


def test_a_copy_or_touch_keeps_the_index_without_a_rebuild(tmp_path):
    path, root = tmp_path / "posts.parquet", tmp_path / "index"
    _write(path, "eeess")
    first = open_index([path], [None], root)
    rows = first.folder / "rows.arrow"
    built = first.record["build_seconds"], rows.stat().st_mtime_ns
    os.utime(path)  # a new modification time, the same content
    os.chmod(path, 0o600)  # a new change time
    again = open_index([path], [None], root)
    assert again.folder == first.folder and again.count(parse_query("rating:e")) == 3
    assert (
        again.record["build_seconds"],
        (again.folder / "rows.arrow").stat().st_mtime_ns,
    ) == built


def test_a_damaged_file_of_the_same_size_is_refused_naming_it(tmp_path, capsys):
    path, root = tmp_path / "posts.parquet", tmp_path / "index"
    _write(path, "eeess")
    assert _count(root, path, "rating:e") == 3
    stat = path.stat()
    path.write_bytes(bytes(stat.st_size))  # zero-filled, as a failed disk or copy leaves it
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(SchemaError, match="not a parquet file"):
        open_index([path], [None], root)
    assert main(["inspect", "--metadata", str(path), "--count"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    _write(path, "essss")  # the file is fixed: answered again, from its content
    assert _count(root, path, "rating:e") == 1


def test_bytes_rotted_in_the_middle_are_noticed(tmp_path):
    path, root = tmp_path / "posts.parquet", tmp_path / "index"
    _write(path, "eeeee")
    assert _count(root, path, "rating:e") == 5
    stat = path.stat()
    data = path.read_bytes()
    rotted = data.replace(b"\x01\x00\x00\x00e", b"\x01\x00\x00\x00s", 2)  # two ratings
    assert rotted != data and len(rotted) == len(data)
    with path.open("r+b") as handle:
        handle.write(rotted)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    scan = dataset.open_dataset(files=[path], index=False)
    assert scan.count(scan.query("rating:e")) == 3
    assert _count(root, path, "rating:e") == 3


@pytest.mark.parametrize("name", ["tags.parquet", "rows.arrow", "postings.arrow"])
def test_an_index_file_whose_footer_rotted_is_built_again(tmp_path, name):
    """The index's own files, damaged in place (the same size): a footer that no longer
    reads has the index built again, never read as it is (a polars traceback before)."""
    from e6ingest.query.index import built_index

    path, root = tmp_path / "posts.parquet", tmp_path / "index"
    _write(path, "eeeeeeesss")
    assert _count(root, path, "rating:e") == 7
    (damaged,) = root.glob(f"*/{name}")
    data = bytearray(damaged.read_bytes())
    data[-40:-8] = bytes(b ^ 0x5A for b in data[-40:-8])
    damaged.write_bytes(bytes(data))
    assert built_index([path], [None], root) is None  # refused, and removed
    assert _count(root, path, "rating:e") == 7


def test_the_vocabulary_cache_follows_the_content(tmp_path):
    path, folder = tmp_path / "posts.parquet", tmp_path / "vocabulary"
    rows = [dict(E621_NEWEST_ROWS[0], id=1, tags=["aaaa", "bbbb"])]
    pq.write_table(pa.Table.from_pylist(rows), path, compression="none", use_dictionary=False,
                   write_statistics=False)  # fmt: skip
    assert cached_vocabulary([path], [None], folder)["tag"].to_list() == ["aaaa", "bbbb"]
    stat = path.stat()
    data = path.read_bytes().replace(b"aaaa", b"cccc")
    assert len(data) == stat.st_size
    path.write_bytes(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cached_vocabulary([path], [None], folder)["tag"].to_list() == ["bbbb", "cccc"]


def test_symlinks_planted_in_the_index_cache_never_lead_outside(tmp_path):
    path, root = tmp_path / "posts.parquet", tmp_path / "index"
    _write(path, "eeess")
    index = open_index([path], [None], root)
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("index.json", "rows.arrow", "postings.arrow", "tags.parquet"):
        (outside / name).write_bytes((index.folder / name).read_bytes())  # looks like an index
    (root / "planted").symlink_to(outside, target_is_directory=True)
    _replace_in_place(path, "esssssssss"[:5])  # the files changed: stale indexes are removed
    assert _count(root, path, "rating:e") == 1
    assert sorted(p.name for p in outside.iterdir()) == sorted(
        ["index.json", "rows.arrow", "postings.arrow", "tags.parquet"]
    )  # fmt: skip
    key_folder = open_index([path], [None], root).folder
    moved = tmp_path / "moved"
    key_folder.rename(moved)
    key_folder.symlink_to(moved, target_is_directory=True)  # the index itself, a link
    with pytest.raises(Exception, match="symlink"):
        open_index([path], [None], root)
    assert (moved / "index.json").exists()


@pytest.mark.parametrize("index", [True, False])
def test_a_selection_keeps_the_metadata_order(tmp_path, index):
    """Rows read in several row groups come out in file order (a join must not reorder)."""
    path = tmp_path / "posts.parquet"
    rows = [dict(E621_NEWEST_ROWS[0], id=i, rating="es"[i % 2]) for i in range(1, 20_001)]
    rows.append(dict(E621_NEWEST_ROWS[0], id=5, rating="q"))  # repeated: its last row wins
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1000)
    data = dataset.open_dataset(files=[path], index=index)
    ids = data.select(data.query("")).collect()["id"].to_list()
    assert ids == [i for i in range(1, 20_001) if i != 5] + [5]
