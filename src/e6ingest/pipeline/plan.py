"""The plan: which selected post goes to which output shard, fixed at the start of a run."""

from __future__ import annotations

import io
import json
from pathlib import Path

import polars as pl

from e6ingest.captions import CaptionSpec, caption_frame
from e6ingest.metadata import TAG_COLUMNS
from e6ingest.metadata.tagtable import apply_tag_table, read_tag_table
from e6ingest.query import Query
from e6ingest.shards import PLAN_FILE, write_atomic

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


def make_plan(
    metadata: pl.LazyFrame,
    query: Query,
    shard_size: int,
    source_shards: int = 1000,
    caption: CaptionSpec | None = None,
    tag_table: str = "",
) -> pl.DataFrame:
    """The selected posts, each with its output ``shard``, its ``position`` in it and its
    caption (``caption``, ``caption_tags``, ``caption_nl``, built for the whole selection).

    Posts are ordered by source shard (``id % source_shards``) and id, so one output shard
    reads from as few source shards as possible, and the order is the same on every run.
    With ``tag_table`` (e621 tags table), tag categories are restored first.
    """
    selected = query.collect(metadata, PLAN_COLUMNS)
    if tag_table:
        selected = apply_tag_table(selected.lazy(), read_tag_table(tag_table)).collect()
    selected = caption_frame(selected, caption or CaptionSpec())
    return (
        selected.sort((pl.col("id") % source_shards), pl.col("id"))
        .with_row_index("row")
        .with_columns(
            (pl.col("row") // shard_size).cast(pl.Int32).alias("shard"),
            (pl.col("row") % shard_size).cast(pl.Int32).alias("position"),
        )
        .drop("row")
    )


def save_plan(plan: pl.DataFrame, out: Path, fingerprint: dict) -> None:
    """Write ``plan.parquet`` atomically, with the config fingerprint in its metadata."""
    buf = io.BytesIO()
    plan.write_parquet(
        buf,
        row_group_size=65536,
        metadata={"e6ingest.fingerprint": json.dumps(fingerprint, sort_keys=True)},
    )
    write_atomic(out / PLAN_FILE, buf.getvalue())


def plan_fingerprint(path: Path) -> dict | None:
    """The config fingerprint a saved plan was made with, or None when there is no plan."""
    if not path.is_file():
        return None
    meta = pl.read_parquet_metadata(path)
    return json.loads(meta.get("e6ingest.fingerprint", "null"))


def shard_rows(plan_path: str | Path, shard: int) -> pl.DataFrame:
    """The plan rows of one output shard, in order."""
    return pl.scan_parquet(plan_path).filter(pl.col("shard") == shard).sort("position").collect()


def shard_sizes(plan_path: str | Path) -> dict[int, int]:
    """Every output shard number of a saved plan, with its number of posts."""
    sizes = pl.scan_parquet(plan_path).group_by("shard").len().sort("shard").collect()
    return dict(sizes.iter_rows())
