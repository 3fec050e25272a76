"""Shards: one output webdataset tar written atomically and deterministically.

A shard ``NNNNN`` is four files in the shards folder: ``NNNNN.tar`` (samples), ``NNNNN.parquet``
(one index row per sample), ``NNNNN.json`` (the hfutils indexed-tar JSON, ``tarindex``) and
``NNNNN.stats.json`` (counts, failures, bytes, seconds). Each is written under a temporary
name, flushed, fsynced and renamed; the stats file comes last, so a shard is complete exactly
when its stats file exists beside the other three.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import polars as pl

from e6ingest.core import create_new, kill_point, temp_path, write_atomic
from e6ingest.shards.stats import ShardCounts, ShardStats
from e6ingest.shards.tarindex import Member, image_fields, tar_index, write_tar_index

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

    from e6ingest.shards.record import SampleRecord

# Fixed member metadata: identical inputs give byte-identical tars.
TAR_MTIME = 1_700_000_000
TAR_MODE = 0o444
MEMBER_ORDER = ("webp", "txt", "json")
INDEX_SCHEMA = {
    "key": pl.String,
    "id": pl.Int64,
    "site": pl.String,
    "rating": pl.String,
    "width": pl.Int32,
    "height": pl.Int32,
    "bucket_width": pl.Int32,
    "bucket_height": pl.Int32,
    "bytes": pl.Int64,
    "sha256": pl.String,
    "offset": pl.Int64,
}


def sample_key(site: str, post_id: int) -> str:
    """The webdataset key of a post: ``{site}/{id}``, never containing a dot."""
    return f"{site}/{post_id}"


def sample_key_expr(site: str = "site", post_id: str = "id") -> pl.Expr:
    """:func:`sample_key` over a frame's columns."""
    return pl.concat_str(site, pl.lit("/"), pl.col(post_id).cast(pl.String))


def shard_name(number: int) -> str:
    """``00042`` for shard 42."""
    return f"{number:05d}"


@dataclass(frozen=True)
class ShardPaths:
    """The files of one shard: its tar, index (parquet), indexed-tar JSON and stats."""

    tar: Path
    index: Path
    tarindex: Path
    stats: Path

    def all(self) -> tuple[Path, ...]:
        """Every file, in that order."""
        return (self.tar, self.index, self.tarindex, self.stats)


def shard_paths(directory: Path, number: int) -> ShardPaths:
    """The files of shard ``number`` in ``directory``."""
    name = shard_name(number)
    return ShardPaths(
        tar=directory / f"{name}.tar",
        index=directory / f"{name}.parquet",
        tarindex=directory / f"{name}.json",
        stats=directory / f"{name}.stats.json",
    )


def read_stats(directory: Path, number: int) -> ShardStats | None:
    """The stats of shard ``number`` as written, or None when it has none (unfinished)."""
    return ShardStats.read(shard_paths(directory, number).stats)


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def shard_complete(directory: Path, number: int, check_bytes: bool = False) -> bool:
    """Whether shard ``number`` is complete: all its files exist (the stats, written last,
    among them); with ``check_bytes``, also its tar has the size and sha256 its stats give,
    and its index and indexed-tar JSON read (a damaged one has the shard written again)."""
    paths = shard_paths(directory, number)
    if not all(p.is_file() for p in paths.all()):
        return False
    if not check_bytes:
        return True
    stats = read_stats(directory, number)
    tar = paths.tar
    return (
        stats is not None
        and tar.stat().st_size == stats.tar_bytes
        and _readable_beside(paths)
        and file_sha256(tar) == stats.tar_sha256
    )


def _readable_beside(paths: ShardPaths) -> bool:
    """Whether a shard's index parquet (its footer) and indexed-tar JSON read."""
    try:
        pl.read_parquet_schema(paths.index)
        return isinstance(json.loads(paths.tarindex.read_bytes()).get("files"), dict)
    except (OSError, ValueError, AttributeError, pl.exceptions.PolarsError):
        return False


