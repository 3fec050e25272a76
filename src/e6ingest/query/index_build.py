"""Building a tag index (see ``index``): one streaming pass over the metadata, batch by
batch, then the posting lists sorted part by part, in bounded memory whatever the number
of posts.

Layout of an index folder (every file e6ingest's, ``index.json`` written last):

- ``rows.arrow``: one row per post of the metadata (deleted ones included), in the order of
  the canonical frame: the columns queries filter on and the tag counts (``tagcount``,
  ``gentags``...), uncompressed Arrow IPC that is memory-mapped when read;
- ``tags.parquet``: every tag, sorted, with its number of ``posts`` and the ``start`` of its
  posting list;
- ``postings.arrow``: the ``row`` numbers of each tag's posts, sorted, one list after the
  other (uncompressed Arrow IPC, memory-mapped);
- ``index.json``: the format version, the metadata files' identity and the build's record.

Tags are numbered in order of first appearance (a polars ``Categories`` of the build) as
the batches split their tag strings on spaces; a token that is empty or holds other
whitespace or a control character (a tab, a no-break space, NUL) is split again as the
scan's whole-tag regex splits it (``metadata.schemas.TAG_SEPARATOR``), so both see the same
tags.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from e6ingest.core import temp_path, write_atomic
from e6ingest.metadata.schemas import (
    TAG_CHARACTER,
    TAG_SEPARATOR,
    file_columns,
    file_schema,
    repeated_rows,
)
from e6ingest.query.metatags import COUNTED, NUMERIC

INDEX_VERSION = 3
MARKER = "index.json"
DATA_FILES = ("rows.arrow", "postings.arrow", "tags.parquet")  # beside the marker
ROW_COLUMNS = ("id", "rating", "width", "height", "file_ext", "score", "fav_count",
               "created_at", "md5", "parent_id", "is_deleted")  # fmt: skip
BATCH_ROWS = 131_072  # posts read and split into tags at a time
BUCKET_POSTS = 200_000  # posts per part the posting pairs are kept in (by tag number)
MIN_BUCKETS = 32  # ... in at least this many parts, each sorted alone
PAIRS_FORMAT = pa.ipc.IpcWriteOptions(compression="lz4")  # the buckets' (a writer holds no pages)
Report = Callable[[int, int], None]  # (posts done, posts in all)


def metadata_rows(files: Sequence[Path]) -> int:
    """The rows of the metadata files, from their footers."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def _batches(
    files: Sequence[Path], schemas: Sequence[str | None], columns: Sequence[pl.Expr | str]
) -> Iterator[pl.DataFrame]:
    """The canonical rows of the metadata, a batch at a time: ``columns`` and the
    space-separated ``tokens`` of each tag string. A later file wins for a repeated id, as
    in ``metadata.combine``, and a later row of the same file (``repeated_rows``)."""
    for i, (path, schema) in enumerate(zip(files, schemas, strict=True)):
        found = file_schema(path, schema)
        later = [pl.scan_parquet(f).select(pl.col("id").cast(pl.Int64)) for f in files[i + 1 :]]
        newer = pl.concat(later).collect()["id"] if later else None
        source = pq.ParquetFile(path, pre_buffer=False)  # else every row group read stays held
        wanted = [c for c in file_columns(path) if c in found.required]
        if source.metadata.num_rows == 0:  # still one (empty) batch: the columns' types
            tables = iter([source.schema_arrow.empty_table().select(wanted)])
        else:
            tables = source.iter_batches(BATCH_ROWS, columns=wanted)
        repeated = repeated_rows(path)
        start = 0
        for table in tables:
            count = table.num_rows
            if len(repeated):  # rows whose id comes again later in the file
                table = table.filter(pa.array(~np.isin(np.arange(start, start + count), repeated)))
            start += count
            frame = found.adapt(pl.from_arrow(table).lazy())
            if newer is not None:
                frame = frame.filter(~pl.col("id").is_in(newer.implode()))
            yield frame.select(*columns, pl.col("tags").str.split(" ").alias("tokens")).collect()


