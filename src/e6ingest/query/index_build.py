"""Building a tag index (see ``index``): one streaming pass over the metadata into a work
file, then the small columns, the tag vocabulary and the posting lists from it, in bounded
memory whatever the number of posts.

Layout of an index folder (every file e6ingest's, ``index.json`` written last):

- ``rows.arrow``: one row per post of the metadata (deleted ones included), in the order of
  the canonical frame: the columns queries filter on and the tag counts (``tagcount``,
  ``gentags``...), uncompressed Arrow IPC that is memory-mapped when read;
- ``tags.parquet``: every tag, sorted, with its number of ``posts`` and the ``start`` of its
  posting list;
- ``postings.arrow``: the ``row`` numbers of each tag's posts, sorted, one list after the
  other in tag order (uncompressed Arrow IPC, memory-mapped);
- ``index.json``: the format version, the metadata files' identity and the build's record.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from e6ingest.core import temp_path, write_atomic
from e6ingest.metadata import scan_files
from e6ingest.query.metatags import COUNTED, NUMERIC

INDEX_VERSION = 1
MARKER = "index.json"
ROW_COLUMNS = ("id", "rating", "width", "height", "file_ext", "score", "fav_count",
               "created_at", "md5", "parent_id", "is_deleted")  # fmt: skip
TOKENS = r"\S+"  # a tag, as the scan's whole-tag regex sees one
BATCH_ROWS = 262_144  # posts split into tags at a time
BUCKETS = 32  # posting pairs sorted in this many parts (by ranges of tags)
Report = Callable[[int, int], None]  # (posts done, posts in all)


def metadata_rows(files: Sequence[Path]) -> int:
    """The rows of the metadata files, from their footers."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def _tags(column: pl.Expr) -> pl.Expr:
    """A post's distinct tags: the whitespace-separated words of its tag string."""
    return column.str.extract_all(TOKENS).list.unique().fill_null([])


def _vocabulary(work: Path) -> pl.DataFrame:
    """Every tag of the work file with its number of posts and its posting list's start,
    sorted by tag (the tag's number is its row)."""
    counted = (
        pl.scan_parquet(work)
        .select(_tags(pl.col("tags")).alias("tag"))
        .explode("tag")
        .drop_nulls()
        .group_by("tag")
        .agg(pl.len().cast(pl.UInt32).alias("posts"))
        .collect(engine="streaming")
        .sort("tag")
    )
    starts = counted["posts"].cast(pl.UInt64).cum_sum() - counted["posts"].cast(pl.UInt64)
    return counted.with_columns(starts.alias("start"))


def _bucket_bounds(posts: pl.Series) -> np.ndarray:
    """Tag numbers where each bucket of about equal postings starts."""
    cumulative = posts.cast(pl.UInt64).cum_sum().to_numpy()
    total = int(cumulative[-1]) if len(cumulative) else 0
    targets = [total * i // BUCKETS for i in range(1, BUCKETS)]
    return np.unique(np.searchsorted(cumulative, targets, side="right"))


def _pairs(work: Path, vocabulary: pl.DataFrame, folder: Path, report: Report | None, total):
    """The (tag number, row) pairs of every post, appended to one parquet file per bucket
    of tags; the bucket files, in tag order."""
    bounds = _bucket_bounds(vocabulary["posts"])
    numbers = vocabulary.select("tag", pl.int_range(pl.len(), dtype=pl.UInt32).alias("n"))
    writers: dict[int, pq.ParquetWriter] = {}
    files = [folder / f"pairs-{b:03d}.parquet" for b in range(len(bounds) + 1)]
    offset = 0
    try:
        for batch in pq.ParquetFile(work).iter_batches(BATCH_ROWS, columns=["tags"]):
            pairs = (
                pl.from_arrow(batch)
                .select(
                    pl.int_range(offset, offset + batch.num_rows, dtype=pl.UInt32).alias("row"),
                    _tags(pl.col("tags")).alias("tag"),
                )
                .explode("tag")
                .drop_nulls("tag")
                .join(numbers, on="tag", how="inner")
                .select("n", "row")
            )
            bucket = np.searchsorted(bounds, pairs["n"].to_numpy(), side="right")
            for b, part in pairs.with_columns(pl.Series("b", bucket)).partition_by(
                "b", as_dict=True
            ).items():  # fmt: skip
                table = part.drop("b").to_arrow()
                if b[0] not in writers:
                    writers[b[0]] = pq.ParquetWriter(files[b[0]], table.schema)
                writers[b[0]].write_table(table)
            offset += batch.num_rows
            if report is not None:
                report(min(offset, total - 1), total)
    finally:
        for writer in writers.values():
            writer.close()
    return [f for f in files if f.exists()]


def _write_postings(buckets: list[Path], path: Path) -> int:
    """The rows of every bucket, sorted by tag number then row, as one Arrow file."""
    schema = pa.schema([("row", pa.uint32())])
    written = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for bucket in buckets:
            rows = pl.read_parquet(bucket).sort("n", "row")["row"]
            writer.write_table(pa.table({"row": rows.to_arrow()}, schema=schema))
            written += len(rows)
            bucket.unlink()
    return written


def build(files: Sequence[Path], schemas: Sequence[str | None], folder: Path,
          identity: dict, report: Report | None = None) -> None:  # fmt: skip
    """Build the index of the metadata ``files`` into ``folder`` (which must not exist):
    in a temporary folder beside it, renamed into place once complete."""
    start = time.perf_counter()
    total = metadata_rows(files)
    work_folder = temp_path(folder)
    work_folder.mkdir(parents=True)
    try:
        every = scan_files(list(files), list(schemas), include_deleted=True)
        work = work_folder / "work.parquet"
        counts = [NUMERIC[name].alias(name) for name in COUNTED]
        every.select(*ROW_COLUMNS, *counts, "tags").sink_parquet(
            work, row_group_size=BATCH_ROWS, engine="streaming"
        )
        pl.scan_parquet(work).drop("tags").sink_ipc(work_folder / "rows.arrow")
        vocabulary = _vocabulary(work)
        buckets = _pairs(work, vocabulary, work_folder, report, total)
        postings = _write_postings(buckets, work_folder / "postings.arrow")
        if report is not None:
            report(total, total)
        work.unlink()
        vocabulary.write_parquet(work_folder / "tags.parquet", row_group_size=65_536)
        record = {
            "version": INDEX_VERSION,
            "identity": identity,
            "rows": pl.scan_ipc(work_folder / "rows.arrow").select(pl.len()).collect().item(),
            "tags": len(vocabulary),
            "postings": postings,
            "build_seconds": round(time.perf_counter() - start, 1),
        }
        write_atomic(work_folder / MARKER, json.dumps(record, indent=1).encode())
        try:
            work_folder.rename(folder)
        except OSError:  # another process finished the same index first
            if not (folder / MARKER).is_file():
                raise
    finally:
        shutil.rmtree(work_folder, ignore_errors=True)
