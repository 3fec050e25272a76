"""What a cached answer about a metadata file is valid for: the file's content, not its name.

A cache of the tag index (or of the tag vocabulary) is keyed by each file's path, size,
schema and the sha256 of its parquet footer (the footer describes every row group, its
offsets and statistics: a file replaced by other data almost always has another one). The
record also holds the file's inode, modification and change times and the sha256 of its
whole content. Before each use the cheap witness is checked again: size and footer always;
when the inode or either time moved (any write to a file moves its change time, which no
user can set), the whole content is hashed and compared. Any doubt means the cache is not
used; a wrong answer is never given.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from e6ingest.metadata.schemas import SchemaError

PARQUET_MAGIC = b"PAR1"
MAX_FOOTER = 1 << 30  # a footer larger than this is not one


@dataclass(frozen=True)
class FileIdentity:
    """One metadata file as a cache saw it."""

    path: str  # resolved
    schema: str | None
    size: int
    footer_sha256: str
    inode: int
    mtime_ns: int
    ctime_ns: int
    content_sha256: str | None = None  # of the whole file; None until computed

    @property
    def key(self) -> dict[str, object]:
        """What decides the cache entry: the path, schema, size and footer."""
        return {"path": self.path, "schema": self.schema, "size": self.size,
                "footer_sha256": self.footer_sha256}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The JSON form kept in a cache record."""
        return asdict(self)


def footer_sha256(path: str | os.PathLike[str]) -> tuple[int, str]:
    """The size of a parquet file and the sha256 of its footer (the metadata and the 8
    bytes after it); :class:`SchemaError` naming the file when it has no footer."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < 12:
            raise SchemaError(f"{path}: not a parquet file ({size} bytes)")
        handle.seek(size - 8)
        tail = handle.read(8)
        (length,) = struct.unpack("<I", tail[:4])
        if tail[4:] != PARQUET_MAGIC or not 0 < length <= min(size - 12, MAX_FOOTER):
            raise SchemaError(
                f"{path}: not a parquet file (no parquet footer at its end: damaged or "
                "truncated; download it again)"
            )
        handle.seek(size - 8 - length)
        return size, hashlib.sha256(handle.read(length) + tail).hexdigest()


def content_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a whole file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def identify(
    path: str | os.PathLike[str], schema: str | None, content: bool = False
) -> FileIdentity:
    """The identity of one metadata file now (its whole content hashed with ``content``)."""
    before = os.stat(path)
    size, footer = footer_sha256(path)
    digest = content_sha256(path) if content else None
    after = os.stat(path)
    if (before.st_size, before.st_mtime_ns, before.st_ctime_ns) != (
        after.st_size, after.st_mtime_ns, after.st_ctime_ns
    ) or size != after.st_size:  # fmt: skip
        raise SchemaError(f"{path}: changed while it was read; try again once it is written")
    return FileIdentity(str(Path(path).resolve()), schema, size, footer, after.st_ino,
                        after.st_mtime_ns, after.st_ctime_ns, digest)  # fmt: skip


def identify_all(
    files: Sequence[str | os.PathLike[str]], schemas: Sequence[str | None], content: bool = False
) -> list[FileIdentity]:
    """:func:`identify` for each file."""
    return [identify(f, s, content) for f, s in zip(files, schemas, strict=True)]


def still_valid(saved: Mapping[str, Any], now: FileIdentity) -> FileIdentity | None:
    """Whether a cache record's identity ``saved`` holds for the file as it is ``now``:
    the identity to keep (with the content hash) when it does, None when it does not.

    Path, schema, size and footer must be equal. When the inode and both times are also
    equal the file was not written since; otherwise its whole content is hashed and
    compared with the saved hash."""
    try:
        before = FileIdentity(**saved)
    except TypeError:
        return None
    if before.key != now.key or before.content_sha256 is None:
        return None
    if (before.inode, before.mtime_ns, before.ctime_ns) == (now.inode, now.mtime_ns, now.ctime_ns):
        return before
    again = identify(now.path, now.schema, content=True)
    if again.key != before.key or again.content_sha256 != before.content_sha256:
        return None
    return again
