"""Reading a pull's output: the samples of every shard in order, and the shard indexes."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from e6ingest.shards.layout import read_manifest


def split_name(name: str) -> tuple[str, str]:
    """``e621/12.webp`` -> (``e621/12``, ``webp``): the key runs to the basename's first dot."""
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext


def tar_samples(tar: tarfile.TarFile) -> Iterator[tuple[str, dict[str, bytes]]]:
    """The samples of an open tar as (key, {extension: bytes}), members grouped by key
    as webdataset groups them. Members that are not regular files are skipped."""
    key, members = None, {}
    for member in tar:
        if not member.isfile():
            continue
        member_key, ext = split_name(member.name)
        if member_key != key and members:
            yield key, members
            members = {}
        key = member_key
        members[ext] = tar.extractfile(member).read()
    if members:
        yield key, members


def shard_files(out: str | Path) -> list[Path]:
    """The shard tars of the output folder ``out``, in manifest order."""
    out = Path(out)
    return [out / entry["name"] for entry in read_manifest(out)["shards"]]


def read_index(out: str | Path) -> pl.DataFrame:
    """Every shard's index (docs/FORMAT.md) as one frame, with the ``shard`` tar name."""
    frames = [
        pl.read_parquet(tar.with_suffix(".parquet")).with_columns(
            pl.lit(f"{tar.parent.name}/{tar.name}").alias("shard")
        )
        for tar in shard_files(out)
    ]
    return pl.concat(frames) if frames else pl.DataFrame()


def iter_samples(out: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Every sample of ``out`` as (key, {extension: bytes}), streaming, in shard order."""
    for path in shard_files(out):
        with tarfile.open(path, mode="r|") as tar:
            yield from tar_samples(tar)


@dataclass
class ShardSet:
    """A pull's output opened for reading: ``dataset`` is a webdataset pipeline over the
    shards in order, ``index`` the shard indexes (size, bucket, offset of every sample)."""

    out: Path
    urls: list[str]
    manifest: dict
    decode: str | None = "pil"
    _index: pl.DataFrame | None = field(default=None, repr=False)

    @property
    def index(self) -> pl.DataFrame:
        """One row per sample: key, id, site, rating, width, height, bucket, bytes, sha256,
        offset, shard."""
        if self._index is None:
            self._index = read_index(self.out)
        return self._index

    @property
    def dataset(self):
        """A fresh ``webdataset.WebDataset`` over the shards (no shuffling), decoded with
        ``decode`` (``"pil"`` images, ``json`` as dicts, ``txt`` as str) unless None."""
        import webdataset as wds

        pipeline = wds.WebDataset(self.urls, shardshuffle=False, empty_check=False)
        return pipeline.decode(self.decode) if self.decode else pipeline

    def __len__(self) -> int:
        return sum(entry["samples"] for entry in self.manifest["shards"])


def open_shards(out: str | Path, decode: str | None = "pil") -> ShardSet:
    """Open the output folder of a pull for a trainer::

    shards = e6ingest.open_shards("out")
    for sample in shards.dataset:   # {"__key__", "webp", "txt", "json"}
        ...
    shards.index.group_by("bucket_width", "bucket_height").len()
    """
    out = Path(out)
    manifest = read_manifest(out)
    return ShardSet(out, [str(p) for p in shard_files(out)], manifest, decode)
