"""``--sample N [--seed S]`` and ``--limit N``: a deterministic part of a selection.

``sample`` keeps the N posts with the lowest rank of a stable hash of their id and the seed:
the same N posts for the same seed and metadata, whatever the row order, on any machine.
``limit`` keeps the first N posts in the query's ``order:`` (by id without one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import polars as pl

Frame = TypeVar("Frame", pl.LazyFrame, pl.DataFrame)  # lazy or eager, given back alike

_PRIME = 2_147_483_647  # 2**31 - 1: ids below it are ranked without collisions
_MULTIPLIERS = (48_271, 1_103_515_245, 69_621)


def stable_rank(seed: int, column: str = "id") -> pl.Expr:
    """A pseudo-random rank of each id for ``seed``: a few rounds of a multiplicative hash
    modulo a prime, in 64-bit integers (no overflow, the same on every platform)."""
    rank = pl.col(column).cast(pl.Int64) % _PRIME
    offset = seed % _PRIME
    for multiplier in _MULTIPLIERS:
        rank = (rank * multiplier + offset) % _PRIME
        offset = (offset * 31 + 17) % _PRIME
    return rank


MOST_POSTS = 2**32 - 1  # the most rows a selection can keep


@dataclass(frozen=True)
class Subset:
    """How much of a selection to keep: ``sample`` random posts or the first ``limit``."""

    sample: int = 0
    limit: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("sample", "limit", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"--{name} must be a whole number, 0 or more, not {value!r}")
        for name in ("sample", "limit"):
            if getattr(self, name) > MOST_POSTS:  # polars counts rows in 32 bits
                raise ValueError(f"--{name} must be at most {MOST_POSTS:,} (more posts than "
                                 f"any dataset holds), not {getattr(self, name):,}")  # fmt: skip
        if self.sample and self.limit:
            raise ValueError("--sample and --limit: give one of them")

    def __bool__(self) -> bool:
        return bool(self.sample or self.limit)

    def columns(self, order: tuple[str, bool] | None) -> list[str]:
        """The columns :meth:`pick` needs besides ``id``."""
        if self.limit and order is not None and order[0] != "random":
            return [order[0]]
        return []

    def pick(self, frame: Frame, order: tuple[str, bool] | None = None) -> Frame:
        """The kept rows of ``frame`` (lazy or eager), in the order that chose them: the
        first N of a sort (found without sorting everything)."""
        if not self:
            return frame
        lazy = frame.lazy()
        column, descending = order or ("id", False)
        if self.sample or column == "random":
            ranked = lazy.with_columns(stable_rank(self.seed).alias("__rank"))
            kept = ranked.sort("__rank", "id").head(self.sample or self.limit).drop("__rank")
        else:
            by = [column] if column == "id" else [column, "id"]
            kept = lazy.sort(by, descending=[descending, False][: len(by)], nulls_last=True)
            kept = kept.head(self.limit)
        return kept if isinstance(frame, pl.LazyFrame) else kept.collect()

    def kept_rows(self, frame: pl.LazyFrame, order: tuple[str, bool] | None = None) -> pl.LazyFrame:
        """:meth:`pick` of a frame of one row per id, chosen from its small columns first
        (``id`` and the order's column): the kept ids are found now, and the wide rows are
        read for them alone, in the order that chose them. A sample of 10,000 posts does not
        carry millions of rows' tag lists through the sort."""
        if not self:
            return frame
        small = frame.select(*dict.fromkeys(["id", *self.columns(order)]))
        picked = self.pick(small, order).select("id").unique(maintain_order=True)
        ids = picked.collect(engine="streaming")
        chosen = frame.filter(pl.col("id").is_in(ids["id"].implode()))
        place = ids.with_row_index("__place").lazy()
        return chosen.join(place, on="id").sort("__place").drop("__place")
