"""Reading a pull's output: the samples of every shard in order, and the shard indexes."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from e6ingest.core import first_line
from e6ingest.readers.augment import CaptionChoice
from e6ingest.readers.epoch import current_part, epoch_steps
from e6ingest.readers.training import iter_batches, iter_part
from e6ingest.shards.card import variant_names
from e6ingest.shards.layout import OutputError
from e6ingest.shards.manifest import OutputManifest, read_manifest


def split_name(name: str) -> tuple[str, str]:
    """``e621/12.webp`` -> (``e621/12``, ``webp``): the key runs to the basename's first dot."""
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext


def tar_samples(tar: tarfile.TarFile) -> Iterator[tuple[str, dict[str, bytes]]]:
    """The samples of an open tar as (key, {extension: bytes}), members grouped by key
    as webdataset groups them. Members that are not regular files are skipped."""
    key, members = "", dict[str, bytes]()
    for member in tar:
        data = tar.extractfile(member) if member.isfile() else None
        if data is None:
            continue
        member_key, ext = split_name(member.name)
        if member_key != key and members:
            yield key, members
            members = {}
        key = member_key
        members[ext] = data.read()
    if members:
        yield key, members


def shard_files(out: str | Path) -> list[Path]:
    """The shard tars of the output folder ``out``, in manifest order; one the manifest
    lists that is not there fails here, before any sample is read."""
    out = Path(out)
    return _present([out / entry.name for entry in read_manifest(out).shards], out)


def _present(files: list[Path], out: Path) -> list[Path]:
    """``files`` of the output folder ``out``, refused naming the first that is missing."""
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise OutputError(f"{missing[0]}: a shard of the manifest is not there ({len(missing)} "
                          f"in all); e6ingest verify {out} lists them, and the pull that "
                          "wrote them writes them again")  # fmt: skip
    return files


def read_index(out: str | Path) -> pl.DataFrame:
    """Every shard's index (docs/FORMAT.md) as one frame, with the ``shard`` tar name."""
    tars = shard_files(out)
    indexes = _present([tar.with_suffix(".parquet") for tar in tars], Path(out))
    frames = [
        _shard_index(index, out).with_columns(
            pl.lit(f"{tar.parent.name}/{tar.name}").alias("shard")
        )
        for tar, index in zip(tars, indexes, strict=True)
    ]
    return pl.concat(frames) if frames else pl.DataFrame()


def _shard_index(path: Path, out: str | Path) -> pl.DataFrame:
    """One shard's index; a damaged one refused naming it."""
    try:
        return pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise OutputError(
            f"{path}: an unreadable shard index ({first_line(exc)}); "
            f"e6ingest verify {out} checks the whole output, and rerunning "
            "the pull that wrote it repairs it"
        ) from None


