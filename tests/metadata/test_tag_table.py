"""Tag categories restored by a tags table: the same, post by post, as a plain loop."""

from __future__ import annotations

import random

import polars as pl

from e6ingest.metadata.schemas import TAG_COLUMNS
from e6ingest.metadata.tagtable import apply_tag_table

WORDS = ["fox", "red_panda", "hi_res", "solo", "duo", "2024", ":3", "", "Fox", "fox_(cosplay)"]


def _plain(rows: list[dict], table: dict[str, str]) -> list[dict]:
    """Each post's general tags put, in their order, in the column the table names (general
    for a tag it lacks); a null tag or list gives none."""
    out = []
    for row in rows:
        placed = {column: [] for column in TAG_COLUMNS}
        for tag in row["tags_general"] or []:
            if tag is not None:
                placed[table.get(tag, "tags_general")].append(tag)
        out.append({**row, **placed})
    return out


def test_categories_are_those_of_a_plain_loop_on_random_posts():
    rng = random.Random(4)
    for _ in range(60):
        table = {w: rng.choice(TAG_COLUMNS) for w in rng.sample(WORDS, rng.randint(0, 6))}
        rows = []
        for i in range(rng.randint(0, 12)):
            tags = None if rng.random() < 0.1 else [
                None if rng.random() < 0.05 else rng.choice(WORDS)
                for _ in range(rng.randint(0, 7))]  # fmt: skip
            rows.append({"id": i, "tags_general": tags, "tags_artist": ["kept?"], "score": i})
        schema = {"id": pl.Int64, "tags_general": pl.List(pl.String),
                  "tags_artist": pl.List(pl.String), "score": pl.Int64}  # fmt: skip
        frame = pl.DataFrame(rows, schema=schema).with_columns(
            pl.lit([], pl.List(pl.String)).alias(c) for c in TAG_COLUMNS if c != "tags_artist"
        )
        frame = frame.select("id", *TAG_COLUMNS, "score")
        tags = pl.DataFrame({"name": list(table), "column": list(table.values())},
                            schema={"name": pl.String, "column": pl.String})  # fmt: skip
        got = apply_tag_table(frame.lazy(), tags).collect()
        assert got.columns == frame.columns
        assert got.to_dicts() == _plain(frame.to_dicts(), table), table
