"""The extra tags a caption may carry beside the post's own: its rating's name, its quality
tier (by score percentile within its rating) and its date (year or period)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import polars as pl

from e6ingest.captions.spec import CaptionSpec

# Per rating, the score each quality tier starts at (None: the rating has no scores).
Thresholds = Mapping[str, list[float | None]]


def score_counts(frame: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
    """How many posts of each ``rating`` have each ``score`` (as floats), in score order."""
    return (
        frame.lazy()
        .group_by("rating", pl.col("score").cast(pl.Float64))
        .len()
        .sort("rating", "score", nulls_last=True)
        .collect()
    )


def score_thresholds(
    frame: pl.LazyFrame | pl.DataFrame, spec: CaptionSpec, counts: pl.DataFrame | None = None
) -> dict[str, list[float | None]]:
    """Per rating, the score each quality tier starts at: the tier's percentile of the
    rating's scores in ``frame`` (nulls left out; polars' ``quantile(p, "higher")``, the
    ``ceil(p * (n - 1))``-th smallest), found in ``counts`` (:func:`score_counts` of
    ``frame``, counted here when not given) instead of sorting every score."""
    if not spec.quality_tag:
        return {}
    counts = score_counts(frame) if counts is None else counts
    starts: dict[str, list[float | None]] = {}
    for (rating,), scores in counts.partition_by("rating", as_dict=True).items():
        scores = scores.drop_nulls("score")  # a rating whose scores are all null: no tiers
        ends = scores["len"].cum_sum().to_numpy()
        at = [math.ceil(p * (ends[-1] - 1)) if len(ends) else None for _, p in spec.tier_pairs]
        starts[rating] = [
            None if i is None else scores["score"][int(np.searchsorted(ends, i, "right"))]
            for i in at
        ]
    return starts


def _quality_tag(spec: CaptionSpec, thresholds: Thresholds) -> pl.Expr:
    tier = pl.lit(None, pl.String)
    for i, (name, _) in reversed(list(enumerate(spec.tier_pairs))):
        start = pl.col("rating").replace_strict(
            {r: t[i] for r, t in thresholds.items()}, default=None, return_dtype=pl.Float64
        )
        tier = pl.when(pl.col("score") >= start).then(pl.lit(name)).otherwise(tier)
    return tier


def _date_tag(spec: CaptionSpec) -> pl.Expr:
    year = pl.col("created_at").dt.year()
    if spec.date_tag == "year":
        return pl.lit("year ") + year.cast(pl.String)
    tag = pl.lit(None, pl.String)
    for name, first_year in spec.period_pairs:
        tag = pl.when(year >= first_year).then(pl.lit(name)).otherwise(tag)
    return tag


def extra_tags(spec: CaptionSpec, site: str, thresholds: Thresholds) -> pl.Expr | None:
    """Per post, the extra tags ``spec`` asks for (a list; None when it asks for none)."""
    extras = []
    if spec.rating_tag:
        names = spec.ratings(site)
        extras.append(pl.col("rating").replace_strict(names, default=None, return_dtype=pl.String))
    if spec.quality_tag:
        extras.append(_quality_tag(spec, thresholds))
    if spec.date_tag != "none":
        extras.append(_date_tag(spec))
    return pl.concat_list(extras).list.drop_nulls() if extras else None