def iter_samples(out: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Every sample of ``out`` as (key, {extension: bytes}), streaming, in shard order."""
    for path in shard_files(out):
        try:
            with tarfile.open(path, mode="r|") as tar:
                yield from tar_samples(tar)
        except (tarfile.TarError, EOFError) as exc:
            raise OutputError(
                f"{path}: an unreadable tar ({exc}); e6ingest verify {out} "
                "checks the whole output, and rerunning the pull that wrote it "
                "writes it again"
            ) from None


@dataclass
class ShardSet:
    """A pull's output opened for reading (docs/TRAINERS.md):

    - ``index``: the shard indexes, one row per sample (size, bucket, offset), polars;
    - ``samples()``: every sample once per epoch across ranks and DataLoader workers,
      optionally shuffled; ``batches()``: batches of one aspect bucket, resized and
      center-cropped as sd-scripts does, for latent caching; with several ranks, as many
      of either on every rank (a few repeated); ``steps()``: how many batches a rank gets;
    - ``dataset``: a ``webdataset.WebDataset`` split by node and worker.
    """

    out: Path
    urls: list[str]
    manifest: OutputManifest
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
    def dataset(self) -> Any:  # a webdataset.WebDataset
        """A fresh ``webdataset.WebDataset`` over the shards (no shuffling), split by node
        (``RANK``/``WORLD_SIZE``) and DataLoader worker, decoded with ``decode`` (``"pil"``
        images, ``json`` as dicts, ``txt`` as str) unless None. Splitting is by shard: with
        fewer shards than ranks x workers, use :meth:`samples`, which splits by sample."""
        import webdataset as wds

        pipeline = wds.WebDataset(
            self.urls, shardshuffle=False, empty_check=False,
            nodesplitter=wds.split_by_node, workersplitter=wds.split_by_worker,
        )  # fmt: skip
        return pipeline.decode(self.decode) if self.decode else pipeline

    def caption_choice(
        self, variant_weights: Mapping[str, float] | None = None, shuffle_tags: bool = False,
        tag_dropout: float = 0.0, keep_tokens: int = 0, seed: int = 0,
    ) -> CaptionChoice:  # fmt: skip
        """How :meth:`samples` and :meth:`batches` choose each sample's caption: a variant
        by ``variant_weights`` (name -> weight; ``default`` is the caption), then tags after
        the fixed head shuffled and dropped out (docs/TRAINERS.md), seeded by ``seed``, the
        epoch and the key. Names the output lacks are refused."""
        caption = self.manifest.config.get("caption", {})
        if not isinstance(variant_weights, Mapping | None):
            raise TypeError(f"variant_weights maps variant names to weights, e.g. "
                            f"{{'short': 1}}, not {variant_weights!r}")  # fmt: skip
        choice = CaptionChoice(
            tuple((variant_weights or {}).items()), shuffle_tags, tag_dropout, keep_tokens,
            caption.get("separator", ", "), caption.get("keep_tokens_separator", ""), seed,
        )  # fmt: skip
        choice.check(variant_names(self.manifest.config))
        return choice

    def samples(
        self, rank: int | None = None, world_size: int | None = None, worker: int | None = None,
        num_workers: int | None = None, shuffle: bool = False, seed: int = 0, epoch: int = 0,
        **captions: Any,
    ) -> Iterator[dict[str, Any]]:  # fmt: skip
        """This process's samples of one epoch (``__key__``, ``webp``, ``txt``, ``json``),
        decoded unless the set was opened with ``decode=None``. Ranks default to
        ``RANK``/``WORLD_SIZE``, workers to the torch DataLoader worker; across all of them
        every sample comes once, each part a run of consecutive samples, the runs' sizes
        within one of each other; with several ranks a shorter run repeats its first
        sample, so every rank takes as many steps (as torch's ``DistributedSampler``).
        ``shuffle`` orders them by ``seed`` and ``epoch``. ``captions``
        (``variant_weights``, ``shuffle_tags``, ``tag_dropout``, ``keep_tokens``): the
        caption ``txt`` holds, as :meth:`caption_choice` says."""
        part = current_part(rank, world_size, worker, num_workers)
        choice = self.caption_choice(seed=seed, **captions)
        return iter_part(self.out, self.index, part, shuffle, seed, epoch,
                         decode=self.decode is not None, choice=choice)  # fmt: skip

    def batches(
        self, batch_size: int, rank: int | None = None, world_size: int | None = None,
        worker: int | None = None, num_workers: int | None = None, shuffle: bool = False,
        seed: int = 0, epoch: int = 0, drop_last: bool = False, as_numpy: bool = True,
        **captions: Any,
    ) -> Iterator[dict[str, Any]]:  # fmt: skip
        """Batches of this process's samples, each of one aspect bucket: ``images``
        resized and center-cropped to the ``bucket`` as sd-scripts does (a uint8 array
        [B, H, W, 3], or PIL images), with ``keys``, ``captions``, ``original_size``
        [(W, H)] and ``crop_ltrb`` (what sd-scripts' latent files record) and ``json``.
        Parts and ``captions`` as in :meth:`samples`. With several ranks every part makes
        as many batches as the part with the most (the others repeat some of theirs), or
        with ``drop_last`` as the part with the fewest full ones, so no rank waits at the
        end of an epoch for a step the others never take."""
        part = current_part(rank, world_size, worker, num_workers)
        choice = self.caption_choice(seed=seed, **captions)
        return iter_batches(self.out, self.index, part, batch_size, shuffle, seed, epoch,
                            drop_last, as_numpy, choice)  # fmt: skip

    def steps(
        self, batch_size: int, num_workers: int = 0, world_size: int | None = None,
        drop_last: bool = False,
    ) -> int:  # fmt: skip
        """How many batches :meth:`batches` gives one rank in an epoch, all its DataLoader
        workers together (``num_workers``: the DataLoader's, 0 and 1 alike): the steps per
        epoch an LR schedule needs, found without reading an image. The same on every
        rank; ``world_size`` defaults to ``WORLD_SIZE``."""
        part = current_part(0, world_size, 0, num_workers)
        return epoch_steps(self.index, part.world_size, part.num_workers, batch_size, drop_last)

    @property
    def features(self) -> Any:  # a datasets.Features
        """The samples' members as ``datasets.Features`` (what the dataset card declares),
        for ``load_dataset("webdataset", data_files="OUT/shards/*.tar", features=...)``:
        without them, ``datasets`` infers types from the first samples and fails on a field
        empty there and filled later."""
        from e6ingest.shards.card import datasets_features

        return datasets_features(variant_names(self.manifest.config))

    def __len__(self) -> int:
        return sum(entry.samples for entry in self.manifest.shards)


def open_shards(out: str | Path, decode: str | None = "pil") -> ShardSet:
    """Open the output folder of a pull for a trainer::

    shards = e6ingest.open_shards("out")
    for sample in shards.samples(shuffle=True, seed=0):   # {"__key__", "webp", "txt", "json"}
        ...
    for batch in shards.batches(16):                     # one aspect bucket per batch
        batch["images"], batch["original_size"], batch["crop_ltrb"]
    shards.index.group_by("bucket_width", "bucket_height").len()
    """
    out = Path(out)
    manifest = read_manifest(out)
    tars = shard_files(out)
    _present([tar.with_suffix(".parquet") for tar in tars], out)  # the index batches() reads
    return ShardSet(out, [str(p) for p in tars], manifest, decode)
