"""A local mirror: a folder holding one sub-folder per Hub repository (``owner/name``)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

from e6ingest.core import FailureKind, PostFailure
from e6ingest.manifests import DatasetManifest, ImageRepo, MetadataFile
from e6ingest.sources.base import (
    IndexedTarSource,
    IndexEntry,
    TarIndex,
    parse_index,
    verify,
)


class MirrorError(FileNotFoundError):
    """The mirror lacks a file the dataset needs."""


class MirrorSource(IndexedTarSource):
    """Reads posts from indexed tar shards in a local copy of the dataset's repositories.

    For each post the shard ``id % shards`` of each image repository is looked up in the
    order the manifest lists them; the file is read by seeking to the offset the index gives
    and checked against the index's size and sha256.
    """

    def __init__(self, root: str | Path, manifest: DatasetManifest, open_files: int = 8):
        self.root = Path(root)
        self.manifest = manifest
        self._indexes: OrderedDict[tuple[str, int], TarIndex] = OrderedDict()
        self._files: OrderedDict[Path, BinaryIO] = OrderedDict()
        self._open_files = open_files

    def metadata_file(self, entry: MetadataFile) -> Path:
        """Local path of a metadata file; raises MirrorError naming it when absent."""
        path = self.root / entry.repo / entry.path
        if not path.is_file():
            raise MirrorError(f"mirror {self.root} lacks metadata file {entry.repo}/{entry.path}")
        return path

    def _index(self, repo: ImageRepo, shard: int) -> TarIndex:
        key = (repo.repo, shard)
        if key in self._indexes:
            self._indexes.move_to_end(key)
            return self._indexes[key]
        path = self.root / repo.index_repo_id / repo.index_path(shard)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise PostFailure(FailureKind.UNAVAILABLE, f"mirror lacks index {path}") from exc
        except OSError as exc:
            raise PostFailure(FailureKind.UNAVAILABLE, f"unreadable index {path}: {exc}") from exc
        index = parse_index(data, str(path))
        self._indexes[key] = index
        if len(self._indexes) > self._open_files:
            self._indexes.popitem(last=False)
        return index

    def _tar(self, path: Path) -> BinaryIO:
        handle = self._files.get(path)
        if handle is not None:
            self._files.move_to_end(path)
            return handle
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise PostFailure(FailureKind.UNAVAILABLE, f"cannot open {path}: {exc}") from exc
        self._files[path] = handle
        if len(self._files) > self._open_files:
            _, oldest = self._files.popitem(last=False)
            oldest.close()
        return handle

    def _read(self, repo: ImageRepo, shard: int, post_id: int, entry: IndexEntry) -> bytes:
        tar_path = self.root / repo.repo / repo.tar_path(shard)
        handle = self._tar(tar_path)
        try:
            handle.seek(entry.offset)
            data = handle.read(entry.size)
        except OSError as exc:
            raise PostFailure(FailureKind.UNAVAILABLE, f"{tar_path}: {exc}") from exc
        return verify(entry, data, f"{repo.repo}/{repo.tar_path(shard)}")

    def close(self) -> None:
        """Close the open tar files."""
        for handle in self._files.values():
            handle.close()
        self._files.clear()