class _Numbering:
    """Tag numbers for tokens, in order of first appearance; tokens that are not one tag
    (empty, or holding whitespace other than a space) stand for the tags in them."""

    def __init__(self) -> None:
        self.categories = pl.Categories(f"e6ingest-index-{uuid.uuid4().hex}")
        self.dtype = pl.Categorical(self.categories)
        # Categories live while a column uses them: this empty one keeps them to the end.
        self._alive = pl.Series([], dtype=self.dtype)
        self.checked = 0  # tokens numbered so far whose text was checked
        self.split: dict[int, list[int]] = {}  # token number -> its tags' numbers

    def numbers(self, tokens: pl.Expr | pl.Series) -> pl.Expr | pl.Series:
        """The tag number of each token."""
        return tokens.cast(self.dtype).to_physical()

    def _check_new(self) -> None:
        """Record what the tokens numbered since the last check that are not one tag
        stand for (their parts are numbered too, and checked next time: they pass)."""
        texts = self.categories.to_series().slice(self.checked)
        odd = (
            texts.to_frame("token")
            .with_row_index("n", offset=self.checked)
            .filter(pl.col("token").str.contains(f"^$|{TAG_SEPARATOR}"))
            .with_columns(pl.col("token").str.extract_all(f"{TAG_CHARACTER}+"))
        )
        self.checked += len(texts)
        for n, parts in odd.iter_rows():
            self.split[n] = self.numbers(pl.Series(parts, dtype=pl.String)).to_list()

    def pairs(self, frame: pl.DataFrame, offset: int) -> pl.DataFrame:
        """The (tag number ``n``, ``row``) pairs of a batch whose first row is ``offset``."""
        pairs = (
            frame.select(
                pl.int_range(offset, offset + frame.height, dtype=pl.UInt32).alias("row"),
                "tokens",
            )
            .explode("tokens")
            .drop_nulls("tokens")
            .select(self.numbers(pl.col("tokens")).alias("n"), "row")
        )
        self._check_new()
        if not self.split:
            return pairs
        odd = pl.col("n").is_in(list(self.split))
        mapping = pl.DataFrame(
            {"n": list(self.split), "tag": list(self.split.values())},
            schema={"n": pl.UInt32, "tag": pl.List(pl.UInt32)},
        )
        fixed = pairs.filter(odd).join(mapping, on="n").explode("tag").drop_nulls("tag")
        return pl.concat([pairs.filter(~odd), fixed.select(pl.col("tag").alias("n"), "row")])

    def tags(self) -> pl.Series:
        """The text of every tag number."""
        return self.categories.to_series()


