"""Booru search syntax parsed into a polars expression over the canonical metadata frame.

Terms are separated by spaces and combined with AND:

- ``tag`` the post has this exact tag; ``-tag`` it does not;
- ``~a ~b`` the post has at least one of the ``~`` terms;
- ``prefix*`` (``*`` anywhere) a wildcard over whole tags;
- metatags: ``rating:e,q`` (or ``rating:explicit``), ``score:>=50``, ``favcount:10..100``,
  ``id:1000..2000``, ``width:>=1024``, ``height:<=4096``, ``date:2022-01-01..2023-01-01``,
  ``ext:png`` (``filetype:`` too). Ranges take ``N``, ``>N``, ``>=N``, ``<N``, ``<=N``,
  ``A..B``, ``A..`` and ``..B``.

Tags match as whole tags: ``solo`` never matches ``solo_focus``. ``parse_query`` is pure
and fails with :class:`QueryError` pointing at the bad term before any data is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from e6ingest.core import RatingError, parse_ratings

NUMERIC_METATAGS = {
    "score": "score",
    "favcount": "fav_count",
    "fav_count": "fav_count",
    "id": "id",
    "width": "width",
    "height": "height",
}
OTHER_METATAGS = ("rating", "date", "ext", "filetype")
_RANGE = re.compile(r"^(?:(?P<op>>=|<=|>|<|=)?(?P<value>[^.]+)|(?P<lo>[^.]*)\.\.(?P<hi>[^.]*))$")


class QueryError(ValueError):
    """A query term is malformed; the message shows the query and points at the term."""

    def __init__(self, query: str, start: int, term: str, reason: str):
        pointer = " " * (len("query: ") + start) + "^" * max(1, len(term))
        super().__init__(f"query: {query}\n{pointer}\nbad term {term!r}: {reason}")
        self.term = term
        self.reason = reason


class _TermError(ValueError):
    pass


def tag_pattern(tag: str) -> str:
    """A regex matching ``tag`` as a whole tag in a whitespace-separated tag string."""
    body = r"\S*".join(re.escape(part) for part in tag.split("*"))
    return rf"(?:^|\s){body}(?:\s|$)"


def has_tag(tag: str, column: str = "tags") -> pl.Expr:
    """True where the space-separated ``column`` holds ``tag`` as a whole tag (False on null).

    One regex per tag: the regex engine finds the tag's literal text first, and a single
    string predicate per scan is what polars can evaluate while decoding parquet pages.
    """
    return pl.col(column).str.contains(tag_pattern(tag)).fill_null(False)


def _number(text: str, parse):
    try:
        return parse(text)
    except ValueError as exc:
        raise _TermError(f"{text!r} is not a valid value") from exc


def _range(column: str, text: str, parse, exact=None) -> pl.Expr:
    """A comparison from range syntax; ``exact`` turns a bare value into an expression."""
    match = _RANGE.match(text)
    if not text or match is None:
        raise _TermError(f"expected a value or range such as 50, >=50 or 10..100, got {text!r}")
    col = pl.col(column)
    if match["value"] is not None:
        value = _number(match["value"], parse)
        op = match["op"] or "="
        if op == "=":
            return exact(value) if exact else col == value
        return {">": col > value, ">=": col >= value, "<": col < value, "<=": col <= value}[op]
    lo, hi = match["lo"], match["hi"]
    if not lo and not hi:
        raise _TermError("a range needs at least one bound")
    expr = pl.lit(True)
    if lo:
        expr = expr & (col >= _number(lo, parse))
    if hi:
        expr = expr & (col <= _number(hi, parse))
    return expr


def _parse_date(text: str) -> datetime:
    for fmt, length in (("%Y-%m-%d", 10), ("%Y-%m", 7), ("%Y", 4)):
        if len(text) == length:
            return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)
    raise ValueError(text)


def _date_term(text: str) -> pl.Expr:
    def exact(start: datetime) -> pl.Expr:
        # A bare date means the whole day, month or year it names.
        raw = text.lstrip("=")
        if len(raw) == 4:
            end = start.replace(year=start.year + 1)
        elif len(raw) == 7:
            end = (start + timedelta(days=32)).replace(day=1)
        else:
            end = start + timedelta(days=1)
        return (pl.col("created_at") >= start) & (pl.col("created_at") < end)

    return _range("created_at", text, _parse_date, exact)


def _metatag(name: str, value: str) -> pl.Expr:
    if name in NUMERIC_METATAGS:
        return _range(NUMERIC_METATAGS[name], value, int)
    if name == "rating":
        try:
            ratings = parse_ratings(value)
        except RatingError as exc:
            raise _TermError(str(exc)) from None
        if not ratings:
            raise _TermError("rating: needs a rating such as e or e,q")
        return pl.col("rating").is_in(list(ratings))
    if name == "date":
        return _date_term(value)
    if not value:
        raise _TermError("ext: needs a file extension such as png")
    return pl.col("file_ext").is_in([v.lower().lstrip(".") for v in value.split(",")])


def _is_metatag(text: str) -> bool:
    name, sep, _ = text.partition(":")
    return bool(sep) and name.lower() in (*NUMERIC_METATAGS, *OTHER_METATAGS)


def _term(text: str) -> pl.Expr:
    if _is_metatag(text):
        name, _, value = text.partition(":")
        return _metatag(name.lower(), value)
    if text.strip("*") == "":
        raise _TermError("a wildcard needs some text besides *")
    return has_tag(text)


@dataclass(frozen=True)
class Query:
    """A parsed query: its text, the polars expression it stands for, and its anchors
    (plain tags every selected post must have)."""

    text: str
    expr: pl.Expr | None  # None: the query selects everything
    anchors: tuple[str, ...] = ()

    def apply(self, frame):
        """``frame`` filtered by the query (lazy or eager)."""
        return frame if self.expr is None else frame.filter(self.expr)

    def collect(self, frame: pl.LazyFrame, columns: list[str] | tuple[str, ...]) -> pl.DataFrame:
        """The selected rows' ``columns``, read in two passes when the query has an anchor.

        The first pass streams the metadata with one predicate, the anchor tag with the
        longest name (usually the rarest), which polars evaluates on each row group as it
        decodes it; only those candidates are read. The whole query then runs on them.
        Without an anchor the whole query runs in one streaming pass.
        """
        columns = list(columns)
        if self.expr is None or not self.anchors:
            return self.apply(frame).select(columns).collect(engine="streaming")
        anchor = max(self.anchors, key=len)
        needed = list(dict.fromkeys([*columns, *self.expr.meta.root_names()]))
        # The bare regex (no null handling) is the form polars evaluates while decoding.
        first = pl.col("tags").str.contains(tag_pattern(anchor))
        candidates = frame.filter(first).select(needed).collect(engine="streaming")
        return candidates.lazy().filter(self.expr).select(columns).collect()

    def sink(
        self, frame: pl.LazyFrame, columns: list[str] | tuple[str, ...], path: str | Path
    ) -> pl.LazyFrame:
        """Stream what the selection needs into the parquet file ``path`` (little memory,
        whatever the size), and return the selected rows' ``columns`` lazily from it.

        With an anchor, ``path`` holds the anchor's candidates (first pass of
        :meth:`collect`) and the whole query runs as the returned frame is read.
        """
        columns = list(columns)
        if self.expr is None or not self.anchors:
            self.apply(frame).select(columns).sink_parquet(path, engine="streaming")
            return pl.scan_parquet(path)
        anchor = max(self.anchors, key=len)
        needed = list(dict.fromkeys([*columns, *self.expr.meta.root_names()]))
        first = pl.col("tags").str.contains(tag_pattern(anchor))
        frame.filter(first).select(needed).sink_parquet(path, engine="streaming")
        return pl.scan_parquet(path).filter(self.expr).select(columns)

    def count(self, frame: pl.LazyFrame) -> int:
        """The number of selected rows, by the same two passes as :meth:`collect`."""
        return self.collect(frame, ["id"]).height


def parse_query(text: str | None) -> Query:
    """Parse booru search syntax into a :class:`Query`; raises :class:`QueryError`."""
    text = text or ""
    required: list[pl.Expr] = []
    any_of: list[pl.Expr] = []
    anchors: list[str] = []
    for match in re.finditer(r"\S+", text):
        raw = match.group()
        term = raw
        negate = term.startswith("-") and len(term) > 1
        optional = term.startswith("~") and len(term) > 1
        term = term[1:] if negate or optional else term
        try:
            if term.startswith(("-", "~")) and len(term) > 1:
                raise _TermError("use one of - or ~ per term")
            expr = _term(term)
        except _TermError as exc:
            raise QueryError(text, match.start(), raw, str(exc)) from None
        expr = ~expr if negate else expr
        (any_of if optional else required).append(expr)
        if not (negate or optional or "*" in term or _is_metatag(term)):
            anchors.append(term)
    if any_of:
        required.append(pl.any_horizontal(any_of))
    if not required:
        return Query(text, None)
    combined = pl.all_horizontal(required) if len(required) > 1 else required[0]
    return Query(text, combined, tuple(anchors))


def ratings_query(ratings: tuple[str, ...]) -> str:
    """The query term for a ``--rating`` flag (empty when every rating is wanted)."""
    return f"rating:{','.join(ratings)}" if ratings else ""


def selection_query(query: str, ratings: tuple[str, ...]) -> Query:
    """``--query`` and ``--rating`` combined with AND."""
    return parse_query(" ".join(t for t in (query, ratings_query(ratings)) if t))
