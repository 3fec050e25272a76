"""Metatags: ``name:value`` terms answered from the canonical metadata columns.

Ranges take ``N``, ``>N``, ``>=N``, ``<N``, ``<=N``, ``A..B``, ``A..`` and ``..B``, or a
list of them that any may match (``id:1,2,3``, ``score:<0,>=100``), as on the sites. Metatags
the sites have but the metadata cannot answer (``user:``, ``pool:``, ``fav:``...) are
refused, as is every other ``name:value`` term that is not a tag of the dataset.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TypeVar

import polars as pl

from e6ingest.core import RatingError, parse_ratings


class TermError(ValueError):
    """A term is malformed; the parser adds the query and a pointer at the term."""


NUMERIC = {
    "score": pl.col("score"),
    "favcount": pl.col("fav_count"),
    "fav_count": pl.col("fav_count"),
    "id": pl.col("id"),
    "width": pl.col("width"),
    "height": pl.col("height"),
    "tagcount": pl.col("tags").str.count_matches(r"\S+").fill_null(0),
    **{
        f"{short}tags": pl.col(f"tags_{category}").list.len().fill_null(0)
        for short, category in (
            ("gen", "general"), ("art", "artist"), ("char", "character"),
            ("copy", "copyright"), ("spec", "species"), ("meta", "meta"), ("lor", "lore"),
            ("inv", "invalid"),
        )
    },
}  # fmt: skip
DECIMAL = {
    "mpixels": pl.col("width") * pl.col("height") / 1e6,
    "ratio": pl.col("width") / pl.col("height"),
}
ORDERS = {
    "id": ("id", False), "id_asc": ("id", False), "id_desc": ("id", True),
    "score": ("score", True), "score_desc": ("score", True), "score_asc": ("score", False),
    "favcount": ("fav_count", True), "favcount_desc": ("fav_count", True),
    "favcount_asc": ("fav_count", False), "random": ("random", False),
}  # fmt: skip
OTHER = ("rating", "date", "ext", "filetype", "type", "md5", "parent", "status", "order")
SUPPORTED = (*NUMERIC, *DECIMAL, *OTHER)
# Metatags of danbooru and e621 that the metadata cannot answer: refused, never a tag.
UNANSWERABLE = frozenset(
    {
        "user", "fav", "ordfav", "pool", "ordpool", "set", "favgroup", "approver",
        "commenter", "comm", "noter", "noteupdater", "artcomm", "source", "pixiv", "pixiv_id",
        "limit", "search", "upvote", "downvote", "voted", "child", "is", "has", "locked",
        "flagger", "appealer", "disapproved", "embedded", "duration", "filesize", "age",
        "description", "delreason", "deletedby", "inpool", "ischild", "isparent", "pending",
        "comment_count", "note_count", "updated", "unaliased", "newpool",
    }
)  # fmt: skip
_RANGE = re.compile(
    r"^(?:(?P<op>>=|<=|>|<|=)?(?P<value>[^.]+(?:\.\d+)?)|(?P<lo>.*?)\.\.(?P<hi>.*))$"
)


def supported_list() -> str:
    """The supported metatags, for error messages."""
    return ", ".join(f"{name}:" for name in sorted(set(SUPPORTED) - {"fav_count", "type"}))


V = TypeVar("V", int, float, datetime)  # a parsed value: a number or a date


def _number(text: str, parse: Callable[[str], V]) -> V:
    try:
        return parse(text)
    except ZeroDivisionError:
        raise TermError(f"{text!r}: a ratio's height cannot be 0") from None
    except (ValueError, OverflowError) as exc:
        raise TermError(f"{text!r} is not a valid value") from exc


def range_expr(
    col: pl.Expr, text: str, parse: Callable[[str], V], exact: Callable[[V], pl.Expr] | None = None
) -> pl.Expr:
    """A comparison from range syntax; ``exact`` turns a bare value into an expression."""
    match = _RANGE.match(text)
    if not text or match is None:
        raise TermError(f"expected a value or range such as 50, >=50 or 10..100, got {text!r}")
    if match["value"] is not None:
        value = _number(match["value"], parse)
        op = match["op"] or "="
        if op == "=":
            return exact(value) if exact else col == value
        return {">": col > value, ">=": col >= value, "<": col < value, "<=": col <= value}[op]
    lo, hi = match["lo"], match["hi"]
    if not lo and not hi:
        raise TermError("a range needs at least one bound")
    expr = pl.lit(True)
    if lo:
        expr = expr & (col >= _number(lo, parse))
    if hi:
        expr = expr & (col <= _number(hi, parse))
    return expr


def _ratio(text: str) -> float:
    if ":" in text:
        width, height = text.split(":", 1)
        return float(width) / float(height)
    return float(text)


def _parse_date(text: str) -> datetime:
    for fmt, length in (("%Y-%m-%d", 10), ("%Y-%m", 7), ("%Y", 4)):
        if len(text) == length:
            return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)
    raise ValueError(text)


def _date(text: str) -> pl.Expr:
    def exact(start: datetime) -> pl.Expr:
        # A bare date means the whole day, month or year it names.
        raw = text.lstrip("=")
        try:
            if len(raw) == 4:
                end = start.replace(year=start.year + 1)
            elif len(raw) == 7:
                end = (start + timedelta(days=32)).replace(day=1)
            else:
                end = start + timedelta(days=1)
        except (ValueError, OverflowError):  # the last day, month or year there is
            return pl.col("created_at") >= start
        return (pl.col("created_at") >= start) & (pl.col("created_at") < end)

    return range_expr(pl.col("created_at"), text, _parse_date, exact)


def _listing(value: str, what: str) -> list[str]:
    items = [v.strip().lower().lstrip(".") for v in value.split(",") if v.strip()]
    if not items:
        raise TermError(f"needs {what}")
    return items


def _rating(value: str, site: str | None) -> pl.Expr:
    try:
        ratings = parse_ratings(value, site)
    except RatingError as exc:
        raise TermError(str(exc)) from None
    if not ratings:
        raise TermError("needs a rating such as e or e,q")
    return pl.col("rating").is_in(list(ratings))


def _parent(value: str) -> pl.Expr:
    if value.lower() == "none":
        return pl.col("parent_id").is_null()
    if value.lower() == "any":
        return pl.col("parent_id").is_not_null()
    post = _number(value, int)
    return (pl.col("parent_id") == post) | (pl.col("id") == post)


def _status(value: str, include_deleted: bool) -> pl.Expr:
    value = value.lower()
    if value == "deleted":
        if not include_deleted:
            raise TermError("deleted posts are left out unless --include-deleted is given")
        return pl.col("is_deleted")
    if value == "active":
        return ~pl.col("is_deleted")
    if value == "any":
        return pl.lit(True)
    raise TermError("status: takes deleted, active or any")


def _any_of(value: str, one: Callable[[str], pl.Expr]) -> pl.Expr:
    """``one`` of each comma-separated item of ``value``, any of which may match."""
    items = value.split(",")
    if len(items) == 1:
        return one(value)
    if not all(items):
        raise TermError(f"{value!r}: an empty item in the list")
    return pl.any_horizontal([one(item) for item in items])


COUNTED = ("tagcount", *(n for n in NUMERIC if n.endswith("tags")))  # counts of tags


def metatag(
    name: str,
    value: str,
    site: str | None,
    include_deleted: bool,
    counts: Callable[[str], pl.Expr] | None = None,
) -> pl.Expr:
    """The expression of a supported metatag (``name`` lower case); TermError otherwise.
    ``counts``: the column of each of :data:`COUNTED` where a frame holds them precomputed
    (a tag index) rather than derived from the tags."""
    if not value and name != "status":
        raise TermError(f"{name}: needs a value")
    if name in NUMERIC:
        column = counts(name) if counts is not None and name in COUNTED else NUMERIC[name]
        return _any_of(value, lambda one: range_expr(column, one, int))
    if name in DECIMAL:
        parse = _ratio if name == "ratio" else float
        return _any_of(value, lambda one: range_expr(DECIMAL[name], one, parse))
    if name == "rating":
        return _rating(value, site)
    if name == "date":
        return _any_of(value, _date)
    if name in ("ext", "filetype", "type"):
        return pl.col("file_ext").is_in(_listing(value, "a file extension such as png"))
    if name == "md5":
        return pl.col("md5").is_in(_listing(value, "an md5 checksum"))
    if name == "parent":
        return _parent(value)
    if name == "status":
        return _status(value, include_deleted)
    raise TermError(f"{name}: is not a metatag e6ingest supports ({supported_list()})")


def order(value: str) -> tuple[str, bool]:
    """``order:`` as (column or ``random``, descending)."""
    key = value.lower()
    if key not in ORDERS:
        raise TermError(f"order: takes {', '.join(sorted(ORDERS))}")
    return ORDERS[key]
