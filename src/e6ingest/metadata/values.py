"""Values of a metadata file that e6ingest reads as unknown: a number that is no whole
number (``"12x"``, ``1.5``), a date in no format it reads, a rating the site does not have
(``"E"``), a deleted flag that is neither true nor false. The schemas read them so (a post
is never given another's number or date), and this says so, naming the file, the column, a
row and its value, instead of letting ``date:2024`` answer 0 without a word."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from e6ingest.core import SITE_RATINGS
from e6ingest.metadata import id_less_rows
from e6ingest.metadata.schemas import (
    FLAG_FALSE,
    FLAG_TRUE,
    Columns,
    detect_schema,
    timestamp,
    whole_number,
)

ROWS_CHECKED = 65_536  # the first rows of a file whose values are checked

# raw column -> what it is read as, and what an unknown value of it costs
NUMBERS = {
    "score": "score: queries, order:score and quality tags skip such posts",
    "fav_count": "favcount: queries and order:favcount skip such posts",
    "width": "width:/height:/mpixels:/ratio: queries skip such posts",
    "height": "width:/height:/mpixels:/ratio: queries skip such posts",
    "image_width": "width:/height:/mpixels:/ratio: queries skip such posts",
    "image_height": "width:/height:/mpixels:/ratio: queries skip such posts",
}
DATES = {"created_at": "date: queries, order:date and date tags skip such posts"}


@dataclass(frozen=True)
class _Check:
    """Which values of a column are read as unknown, what a value should be, and what an
    unknown one costs."""

    unknown: pl.Expr
    should_be: str
    cost: str


def _unreadable(raw: pl.Expr, read: pl.Expr) -> pl.Expr:
    return raw.is_not_null() & read.is_null()


def _checks(columns: Columns, site: str) -> dict[str, _Check]:
    """The checks of the raw columns of ``columns`` (a file of ``site``), by column."""
    checks = {}
    for name, cost in NUMBERS.items():
        if name in columns and (columns[name] == pl.String or columns[name].is_float()):
            read = whole_number(columns, name)
            checks[name] = _Check(_unreadable(pl.col(name), read), "a whole number", cost)
    for name, cost in DATES.items():
        if columns.get(name) == pl.String:
            read = timestamp(columns, name)
            checks[name] = _Check(_unreadable(pl.col(name), read),
                                  "a date in a format e6ingest reads", cost)  # fmt: skip
    if site in SITE_RATINGS and columns.get("rating") == pl.String:
        letters, rating = list(SITE_RATINGS[site]), pl.col("rating")
        checks["rating"] = _Check(rating.is_not_null() & ~rating.is_in(letters),
                                  f"a rating of {site} ({', '.join(letters)})",
                                  "--rating and rating: select no such post")  # fmt: skip
    if columns.get("is_deleted") == pl.String:
        flag = pl.col("is_deleted")
        unknown = flag.is_not_null() & ~flag.is_in([*FLAG_TRUE, *FLAG_FALSE])
        checks["is_deleted"] = _Check(unknown, "true or false", "such posts count as not deleted")
    return checks


def unreadable_values(
    path: str | Path, site: str | None = None, rows: int = ROWS_CHECKED
) -> list[str]:
    """One message per column of the metadata file ``path`` whose values in its first
    ``rows`` rows are read as unknown, with how many, the first such row and its value
    (``site``: the file's, recognised from its columns when not given)."""
    lf = pl.scan_parquet(path).head(rows)
    checks = _checks(lf.collect_schema(), site or detect_schema(path).site)
    if not checks:
        return []
    bad = lf.select(check.unknown.alias(name) for name, check in checks.items()).collect()
    messages = []
    for name, check in checks.items():
        count = int(bad[name].sum())
        if count:
            row = int(bad[name].arg_true()[0])
            value = pl.scan_parquet(path).select(name).slice(row, 1).collect().item()
            messages.append(
                f"{path}: column {name!r} row {row}: {value!r} is not {check.should_be} "
                f"({count:,} of the first {bad.height:,} rows); read as unknown: {check.cost}"
            )
    return messages


def file_warnings(path: str | Path) -> list[str]:
    """What to say of the metadata file ``path`` before reading it: its rows without an id
    (no posts: left out), then :func:`unreadable_values`."""
    rows = id_less_rows(path)
    id_less = [f"{path}: {len(rows):,} rows have no id (the first: row {rows[0]}); they are "
               "no posts and are left out"] if len(rows) else []  # fmt: skip
    return [*id_less, *unreadable_values(path)]
