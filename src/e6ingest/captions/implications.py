"""Implied tags: e621 and danbooru add the tags a tag implies (``fox`` -> ``canine`` ->
``canid`` -> ``mammal``) to every post, which spends a caption's tokens on what the specific
tag already says. With the site's implications table, a tag is dropped from a post when
another tag of the post implies it, directly or through a chain."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from e6ingest.captions.files import CaptionInputError
from e6ingest.metadata import TAG_COLUMNS
from e6ingest.metadata.tagtable import read_table_file

MAX_DEPTH = 32  # implication chains are a few steps deep; a cycle stops here


def read_implications(path: str | Path) -> pl.DataFrame:
    """Active implications as ``antecedent``, ``implied``, closed transitively. Reads the
    e621 ``tag_implications`` export (``antecedent_name``, ``consequent_name``, ``status``),
    CSV (gzip too) or parquet, or a two-column ``antecedent,consequent`` CSV."""
    path = Path(path)
    table = read_table_file(path, "implications", CaptionInputError)
    names = table.columns
    old, new = ("antecedent_name", "consequent_name")
    if old not in names or new not in names:
        if len(names) < 2:
            raise CaptionInputError(f"{path}: implications need antecedent_name and "
                                    f"consequent_name columns (found {names})")  # fmt: skip
        old, new = names[0], names[1]
    if "status" in names:
        table = table.filter(pl.col("status") == "active")
    pairs = table.select(pl.col(old).alias("antecedent"), pl.col(new).alias("implied"))
    return close_transitively(pairs.drop_nulls().unique())


def close_transitively(pairs: pl.DataFrame) -> pl.DataFrame:
    """Every (antecedent, implied) reachable through chains of ``pairs``."""
    closure = pairs
    for _ in range(MAX_DEPTH):
        step = closure.join(pairs, left_on="implied", right_on="antecedent", suffix="_next")
        grown = pl.concat([closure, step.select("antecedent", pl.col("implied_next").alias(
            "implied"))]).unique()  # fmt: skip
        grown = grown.filter(pl.col("antecedent") != pl.col("implied"))
        if grown.height == closure.height:
            return closure
        closure = grown
    return closure


def prune_implied(frame: pl.DataFrame, closure: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with, in every ``tags_<category>`` list, the tags another tag of the same
    post implies removed (order kept)."""
    columns = [c for c in TAG_COLUMNS if c in frame.columns]
    if frame.is_empty() or not columns:
        return frame
    indexed = frame.select(columns).with_row_index("_row")
    long = pl.concat(
        [
            indexed.select("_row", pl.col(c).alias("tag"))
            .explode("tag")
            .with_columns(pl.lit(c).alias("_column"))
            for c in columns
        ]
    ).drop_nulls("tag").with_row_index("_pos")  # fmt: skip
    implied = (
        long.select("_row", "tag")
        .join(closure, left_on="tag", right_on="antecedent")
        .select("_row", pl.col("implied").alias("tag"))
        .unique()
    )
    kept = long.join(implied, on=["_row", "tag"], how="anti").sort("_pos")
    rows = pl.DataFrame({"_row": pl.int_range(frame.height, eager=True, dtype=pl.UInt32)})
    for column in columns:
        lists = kept.filter(pl.col("_column") == column).group_by("_row").agg(
            pl.col("tag").alias(column)
        )  # fmt: skip
        rows = rows.join(lists, on="_row", how="left", maintain_order="left")
    empty = pl.lit([], pl.List(pl.String))
    pruned = rows.select(pl.col(c).fill_null(empty) for c in columns)
    return frame.with_columns(pruned)
