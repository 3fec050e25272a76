"""What every image source shares: typed failures, the tar index, verification."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from e6ingest.manifests import DatasetManifest, ImageRepo


class FailureKind(str, Enum):
    """Why a post did not make it into the output."""

    MISSING = "missing"  # not in its shard (deleted, video, failed upstream)
    CORRUPT = "corrupt"  # bytes do not match the index's size or sha256
    UNAVAILABLE = "unavailable"  # the source could not be read (I/O, network, absent shard)
    UNDECODABLE = "undecodable"  # not a readable image (truncated, empty, not an image)
    TOO_LARGE = "too_large"  # over the source pixel safety limit
    UNSUPPORTED = "unsupported"  # a post with no image (video, flash) or a refused animation

    @property
    def retryable(self) -> bool:
        """Whether trying the same post again may succeed."""
        return self is FailureKind.UNAVAILABLE


class PostFailure(Exception):
    """One post failed at one stage; the run records it and goes on."""

    def __init__(self, kind: FailureKind, message: str, stage: str = "fetch"):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.stage = stage


@dataclass(frozen=True)
class IndexEntry:
    """Where one file lies inside a tar shard (hfutils index format)."""

    member: str
    offset: int
    size: int
    sha256: str | None


def member_stem(name: str) -> str:
    """The post id part of a member name: ``./123.webp`` and ``123.webp`` give ``123``."""
    base = PurePosixPath(name.removeprefix("./")).name
    return base.split(".", 1)[0]


class TarIndex:
    """The index of one tar shard: ``{"files": {member: {offset, size, sha256}}, ...}``."""

    def __init__(self, data: dict, where: str):
        files = data.get("files")
        if not isinstance(files, dict):
            raise PostFailure(
                FailureKind.UNAVAILABLE, f"{where}: index has no 'files' table", "fetch"
            )
        self.where = where
        self.filesize = data.get("filesize")
        self._by_stem: dict[str, IndexEntry] = {}
        for name, info in files.items():
            entry = IndexEntry(
                member=name.removeprefix("./"),
                offset=int(info["offset"]),
                size=int(info["size"]),
                sha256=info.get("sha256"),
            )
            self._by_stem.setdefault(member_stem(name), entry)

    def __len__(self) -> int:
        return len(self._by_stem)

    def lookup(self, post_id: int) -> IndexEntry | None:
        """The entry of ``post_id`` in this shard, or None when the shard lacks it."""
        return self._by_stem.get(str(post_id))


def verify(entry: IndexEntry, data: bytes, where: str) -> bytes:
    """Check ``data`` against the index entry's size and sha256; raise CORRUPT if not."""
    if len(data) != entry.size:
        raise PostFailure(
            FailureKind.CORRUPT,
            f"{where}: {entry.member} read {len(data)} bytes, index says {entry.size}",
        )
    if entry.sha256 and hashlib.sha256(data).hexdigest() != entry.sha256:
        raise PostFailure(
            FailureKind.CORRUPT, f"{where}: {entry.member} sha256 does not match the index"
        )
    return data


@dataclass(frozen=True)
class Fetched:
    """Verified bytes of one post's image and where they came from."""

    post_id: int
    data: bytes
    location: str


class Source(ABC):
    """A place images come from. ``fetch`` returns verified bytes or raises PostFailure."""

    @abstractmethod
    def fetch(self, post_id: int) -> Fetched:
        """Verified image bytes of ``post_id``; raises :class:`PostFailure` otherwise."""

    def fetch_many(self, post_ids: Iterable[int]) -> Iterator[Fetched | PostFailure]:
        """Fetch each id in order, yielding its bytes or its failure."""
        for post_id in post_ids:
            try:
                yield self.fetch(post_id)
            except PostFailure as exc:
                yield exc

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release open files or connections."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class IndexedTarSource(Source):
    """A source of indexed tar shards (the hfutils layout): each post is looked up in the
    index of its shard in every image repository of ``self.manifest``, in order."""

    manifest: DatasetManifest

    @abstractmethod
    def _index(self, repo: ImageRepo, shard: int) -> TarIndex:
        """The index of ``shard`` of ``repo``; raises PostFailure when it cannot be read."""

    @abstractmethod
    def _read(self, repo: ImageRepo, shard: int, post_id: int, entry: IndexEntry) -> bytes:
        """The verified bytes of ``entry``; raises PostFailure."""

    def fetch(self, post_id: int) -> Fetched:
        """Verified bytes of ``post_id``; PostFailure(missing/corrupt/unavailable) otherwise."""
        unavailable: PostFailure | None = None
        for repo in self.manifest.images:
            shard = repo.shard_of(post_id)
            try:
                entry = self._index(repo, shard).lookup(post_id)
            except PostFailure as exc:
                unavailable = exc
                continue
            if entry is not None:
                data = self._read(repo, shard, post_id, entry)
                return Fetched(post_id, data, f"{repo.repo}/{repo.tar_path(shard)}:{entry.member}")
        if unavailable is not None:  # an unreadable index never means "no such post"
            raise unavailable
        shards = ", ".join(
            f"{r.repo}/{r.tar_path(r.shard_of(post_id))}" for r in self.manifest.images
        )
        raise PostFailure(FailureKind.MISSING, f"post {post_id} is not in {shards}")
