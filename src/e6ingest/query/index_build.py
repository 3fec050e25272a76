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

import itertools
import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from e6ingest.arrays import to_arrow, to_numpy
from e6ingest.core import available_cores, map_ahead, read_ahead, temp_path, write_atomic
from e6ingest.metadata import canonical_batches
from e6ingest.metadata.schemas import TAG_CHARACTER, TAG_SEPARATOR
from e6ingest.query.metatags import COUNTED, NUMERIC

INDEX_VERSION = 5  # 5: rows without an id left out; 4: columns of other types read
MARKER = "index.json"
DATA_FILES = ("rows.arrow", "postings.arrow", "tags.parquet")  # beside the marker
ROW_COLUMNS = ("id", "rating", "width", "height", "file_ext", "score", "fav_count",
               "created_at", "md5", "parent_id", "is_deleted")  # fmt: skip
BATCH_ROWS = 131_072  # posts read and split into tags at a time
BUCKET_POSTS = 200_000  # posts per part the posting pairs are kept in (by tag number)
MIN_BUCKETS = 32  # ... in at least this many parts, each sorted alone
PAIRS_FORMAT = pa.ipc.IpcWriteOptions(compression="lz4")  # the buckets' (a writer holds no pages)
# (posts done, posts in all): every post read is reported as ``total - 1`` while the posting
# lists are sorted and written, and ``total`` once the index is complete
Report = Callable[[int, int], None]


def metadata_rows(files: Sequence[Path]) -> int:
    """The rows of the metadata files, from their footers."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def _batches(
    files: Sequence[Path], schemas: Sequence[str | None], columns: Sequence[pl.Expr | str]
) -> Iterator[pl.DataFrame]:
    """The canonical rows of the metadata (deleted posts included), a batch at a time:
    ``columns`` and the space-separated ``tokens`` of each tag string."""
    tokens = pl.col("tags").str.split(" ").alias("tokens")
    for frame in canonical_batches(files, schemas, BATCH_ROWS, include_deleted=True):
        yield frame.select(*columns, tokens).collect()


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
        self.runs: dict[int, int] = {}  # ... -> its runs of non-whitespace (``tagcount``)

    def numbers(self, tokens: pl.Series) -> np.ndarray:
        """The tag number of each token."""
        numbers: np.ndarray = tokens.cast(self.dtype).to_physical().to_numpy()
        return numbers.astype(np.uint32, copy=False)

    def _check_new(self, highest: int) -> None:
        """Record what the tokens numbered since the last check (up to ``highest``) that
        are not one tag stand for (their parts are numbered too, and checked next time:
        they pass)."""
        if highest < self.checked:
            return
        texts = self.categories.to_series().slice(self.checked)
        odd = (
            texts.to_frame("token")
            .with_row_index("n", offset=self.checked)
            .filter(pl.col("token").str.contains(f"^$|{TAG_SEPARATOR}"))
            .select(
                "n",
                pl.col("token").str.extract_all(f"{TAG_CHARACTER}+").alias("parts"),
                pl.col("token").str.count_matches(r"\S+").alias("runs"),
            )
        )
        self.checked += len(texts)
        for n, parts, runs in odd.iter_rows():
            self.split[n] = self.numbers(pl.Series(parts, dtype=pl.String)).tolist()
            self.runs[n] = runs

    def pairs(self, frame: pl.DataFrame, offset: int) -> tuple[np.ndarray, ...]:
        """The tag numbers and rows of a batch whose first row is ``offset`` (one pair per
        tag a post names, in row order), and each post's ``tagcount`` (its runs of
        non-whitespace, as the metatag counts them in the tag string)."""
        tokens = frame["tokens"]
        lengths = tokens.list.len().fill_null(0).to_numpy()
        numbers = self.numbers(tokens.explode(empty_as_null=False).drop_nulls())
        rows = np.repeat(np.arange(offset, offset + frame.height, dtype=np.uint32), lengths)
        self._check_new(int(numbers.max()) if len(numbers) else -1)
        counts = lengths.astype(np.int64)
        odd = np.isin(numbers, np.fromiter(self.split, np.uint32)) if self.split else None
        if odd is None or not odd.any():
            return numbers, rows, counts.astype(np.uint32)
        runs = np.array([self.runs[int(n)] - 1 for n in numbers[odd]], np.int64)
        counts += np.bincount(rows[odd] - offset, runs, frame.height).astype(np.int64)
        parts = [np.array(self.split[int(n)], np.uint32) for n in numbers[odd]]
        sizes = np.array([len(p) for p in parts])
        fixed_numbers = np.concatenate([np.zeros(0, np.uint32), *parts])
        fixed_rows = np.repeat(rows[odd], sizes)
        numbers = np.concatenate([numbers[~odd], fixed_numbers])
        rows = np.concatenate([rows[~odd], fixed_rows])
        order = np.argsort(rows, kind="stable")  # back in row order
        return numbers[order], rows[order], counts.astype(np.uint32)

    def tags(self) -> pl.Series:
        """The text of every tag number."""
        return self.categories.to_series()


def _by_bucket(
    numbers: np.ndarray, rows: np.ndarray, parts: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """The pairs grouped by bucket (tag number modulo ``parts``), row order kept within
    each: (bucket, numbers, rows) for each bucket that has some."""
    bucket = (numbers % parts).astype(np.uint16)
    order = np.argsort(bucket, kind="stable")  # a radix sort for 16-bit keys
    counts = np.bincount(bucket, minlength=parts)
    ends = np.cumsum(counts)
    numbers, rows = numbers[order], rows[order]
    for b in np.flatnonzero(counts):
        lo, hi = ends[b] - counts[b], ends[b]
        yield int(b), numbers[lo:hi], rows[lo:hi]


def _first_pass(
    files: Sequence[Path],
    schemas: Sequence[str | None],
    folder: Path,
    report: Report | None,
    total: int,
) -> tuple[_Numbering, list[Path], int, int]:
    """Write ``rows.arrow`` and the bucket files of posting pairs; the numbering and the
    bucket files."""
    numbering = _Numbering()
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
    parts = max(MIN_BUCKETS, -(-total // BUCKET_POSTS))
    buckets = [folder / f"pairs-{b:04d}.arrows" for b in range(parts)]
    pair_schema = pa.schema([("n", pa.uint32()), ("row", pa.uint32())])
    rows_writer = None
    offset = 0
    try:
        # tagcount from the tokens split anyway (a regex over every tag string costs more)
        counts = [NUMERIC[name].alias(name) for name in COUNTED if name != "tagcount"]
        for frame in read_ahead(_batches(files, schemas, [*ROW_COLUMNS, *counts])):
            numbers, rows, tagcount = numbering.pairs(frame, offset)
            frame = frame.drop("tokens").insert_column(
                len(ROW_COLUMNS), pl.Series("tagcount", tagcount, pl.UInt32)
            )  # fmt: skip
            table = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
            if rows_writer is None:
                rows_writer = pa.ipc.new_file(str(folder / "rows.arrow"), table.schema)
            rows_writer.write_table(table)
            for b, tag_numbers, tag_rows in _by_bucket(numbers, rows, parts):
                if b not in writers:
                    writers[b] = pa.ipc.new_stream(str(buckets[b]), pair_schema,
                                                   options=PAIRS_FORMAT)  # fmt: skip
                writers[b].write_table(
                    pa.Table.from_arrays(
                        [to_arrow(tag_numbers), to_arrow(tag_rows)], schema=pair_schema
                    )
                )
            offset += frame.height
            if report is not None:
                report(min(offset, total - 1), total)
    finally:
        for writer in writers.values():
            writer.close()
        if rows_writer is not None:
            rows_writer.close()
    return numbering, [b for b in buckets if b.exists()], offset, parts


def _sorted_pairs(bucket: Path, parts: int) -> tuple[np.ndarray, np.ndarray]:
    """A bucket's pairs sorted by tag number then row, each once: the tag numbers and the
    rows. The pairs were written in row order, so a stable sort by tag number is enough:
    a radix sort when the bucket's tag numbers fit 16 bits once divided by ``parts``."""
    with pa.ipc.open_stream(pa.memory_map(str(bucket))) as reader:
        table = reader.read_all()
    numbers, rows = to_numpy(table["n"]), to_numpy(table["row"])
    del table
    local = numbers // parts  # every number of the bucket is b + local * parts
    if len(local) and local.max() < 1 << 16:
        local = local.astype(np.uint16)
    order = np.argsort(local, kind="stable")
    del local  # each array goes once used: buckets are sorted side by side
    numbers, rows = numbers[order], rows[order]
    del order
    if len(numbers):
        first = np.empty(len(numbers), bool)
        first[0] = True
        np.not_equal(rows[1:], rows[:-1], out=first[1:])
        first[1:] |= numbers[1:] != numbers[:-1]
        numbers, rows = numbers[first], rows[first]  # a post naming a tag twice: once
    return numbers, rows