class _HashingFile(io.RawIOBase):
    """A write-only file that hashes what passes through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.raw.tell()

    def write(self, data: ReadableBuffer) -> int:
        self.sha256.update(data)
        return self.raw.write(data)


@dataclass(frozen=True)
class Sample:
    """One output sample: the image, its caption and its JSON record."""

    key: str
    webp: bytes
    caption: str
    meta: SampleRecord


class ShardWriter:
    """Writes one shard's tar and index; ``finish`` makes them visible atomically."""

    def __init__(self, directory: Path, number: int):
        self.directory = Path(directory)
        self.number = number
        self.paths = shard_paths(self.directory, number)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._tmp_tar = temp_path(self.paths.tar)
        self._raw = create_new(self._tmp_tar)
        self._hashing = _HashingFile(self._raw)
        self._tar = tarfile.open(  # noqa: SIM115 - closed in finish() or abort()
            fileobj=self._hashing, mode="w", format=tarfile.PAX_FORMAT
        )
        self._rows: list[dict[str, object]] = []
        self._members: list[Member] = []

    def _add_member(self, name: str, data: bytes, extra: dict[str, object] | None = None) -> int:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = TAR_MTIME
        info.mode = TAR_MODE
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._tar.addfile(info, io.BytesIO(data))
        # The data ends where the tar now stands, before its padding to 512 bytes.
        offset = self._tar.offset - (-(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE)
        digest = hashlib.sha256(data).hexdigest()
        self._members.append(Member(name, offset, len(data), digest, extra or {}))
        return offset

    def add(self, sample: Sample) -> None:
        """Append one sample; its members are written together in a fixed order."""
        if "." in sample.key:
            raise ValueError(f"sample key {sample.key!r} contains a dot")
        meta_bytes = json.dumps(sample.meta, sort_keys=True, ensure_ascii=False).encode()
        payload = {
            "webp": sample.webp,
            "txt": sample.caption.encode("utf-8"),
            "json": meta_bytes,
        }
        meta = sample.meta
        (width, height), bucket = meta["size"], meta["bucket"]
        extras = {"webp": image_fields(width, height, sample.caption) if width and height else {}}
        offsets = {
            ext: self._add_member(f"{sample.key}.{ext}", payload[ext], extras.get(ext))
            for ext in MEMBER_ORDER
        }
        kill_point("sample")
        self._rows.append(
            {
                "key": sample.key,
                "id": meta["id"],
                "site": meta["site"],
                "rating": meta["rating"],
                "width": width,
                "height": height,
                "bucket_width": bucket[0],
                "bucket_height": bucket[1],
                "bytes": len(sample.webp),
                "sha256": self._members[-len(MEMBER_ORDER)].sha256,
                "offset": offsets["webp"],
            }
        )

    def finish(self, counts: ShardCounts, seconds: float, plan: str = "") -> ShardStats:
        """Close, fsync and rename the tar, then write the index and the stats (last).

        Returns the stats as written: the task's counts, with the tar's sha256 and size and
        the ``plan`` it was written for. An
        earlier stats file of the shard goes first, so stats never describe other bytes
        than the tar's.
        """
        self.paths.stats.unlink(missing_ok=True)
        self._tar.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        kill_point("tar-written")
        os.replace(self._tmp_tar, self.paths.tar)
        kill_point("tar-renamed")
        index = io.BytesIO()
        pl.DataFrame(self._rows, schema=INDEX_SCHEMA).write_parquet(index, statistics=False)
        write_atomic(self.paths.index, index.getvalue())
        sha256 = self._hashing.sha256.hexdigest()
        write_tar_index(self.paths.tarindex, tar_index(self.paths.tar, sha256, self._members))
        stats = ShardStats(
            shard=shard_name(self.number),
            selected=counts.selected,
            samples=len(self._rows),
            outcomes=dict(sorted(counts.outcomes.items())),
            failures=tuple(counts.failures),
            reencoded=counts.reencoded,
            image_seconds=round(counts.image_seconds, 3),
            seconds=round(seconds, 3),
            tar_bytes=self.paths.tar.stat().st_size,
            tar_sha256=sha256,
            plan=plan,
        )
        kill_point("before-stats")
        write_atomic(self.paths.stats, stats.to_json())
        return stats

    def abort(self) -> None:
        """Drop the unfinished tar."""
        self._tar.close()
        self._raw.close()
        self._tmp_tar.unlink(missing_ok=True)
