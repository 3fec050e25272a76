"""What every image source shares: typed failures, the tar index, verification."""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, TypeVar

from e6ingest.core import FailureKind, PostFailure

if TYPE_CHECKING:
    from e6ingest.manifests import DatasetManifest, ImageRepo


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


MAX_MEMBER_BYTES = 1 << 30  # no post image is near 1 GiB; a larger claim is a bad entry
MAX_TAR_BYTES = 1 << 50  # no shard is near a pebibyte: a larger offset is a bad entry
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _count(value: object) -> int | None:
    """``value`` when it is a non-negative integer (not a bool), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


class TarIndex:
    """The index of one tar shard (hfutils format): ``{"filesize", "hash_lfs", "files":
    {member: {offset, size, sha256}}}``, validated.

    An index that is not of this shape raises PostFailure(UNAVAILABLE) for its shard. An
    entry that is malformed (offset or size not a non-negative integer, beyond the tar's
    ``filesize``, over 1 GiB, a sha256 that is not one) makes its post CORRUPT on lookup.
    """

    def __init__(self, data: object, where: str) -> None:
        def unusable(reason: str) -> PostFailure:
            return PostFailure(FailureKind.UNAVAILABLE, f"{where}: unusable index: {reason}")

        if not isinstance(data, dict):
            raise unusable(f"a JSON {type(data).__name__}, not an object")
        files = data.get("files")
        if not isinstance(files, dict):
            raise unusable("no 'files' table")
        self.where = where
        self.filesize = _count(data.get("filesize"))
        if "filesize" in data and self.filesize is None:
            raise unusable(f"filesize {data['filesize']!r} is not a byte count")
        hash_lfs = data.get("hash_lfs")
        self.hash_lfs = hash_lfs if isinstance(hash_lfs, str) and _SHA256.match(hash_lfs) else None
        self._by_stem: dict[str, IndexEntry] = {}
        self._bad: dict[str, str] = {}
        for name, info in files.items():
            stem = member_stem(name)
            try:
                entry = self._entry(name, info)
            except ValueError as exc:
                self._bad.setdefault(stem, f"{where}: index entry {name!r} is unusable: {exc}")
                continue
            self._by_stem.setdefault(stem, entry)

    def _entry(self, name: str, info: object) -> IndexEntry:
        if not isinstance(info, dict):
            raise ValueError(f"{type(info).__name__}, not an object")
        offset, size = _count(info.get("offset")), _count(info.get("size"))
        if offset is None or size is None:
            raise ValueError(f"offset {info.get('offset')!r}, size {info.get('size')!r}")
        if size > MAX_MEMBER_BYTES:
            raise ValueError(f"size {size} is over {MAX_MEMBER_BYTES}")
        end = self.filesize if self.filesize is not None else MAX_TAR_BYTES
        if offset + size > end:
            raise ValueError(f"bytes {offset}..{offset + size} lie beyond the tar's end")
        sha256 = info.get("sha256")
        if sha256 is not None and not (isinstance(sha256, str) and _SHA256.match(sha256)):
            raise ValueError(f"sha256 {sha256!r}")
        return IndexEntry(name.removeprefix("./"), offset, size, sha256)

    def __len__(self) -> int:
        return len(self._by_stem)

    def lookup(self, post_id: int) -> IndexEntry | None:
        """The entry of ``post_id`` in this shard, or None when the shard lacks it;
        PostFailure(CORRUPT) when its entry is malformed."""
        entry = self._by_stem.get(str(post_id))
        if entry is None and str(post_id) in self._bad:
            raise PostFailure(FailureKind.CORRUPT, self._bad[str(post_id)])
        return entry


def parse_index(data: bytes, where: str) -> TarIndex:
    """The index in the bytes of an index file; PostFailure(UNAVAILABLE) naming ``where``
    when they are no JSON object of the hfutils shape (too deeply nested JSON included)."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise PostFailure(FailureKind.UNAVAILABLE, f"{where}: unreadable index: {reason}") from None
    return TarIndex(document, where)


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


S = TypeVar("S", bound="Source")


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

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc: object) -> None:
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
                index = self._index(repo, shard)
            except PostFailure as exc:
                unavailable = exc
                continue
            entry = index.lookup(post_id)  # CORRUPT when its entry is malformed
            if entry is not None:
                data = self._read(repo, shard, post_id, entry)
                return Fetched(post_id, data, f"{repo.repo}/{repo.tar_path(shard)}:{entry.member}")
        if unavailable is not None:  # an unreadable index never means "no such post"
            raise unavailable
        shards = ", ".join(
            f"{r.repo}/{r.tar_path(r.shard_of(post_id))}" for r in self.manifest.images
        )
        raise PostFailure(FailureKind.MISSING, f"post {post_id} is not in {shards}")