def _big_with_small(buckets: list[Path]) -> list[Path]:
    """``buckets`` in the order first, last, second, last but one...: tags are numbered as
    first met, so the first buckets hold the most common tags and the last the fewest
    postings, and buckets sorted side by side pair a large one with a small one."""
    half = (len(buckets) + 1) // 2
    paired = itertools.zip_longest(buckets[:half], reversed(buckets[half:]))
    return [bucket for pair in paired for bucket in pair if bucket is not None]


def _write_postings(buckets: list[Path], parts: int, path: Path) -> pl.DataFrame:
    """Every bucket's rows, sorted by tag number then row, as one Arrow file; each tag
    number's ``posts`` and ``start`` in it."""
    schema = pa.schema([("row", pa.uint32())])
    lists = []
    written = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        sorted_pairs = partial(_sorted_pairs, parts=parts)  # buckets sorted on every core
        buckets = _big_with_small(buckets)
        for bucket, (numbers, rows) in zip(
            buckets, map_ahead(sorted_pairs, buckets, available_cores()), strict=True
        ):
            writer.write_table(pa.Table.from_arrays([to_arrow(rows)], schema=schema))
            starts = np.flatnonzero(np.r_[True, numbers[1:] != numbers[:-1]][: len(numbers)])
            posts = np.diff(np.append(starts, len(numbers)))
            lists.append(pl.DataFrame({"n": numbers[starts], "posts": posts.astype(np.uint32),
                                       "start": starts.astype(np.uint64) + written}))  # fmt: skip
            written += len(rows)
            bucket.unlink()
    empty = pl.DataFrame(schema={"n": pl.UInt32, "posts": pl.UInt32, "start": pl.UInt64})
    return pl.concat([empty, *lists])


def build(files: Sequence[Path], schemas: Sequence[str | None], folder: Path,
          identity: dict[str, object], report: Report | None = None) -> None:  # fmt: skip
    """Build the index of the metadata ``files`` into ``folder`` (which must not exist):
    in a temporary folder beside it, renamed into place once complete."""
    start = time.perf_counter()
    total = metadata_rows(files)
    work_folder = temp_path(folder)
    work_folder.mkdir(parents=True)
    try:
        numbering, buckets, rows, parts = _first_pass(files, schemas, work_folder, report, total)
        pa.default_memory_pool().release_unused()  # what the first pass's batches held
        lists = _write_postings(buckets, parts, work_folder / "postings.arrow")
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
