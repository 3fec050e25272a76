"""The atomic-write helpers every output file goes through: a file appears whole under its
name or not at all, never through a link, and the temporaries left behind are told from a
user's files by name, type and link count."""

from __future__ import annotations

import os

import pytest

from e6ingest.core import (
    atomic_file,
    atomic_path,
    create_new,
    is_our_temp,
    is_temp_name,
    temp_path,
    write_atomic,
)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_file_is_written_whole_and_no_temporary_is_left(tmp_path):
    path = tmp_path / "manifest.json"
    write_atomic(path, b"first")
    write_atomic(path, b"second", durable=False)
    assert path.read_bytes() == b"second" and _leftovers(tmp_path) == []


def test_an_error_while_writing_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(path) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("disk gone")
    assert path.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path):
    outside = tmp_path / "users-file"
    outside.write_bytes(b"keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").symlink_to(outside)
    write_atomic(out / "manifest.json", b"ours")
    assert outside.read_bytes() == b"keep me"
    assert not (out / "manifest.json").is_symlink()
    assert (out / "manifest.json").read_bytes() == b"ours"


def test_create_new_never_opens_what_is_already_there(tmp_path):
    outside = tmp_path / "users-file"
    outside.write_bytes(b"keep me")
    (tmp_path / "link").symlink_to(outside)
    for name in ("users-file", "link"):
        with pytest.raises(FileExistsError):
            create_new(tmp_path / name)
    assert outside.read_bytes() == b"keep me"
    with create_new(tmp_path / "fresh") as handle:
        handle.write(b"x")
    assert (tmp_path / "fresh").read_bytes() == b"x"


def test_a_path_for_a_writer_is_renamed_on_success_and_removed_on_error(tmp_path):
    path = tmp_path / "failures.parquet"
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name != path.name
        tmp.write_bytes(b"rows")
    assert path.read_bytes() == b"rows"
    with pytest.raises(ValueError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise ValueError("writer failed")
    assert path.read_bytes() == b"rows" and _leftovers(tmp_path) == []


def test_temporary_names_are_unique_and_recognised_only_for_known_targets(tmp_path):
    path = tmp_path / "00001.tar"
    names = {temp_path(path).name for _ in range(100)}
    assert len(names) == 100
    name = next(iter(names))
    assert is_temp_name(name) and is_temp_name(name, {"00001.tar"}.__contains__)
    assert not is_temp_name(name, {"00002.tar"}.__contains__)
    assert not is_temp_name("00001.tar.tmp") and not is_temp_name(".00001.tar.tmp")


def test_only_a_plain_file_with_one_link_is_taken_for_a_leftover(tmp_path):
    targets = {"00001.tar"}.__contains__
    plain = temp_path(tmp_path / "00001.tar")
    plain.write_bytes(b"ours")
    linked = temp_path(tmp_path / "00001.tar")
    (tmp_path / "users-file").write_bytes(b"theirs")
    os.link(tmp_path / "users-file", linked)  # a second name of a user's file
    symlink = temp_path(tmp_path / "00001.tar")
    symlink.symlink_to(tmp_path / "users-file")
    folder = temp_path(tmp_path / "00001.tar")
    folder.mkdir()
    ours = {e.name for e in os.scandir(tmp_path) if is_our_temp(e, targets)}
    assert ours == {plain.name}
