"""What a frame of posts holds, as ``e6ingest inspect`` and a notebook show it: posts per
rating and per year, the most frequent tags of each category. Reached through
:mod:`e6ingest.dataset`."""

from __future__ import annotations

from typing import Any

import polars as pl

from e6ingest.core import RATING_ORDER
from e6ingest.metadata import TAG_CATEGORIES


def rating_counts(posts: pl.LazyFrame) -> pl.DataFrame:
    """Posts per rating, in g, s, q, e order, with each rating's share."""
    counts = posts.group_by("rating").agg(pl.len().alias("posts")).collect()
    order = pl.DataFrame({"rating": RATING_ORDER, "order": range(len(RATING_ORDER))})
    return (
        counts.join(order, on="rating", how="left")
        .sort("order", nulls_last=True)
        .drop("order")
        .with_columns((pl.col("posts") / pl.col("posts").sum()).alias("share"))
    )


def posts_per_year(posts: pl.LazyFrame) -> pl.DataFrame:
    """Posts per year of ``created_at``."""
    return (
        posts.group_by(pl.col("created_at").dt.year().alias("year"))
        .agg(pl.len().alias("posts"))
        .sort("year", nulls_last=True)  # posts without a date last
        .collect()
    )


def top_tags(posts: pl.LazyFrame, category: str = "general", n: int = 10) -> pl.DataFrame:
    """The ``n`` most frequent tags of one category, with their post counts: a tag given
    twice in one post's tag string counts that post once."""
    if category not in TAG_CATEGORIES:
        raise ValueError(f"unknown category {category!r} (known: {TAG_CATEGORIES})")
    column = f"tags_{category}"
    return (
        posts.select(pl.col(column).list.unique().alias("tag"))
        .explode("tag")
        .drop_nulls()
        .group_by("tag")
        .agg(pl.len().alias("posts"))
        .sort(["posts", "tag"], descending=[True, False])
        .head(n)
        .collect()
    )


UNKNOWN = "unknown"  # the rating or year of posts whose metadata gives none


def _named(value: object) -> str:
    return UNKNOWN if value is None else str(value)


def summary(posts: pl.LazyFrame, top: int = 10) -> dict[str, Any]:
    """Everything ``e6ingest inspect`` shows, as plain data."""
    ratings = rating_counts(posts)
    tags = {c: dict(top_tags(posts, c, top).iter_rows()) for c in TAG_CATEGORIES}
    return {
        "posts": int(ratings["posts"].sum()),
        "ratings": {_named(r): n for r, n in zip(ratings["rating"], ratings["posts"], strict=True)},
        "years": {_named(y): n for y, n in posts_per_year(posts).iter_rows()},
        "top_tags": {c: t for c, t in tags.items() if t},
    }
