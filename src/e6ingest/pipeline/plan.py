"""The plan: which selected post goes to which output shard, fixed at the start of a run."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from e6ingest.captions import (
    CaptionSpec,
    build_captions,
    read_aliases,
    read_nl_captions,
    score_thresholds,
)
from e6ingest.core import atomic_path, temp_path
from e6ingest.metadata import TAG_COLUMNS
from e6ingest.metadata.tagtable import apply_tag_table, read_tag_table
from e6ingest.query import Query

PLAN_BATCH_ROWS = 1_000_000
PLAN_COLUMNS = (
    "id",
    "site",
    "rating",
    *TAG_COLUMNS,
    "width",
    "height",
    "file_ext",
    "score",
    "created_at",
)


def _source_ranges(ids: pl.Series, source_shards: int, batch_rows: int) -> list[tuple[int, int]]:
    """Consecutive ranges [lo, hi) of source shards, each holding about ``batch_rows``
    selected posts (one range when the selection is smaller)."""
    if ids.is_empty():
        return []
    counts = (ids % source_shards).value_counts(name="n").sort(ids.name)
    ranges, lo, rows = [], None, 0
    for shard, n in counts.iter_rows():
        lo = shard if lo is None else lo
        rows += n
        if rows >= batch_rows:
            ranges.append((lo, shard + 1))
            lo, rows = None, 0
    if lo is not None:
        ranges.append((lo, source_shards))
    return ranges


def _plan_part(
    part: pl.DataFrame, spec: CaptionSpec, captions: dict, offset: int, shard_size: int,
    source_shards: int,
) -> pl.DataFrame:  # fmt: skip
    part = part.unique("id", keep="last", maintain_order=True)  # a later row wins
    nl = read_nl_captions(spec, part["id"]) if spec.nl_captions else None
    part = build_captions(part, spec, nl=nl, **captions)
    return (
        part.sort((pl.col("id") % source_shards), pl.col("id"))
        .with_row_index("row", offset)
        .with_columns(
            (pl.col("row") // shard_size).cast(pl.Int32).alias("shard"),
            (pl.col("row") % shard_size).cast(pl.Int32).alias("position"),
        )
        .drop("row")
    )


def write_plan(
    metadata: pl.LazyFrame,
    query: Query,
    path: Path,
    fingerprint: dict,
    shard_size: int,
    source_shards: int = 1000,
    caption: CaptionSpec | None = None,
    tag_table: str = "",
    batch_rows: int = PLAN_BATCH_ROWS,
    commits: dict[str, str] | None = None,
    rejected: list[dict] | None = None,
) -> int:
    """Write the plan to ``path`` (atomically, with ``fingerprint`` in its parquet metadata)
    and return its number of posts: the selected posts, each with its output ``shard``, its
    ``position`` in it and its caption (``caption``, ``caption_tags``, ``caption_nl``).

    Posts are ordered by source shard (``id % source_shards``) and id, so one output shard
    reads from as few source shards as possible, and the order is the same on every run.
    With ``tag_table`` (e621 tags table), tag categories are restored first. The selection
    is streamed to a temporary file and planned ``batch_rows`` posts at a time (ranges of
    source shards), so memory does not grow with the selection; quality percentiles are
    still taken over the whole selection. A post id present in several rows is planned
    once, from the last row. ``commits`` (repository -> commit read) is saved beside the
    fingerprint, so a resume reads what the plan was made from; ``rejected`` (failure
    records of metadata rows that cannot be posts) too, for the run's failures.
    """
    spec = caption or CaptionSpec()
    selection_file = temp_path(path.with_name("selection.parquet"))
    try:
        with atomic_path(path) as plan_file:
            selection = query.sink(metadata, PLAN_COLUMNS, selection_file)
            keys = (
                selection.select("id", "rating", "score")
                .drop_nulls("id")
                .unique("id", keep="last", maintain_order=True)
                .collect()
            )
            captions = {
                "thresholds": score_thresholds(keys, spec) if spec.quality_tag else None,
                "aliases": read_aliases(spec.aliases) if spec.aliases else None,
            }
            tags = read_tag_table(tag_table) if tag_table else None
            ranges = _source_ranges(keys["id"], source_shards, batch_rows) or [(0, 0)]
            writer, offset = None, 0
            for lo, hi in ranges:
                source_shard = pl.col("id") % source_shards
                part = selection.filter(source_shard.is_between(lo, hi, closed="left"))
                part = part.collect(engine="streaming")
                if tags is not None:
                    part = apply_tag_table(part.lazy(), tags).collect()
                part = _plan_part(part, spec, captions, offset, shard_size, source_shards)
                table = part.to_arrow()
                if writer is None:
                    schema = table.schema.with_metadata(
                        {
                            "e6ingest.fingerprint": json.dumps(fingerprint, sort_keys=True),
                            "e6ingest.commits": json.dumps(commits or {}, sort_keys=True),
                            "e6ingest.rejected": json.dumps(rejected or []),
                        }
                    )
                    writer = pq.ParquetWriter(plan_file, schema)
                writer.write_table(table.cast(writer.schema), row_group_size=65536)
                offset += part.height
            writer.close()
    finally:
        selection_file.unlink(missing_ok=True)
    return offset


def _plan_metadata(path: Path, key: str):
    if not path.is_file():
        return None
    return json.loads(pl.read_parquet_metadata(path).get(key, "null"))


def plan_fingerprint(path: Path) -> dict | None:
    """The config fingerprint a saved plan was made with, or None when there is no plan."""
    return _plan_metadata(path, "e6ingest.fingerprint")


def plan_rejected(path: Path) -> list[dict]:
    """Failure records of the metadata rows the plan could not use (rows without an id)."""
    return _plan_metadata(path, "e6ingest.rejected") or []


def plan_commits(path: Path) -> dict[str, str] | None:
    """The commit of each repository a saved plan was made from (None if not recorded)."""
    return _plan_metadata(path, "e6ingest.commits") or None


def shard_rows(plan_path: str | Path, shard: int) -> pl.DataFrame:
    """The plan rows of one output shard, in order."""
    return pl.scan_parquet(plan_path).filter(pl.col("shard") == shard).sort("position").collect()


def shard_sizes(plan_path: str | Path) -> dict[int, int]:
    """Every output shard number of a saved plan, with its number of posts."""
    sizes = pl.scan_parquet(plan_path).group_by("shard").len().sort("shard").collect()
    return dict(sizes.iter_rows())