def _first_pass(files, schemas, folder: Path, report: Report | None, total: int):
    """Write ``rows.arrow`` and the bucket files of posting pairs; the numbering and the
    bucket files."""
    numbering = _Numbering()
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
    parts = max(MIN_BUCKETS, -(-total // BUCKET_POSTS))
    buckets = [folder / f"pairs-{b:04d}.arrows" for b in range(parts)]
    rows_writer = None
    offset = 0
    try:
        counts = [NUMERIC[name].alias(name) for name in COUNTED]
        for frame in _batches(files, schemas, [*ROW_COLUMNS, *counts]):
            table = frame.drop("tokens").to_arrow(compat_level=pl.CompatLevel.oldest())
            if rows_writer is None:
                rows_writer = pa.ipc.new_file(str(folder / "rows.arrow"), table.schema)
            rows_writer.write_table(table)
            pairs = numbering.pairs(frame, offset)
            keyed = pairs.with_columns((pl.col("n") % parts).alias("b"))
            for (b,), part in keyed.partition_by("b", as_dict=True).items():
                part_table = part.drop("b").to_arrow()
                if b not in writers:
                    writers[b] = pa.ipc.new_stream(str(buckets[b]), part_table.schema,
                                                   options=PAIRS_FORMAT)  # fmt: skip
                writers[b].write_table(part_table)
            offset += frame.height
            if report is not None:
                report(min(offset, total - 1), total)
    finally:
        for writer in writers.values():
            writer.close()
        if rows_writer is not None:
            rows_writer.close()
    return numbering, [b for b in buckets if b.exists()], offset


def tag_counts(files: Sequence[Path], schemas: Sequence[str | None]) -> pl.DataFrame:
    """Every tag of the metadata ``files`` (deleted posts included) with its number of
    ``posts``, most used first: the index's vocabulary, counted without building one, in
    one streaming pass."""
    numbering = _Numbering()
    posts = np.zeros(0, dtype=np.int64)
    offset = 0
    for frame in _batches(files, schemas, []):
        numbers = numbering.pairs(frame, offset).unique()["n"].to_numpy()
        found = np.bincount(numbers)
        if len(found) > len(posts):
            posts = np.concatenate([posts, np.zeros(len(found) - len(posts), np.int64)])
        posts[: len(found)] += found
        offset += frame.height
    tags = numbering.tags().head(len(posts)).alias("tag")
    counted = pl.DataFrame([tags, pl.Series("posts", posts, pl.UInt32)])
    return counted.filter(pl.col("posts") > 0).sort(["posts", "tag"], descending=[True, False])


def _sorted_pairs(bucket: Path) -> tuple[np.ndarray, np.ndarray]:
    """A bucket's pairs sorted by tag number then row, each once: the tag numbers and the
    rows (one 64-bit key per pair, sorted in place, so about 20 bytes a pair at the peak)."""
    with pa.ipc.open_stream(pa.memory_map(str(bucket))) as reader:
        table = reader.read_all()
    keys = np.empty(table.num_rows, np.uint64)
    keys[:] = table["n"].to_numpy()
    keys <<= np.uint64(32)
    keys |= table["row"].to_numpy()
    del table
    keys.sort()
    if len(keys):
        first = np.empty(len(keys), bool)
        first[0] = True
        np.not_equal(keys[1:], keys[:-1], out=first[1:])
        keys = keys[first]  # a post naming a tag twice is on its list once
    rows = keys.astype(np.uint32)  # the low 32 bits
    keys >>= np.uint64(32)
    return keys.astype(np.uint32), rows


def _write_postings(buckets: list[Path], path: Path) -> pl.DataFrame:
    """Every bucket's rows, sorted by tag number then row, as one Arrow file; each tag
    number's ``posts`` and ``start`` in it."""
    schema = pa.schema([("row", pa.uint32())])
    lists = []
    written = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for bucket in buckets:
            numbers, rows = _sorted_pairs(bucket)
            writer.write_table(pa.table({"row": rows}, schema=schema))
            starts = np.flatnonzero(np.r_[True, numbers[1:] != numbers[:-1]][: len(numbers)])
            posts = np.diff(np.append(starts, len(numbers)))
            lists.append(pl.DataFrame({"n": numbers[starts], "posts": posts.astype(np.uint32),
                                       "start": starts.astype(np.uint64) + written}))  # fmt: skip
            written += len(rows)
            bucket.unlink()
    empty = pl.DataFrame(schema={"n": pl.UInt32, "posts": pl.UInt32, "start": pl.UInt64})
    return pl.concat([empty, *lists])


def build(files: Sequence[Path], schemas: Sequence[str | None], folder: Path,
          identity: dict, report: Report | None = None) -> None:  # fmt: skip
    """Build the index of the metadata ``files`` into ``folder`` (which must not exist):
    in a temporary folder beside it, renamed into place once complete."""
    start = time.perf_counter()
    total = metadata_rows(files)
    work_folder = temp_path(folder)
    work_folder.mkdir(parents=True)
    try:
        numbering, buckets, rows = _first_pass(files, schemas, work_folder, report, total)
        lists = _write_postings(buckets, work_folder / "postings.arrow")
        tags = numbering.tags().gather(lists["n"]).alias("tag")
        vocabulary = lists.select(tags, "posts", "start").sort("tag")
        vocabulary.write_parquet(work_folder / "tags.parquet", row_group_size=65_536)
        if report is not None:
            report(total, total)
        record = {
            "version": INDEX_VERSION,
            "identity": identity,
            "rows": rows,
            "tags": len(vocabulary),
            "postings": int(vocabulary["posts"].sum() or 0),
            "build_seconds": round(time.perf_counter() - start, 1),
            "sizes": {name: (work_folder / name).stat().st_size for name in DATA_FILES},
        }
        write_atomic(work_folder / MARKER, json.dumps(record, indent=1).encode())
        try:
            work_folder.rename(folder)
        except OSError:  # another process finished the same index first
            if not (folder / MARKER).is_file():
                raise
    finally:
        shutil.rmtree(work_folder, ignore_errors=True)
