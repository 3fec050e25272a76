"""Reading an output for training, without torch: each part's samples of an epoch
(:mod:`e6ingest.readers.epoch` says which, across ranks and DataLoader workers), and
batches of one aspect bucket each, resized and center-cropped as sd-scripts does, for a
latent-caching stage. Samples are read by offset (the shard indexes say where), so no
image is decoded to learn its size or bucket."""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from PIL import Image

import polars as pl

from e6ingest.buckets import fit_to_bucket
from e6ingest.readers.augment import CaptionChoice
from e6ingest.readers.epoch import Part, batch_plan, sample_rows
from e6ingest.shards.layout import OutputError


class _Files:
    """Open shard tars (a few at a time) and their indexed-tar JSON, for reads by offset."""

    def __init__(self, out: Path, keep: int = 8):
        self.out, self.keep = out, keep
        self._handles: OrderedDict[str, BinaryIO] = OrderedDict()
        self._members: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def read(self, shard: str, offset: int, size: int) -> bytes:
        handle = self._handles.pop(shard, None) or (self.out / shard).open("rb")
        self._handles[shard] = handle
        if len(self._handles) > self.keep:
            self._handles.popitem(last=False)[1].close()
        handle.seek(offset)
        data = handle.read(size)
        if len(data) != size:  # the tar was cut short since it was written
            raise OutputError(f"{self.out / shard}: ends {size - len(data):,} bytes short of "
                              f"the member at offset {offset:,}; e6ingest verify {self.out} "
                              "checks the whole output")  # fmt: skip
        return data

    def member(self, shard: str, name: str) -> bytes:
        files = self._members.pop(shard, None)
        if files is None:
            path = (self.out / shard).with_suffix(".json")
            try:
                files = json.loads(path.read_bytes())["files"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise OutputError(
                    f"{path}: an unreadable indexed-tar JSON ({exc}); e6ingest "
                    f"verify {self.out} checks the whole output"
                ) from None
        self._members[shard] = files
        if len(self._members) > self.keep:
            self._members.popitem(last=False)
        entry = files[name]
        return self.read(shard, entry["offset"], entry["size"])

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()


def _chosen(
    choice: CaptionChoice | None, key: str, epoch: int, txt: bytes, meta: bytes
) -> tuple[bytes, str | None]:
    """The caption a sample trains on this epoch, as ``{key}.txt`` bytes, and its variant."""
    if choice is None or not choice.active:
        return txt, None
    text, name = choice.caption(key, epoch, json.loads(meta), txt.decode())
    return text.encode(), name


def iter_part(
    out: Path, index: pl.DataFrame, part: Part, shuffle: bool, seed: int, epoch: int,
    decode: bool, choice: CaptionChoice | None = None,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """The samples of ``part``, in the webdataset shape (``__key__``, ``webp``, ``txt``,
    ``json``), decoded (PIL image, str, dict) unless ``decode`` is false; ``txt`` is the
    caption ``choice`` picks for the epoch, when given."""
    files = _Files(out)
    try:
        for row in sample_rows(index, part, shuffle, seed, epoch).iter_rows(named=True):
            webp = files.read(row["shard"], row["offset"], row["bytes"])
            txt = files.member(row["shard"], f"{row['key']}.txt")
            meta = files.member(row["shard"], f"{row['key']}.json")
            txt, variant = _chosen(choice, row["key"], epoch, txt, meta)
            sample: dict[str, Any] = {"__key__": row["key"], "webp": webp, "txt": txt, "json": meta}
            if decode:
                from PIL import Image

                sample.update(webp=Image.open(io.BytesIO(webp)), txt=txt.decode(),
                              json=json.loads(meta))  # fmt: skip
            if variant is not None:
                sample["variant"] = variant
            yield sample
    finally:
        files.close()


def _fitted(
    data: bytes, bucket: tuple[int, int]
) -> tuple[Image.Image, tuple[int, int], tuple[float, float, float, float]]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        width, height = original = image.size
        fit = fit_to_bucket(width, height, bucket)
        if image.size != fit.resized:
            image = image.resize(fit.resized, Image.Resampling.LANCZOS)
        left = (fit.resized[0] - bucket[0]) // 2
        top = (fit.resized[1] - bucket[1]) // 2
        image = image.crop((left, top, left + bucket[0], top + bucket[1]))
    return image, original, fit.crop_ltrb


def iter_batches(
    out: Path, index: pl.DataFrame, part: Part, batch_size: int, shuffle: bool, seed: int,
    epoch: int, drop_last: bool, as_numpy: bool, choice: CaptionChoice | None = None,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Batches of ``part``'s samples, each of one aspect bucket (module doc), as
    :func:`~e6ingest.readers.epoch.batch_plan` plans them."""
    plans = batch_plan(index, part, batch_size, shuffle, seed, epoch, drop_last)
    files = _Files(out)
    try:
        for bucket, chunk in plans:
            yield _batch(files, bucket, chunk, as_numpy, choice, epoch)
    finally:
        files.close()


def _batch(files: _Files, bucket: tuple[int, int], chunk: pl.DataFrame, as_numpy: bool,
           choice: CaptionChoice | None, epoch: int) -> dict[str, Any]:  # fmt: skip
    images, originals, crops, captions, metas, variants = [], [], [], [], [], []
    for row in chunk.iter_rows(named=True):
        image, original, crop = _fitted(files.read(row["shard"], row["offset"], row["bytes"]),
                                        bucket)  # fmt: skip
        images.append(image)
        originals.append(original)
        crops.append(crop)
        txt = files.member(row["shard"], f"{row['key']}.txt")
        meta = files.member(row["shard"], f"{row['key']}.json")
        text, variant = _chosen(choice, row["key"], epoch, txt, meta)
        captions.append(text.decode())
        variants.append(variant)
        metas.append(json.loads(meta))
    pixels: Any = images
    if as_numpy:
        import numpy as np

        pixels = np.stack([np.asarray(image) for image in images])
    return {
        "keys": chunk["key"].to_list(),
        "bucket": bucket,
        "images": pixels,
        "captions": captions,
        "variants": variants,
        "original_size": originals,
        "crop_ltrb": crops,
        "json": metas,
    }
