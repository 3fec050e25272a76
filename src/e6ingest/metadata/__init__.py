"""Metadata: read each dataset's parquet files into one canonical polars LazyFrame."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from e6ingest.metadata.schemas import (
    CANONICAL_COLUMNS,
    SCHEMAS,
    TAG_CATEGORIES,
    TAG_COLUMNS,
    SchemaError,
    collapse_separators,
    detect_schema,
    file_schema,
    post_id,
    rows_left_out,
    scan_file,
    split_tags,
)

__all__ = [
    "CANONICAL_COLUMNS",
    "SCHEMAS",
    "TAG_CATEGORIES",
    "TAG_COLUMNS",
    "SchemaError",
    "canonical_batches",
    "collapse_separators",
    "combine",
    "detect_schema",
    "id_less_rows",
    "row_ranges",
    "rows_without_id",
    "scan_file",
    "scan_files",
    "split_tags",
]


def combine(frames: Sequence[pl.LazyFrame], include_deleted: bool = False) -> pl.LazyFrame:
    """Several canonical frames of one site as one: a later frame wins for a repeated id.

    Deleted posts are dropped unless ``include_deleted``. The combination is an anti-join
    on ids, so it streams instead of holding every row to deduplicate.
    """
    if not frames:
        raise ValueError("no metadata frames to combine")
    parts: list[pl.LazyFrame] = []
    for i, frame in enumerate(frames):
        later = frames[i + 1 :]
        for newer in later:
            frame = frame.join(newer.select("id"), on="id", how="anti", maintain_order="left")
        parts.append(frame)
    combined = pl.concat(parts, how="vertical") if len(parts) > 1 else parts[0]
    if not include_deleted:
        combined = combined.filter(~pl.col("is_deleted"))
    return combined


def scan_files(
    paths: Sequence[str | Path],
    schemas: Sequence[str | None] | None = None,
    include_deleted: bool = False,
) -> pl.LazyFrame:
    """Metadata files (each in a supported schema) as one canonical lazy frame."""
    schemas = list(schemas) if schemas is not None else [None] * len(paths)
    frames = [scan_file(p, s) for p, s in zip(paths, schemas, strict=True)]
    return combine(frames, include_deleted=include_deleted)


def row_ranges(total: int, rows: int, first: int = 0) -> list[tuple[int, int]]:
    """``[start, end)`` ranges cutting ``total`` rows into ranges of at most ``rows``, the
    first of at most ``first`` rows when given (none for no rows)."""
    head = min(first, rows) if first > 0 else rows
    if total <= 0:
        return []
    starts = [0, *range(head, total, rows)]
    return list(zip(starts, [*starts[1:], total], strict=True))


def _file_rows(path: Path, start: int, rows: int, left_out: np.ndarray) -> pl.LazyFrame:
    """``rows`` rows of a metadata file from row ``start`` (read from the row groups
    holding them), less the rows ``left_out`` (no id, or one that comes again later)."""
    part = pl.scan_parquet(path).slice(start, rows)
    inside = left_out[(left_out >= start) & (left_out < start + rows)] - start
    if not len(inside):
        return part
    row = "__e6ingest_row"
    kept = part.with_row_index(row).filter(~pl.col(row).is_in(pl.Series(inside).implode()))
    return kept.drop(row)


def file_ids(path: str | Path) -> pl.LazyFrame:
    """The post ids of a metadata file's rows, as its schema reads them."""
    lf = pl.scan_parquet(path)
    return lf.select(post_id(lf.collect_schema()))


def canonical_batches(
    paths: Sequence[Path],
    schemas: Sequence[str | None],
    rows: int,
    include_deleted: bool = False,
    first: int = 0,
) -> Iterator[pl.LazyFrame]:
    """The posts of :func:`scan_files`, in its order, as lazy frames of at most ``rows``
    consecutive rows of one file each: every batch reads only its own row groups, so a
    caller can work through millions of posts a part at a time without copying them. A
    later file wins for a repeated id, as in :func:`combine`, and a later row of the same
    file; a row without an id is no post (``rows_left_out``). ``first``, when smaller than
    ``rows``: the rows of the very first batch (its reader's work can start sooner)."""
    for i, (path, schema) in enumerate(zip(paths, schemas, strict=True)):
        found = file_schema(path, schema)
        later = [file_ids(f) for f in paths[i + 1 :]]
        newer = pl.concat(later).collect()["id"] if later else None
        left_out = rows_left_out(path)
        total = max(pq.ParquetFile(path).metadata.num_rows, 1)
        for start, end in row_ranges(total, rows, first if i == 0 else 0):
            frame = found.canonical(_file_rows(path, start, end - start, left_out), path)
            if newer is not None:
                frame = frame.filter(~pl.col("id").is_in(newer.implode()))
            yield frame if include_deleted else frame.filter(~pl.col("is_deleted"))


MAX_ROWS_NAMED = 1000  # rows without an id named one by one; the rest counted


def rows_without_id(path: str | Path, name: str | None = None) -> list[str]:
    """One message per row of a metadata file whose id is missing (such a row can never be
    a post): its file and row number, the first :data:`MAX_ROWS_NAMED` named. The file's
    footer answers when its statistics count no null id in any row group."""
    rows = id_less_rows(path)
    where = name or str(path)
    named = [f"{where} row {row}: no id" for row in rows.head(MAX_ROWS_NAMED)]
    if len(rows) > MAX_ROWS_NAMED:
        named.append(f"{where}: {len(rows) - MAX_ROWS_NAMED} more rows with no id")
    return named


def id_less_rows(path: str | Path) -> pl.Series:
    """The row numbers of a metadata file whose id is missing or no whole number; the
    file's footer answers when its statistics count no null id in any row group."""
    if _no_null_ids(path):
        return pl.Series("row", [], pl.UInt32)
    lf = pl.scan_parquet(path)
    missing = post_id(lf.collect_schema()).is_null()
    return lf.select(missing.arg_true().alias("row")).collect()["row"]


def _id_statistics(path: str | Path) -> list[pq.Statistics | None] | None:
    """The footer statistics of the ``id`` column, one per row group; None when the ids
    are not whole numbers or the footer has no such column."""
    file = pq.ParquetFile(path)
    ids = file.schema_arrow.get_field_index("id")
    if ids < 0 or not pa.types.is_integer(file.schema_arrow.field(ids).type):
        return None
    metadata = file.metadata
    if not metadata.num_row_groups:
        return []
    names = [metadata.row_group(0).column(j).path_in_schema for j in range(metadata.num_columns)]
    if "id" not in names:
        return None
    column = names.index("id")
    return [metadata.row_group(g).column(column).statistics for g in range(metadata.num_row_groups)]


def _no_null_ids(path: str | Path) -> bool:
    """Whether the parquet footer's statistics say that no row of ``path`` lacks an id
    (False when a row group has none to say it, or the ids are not whole numbers)."""
    stats = _id_statistics(path)
    return stats is not None and all(
        s is not None and s.has_null_count and not s.null_count for s in stats
    )


def id_range(path: str | Path) -> tuple[int, int] | None:
    """The smallest and largest post id of a metadata file, from its footer's statistics;
    None when they do not say (or the file holds no row)."""
    stats = _id_statistics(path)
    if not stats or any(s is None or not s.has_min_max for s in stats):
        return None
    return min(int(s.min) for s in stats if s), max(int(s.max) for s in stats if s)
