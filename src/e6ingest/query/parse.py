"""Booru search syntax parsed into a polars expression over the canonical metadata frame.

Terms are separated by spaces and combined with AND:

- ``tag`` the post has this exact tag (case-insensitive, as on the sites); ``-tag`` not;
- ``~a ~b`` the post has at least one of the ``~`` terms;
- ``prefix*`` (``*`` anywhere) a wildcard over whole tags;
- ``( a b )`` a group, which ``-`` and ``~`` apply to as to a tag: ``~( a b ) ~c``;
- metatags (``metatags`` module): ``rating:e,q``, ``score:>=50``, ``favcount:10..100``,
  ``id:``, ``width:``, ``height:``, ``tagcount:``, ``gentags:`` (and ``arttags:``,
  ``chartags:``, ``copytags:``, ``spectags:``, ``metatags:``, ``lortags:``), ``mpixels:``,
  ``ratio:``, ``date:``, ``ext:``/``filetype:``, ``md5:``, ``parent:``, ``status:`` and
  ``order:`` (which posts ``--limit`` keeps).

Tags match as whole tags: ``solo`` never matches ``solo_focus``. ``parse_query`` is pure
and fails with :class:`QueryError` pointing at the bad term before any data is read. A
``name:value`` term whose name is no metatag may still be a tag (``re:zero``); it is checked
against the dataset's tags once they are known (``vocabulary``).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import polars as pl

from e6ingest.core import temp_path
from e6ingest.metadata.schemas import TAG_CHARACTER, TAG_SEPARATOR
from e6ingest.query.metatags import (
    SUPPORTED,
    UNANSWERABLE,
    TermError,
    metatag,
    order,
    supported_list,
)

if TYPE_CHECKING:
    from e6ingest.query.index import TagIndex
    from e6ingest.query.subset import Frame

SINK_ROW_GROUP = 65_536  # rows per row group of a sunk selection: read back a group at a time
# A sunk selection is a temporary file read back once: lz4 writes and reads it faster than
# polars' default zstd (2.5 s less of a 5.3M-post pull's planning, benchmarks/RESULTS.md).
SINK_COMPRESSION: Literal["lz4"] = "lz4"


class QueryError(ValueError):
    """A query term is malformed; the message shows the query and points at the term."""

    def __init__(self, query: str, start: int, term: str, reason: str):
        pointer = " " * (len("query: ") + start) + "^" * max(1, len(term))
        super().__init__(f"query: {query}\n{pointer}\nbad term {term!r}: {reason}")
        self.query, self.start, self.term, self.reason = query, start, term, reason

    def because(self, reason: str) -> QueryError:
        """The same term of the same query, refused for ``reason``."""
        return QueryError(self.query, self.start, self.term, reason)


def tag_pattern(tag: str) -> str:
    """A regex matching ``tag`` as a whole tag in a tag string (tags separated as
    ``metadata.split_tags`` separates them)."""
    body = f"{TAG_CHARACTER}*".join(re.escape(part) for part in tag.split("*"))
    return rf"(?:^|{TAG_SEPARATOR}){body}(?:{TAG_SEPARATOR}|$)"


def has_tag(tag: str, column: str = "tags") -> pl.Expr:
    """True where the space-separated ``column`` holds ``tag`` as a whole tag (False on null).

    One regex per tag: the regex engine finds the tag's literal text first, and a single
    string predicate per scan is what polars can evaluate while decoding parquet pages.
    """
    return pl.col(column).str.contains(tag_pattern(tag)).fill_null(False)


INDEX_PREFIX = "\x00"  # names of the columns a tag index evaluates a query on


def index_column(name: str) -> str:
    """The column a tag index gives a query for tag (or wildcard, or count) ``name``."""
    return INDEX_PREFIX + name


@dataclass(frozen=True)
class TagTerm:
    """A tag the query names, where it stands, and whether it may be a mistyped metatag."""

    tag: str
    start: int
    text: str
    colon: bool = False  # ``name:value`` with no such metatag: must be a tag of the dataset


@dataclass(frozen=True)
class Query:
    """A parsed query: its text, the polars expression it stands for, its anchors (plain
    tags every selected post must have), the tags it names and its ``order:``."""

    text: str
    expr: pl.Expr | None  # None: the query selects everything
    anchors: tuple[str, ...] = ()
    tags: tuple[TagTerm, ...] = ()
    order: tuple[str, bool] | None = None  # (column or "random", descending)
    required: tuple[tuple[str, pl.Expr], ...] = field(default=(), repr=False)
    site: str | None = None
    include_deleted: bool = False
    patterns: tuple[str, ...] = ()  # every tag and wildcard, as written (lower case)
    indexed: bool = False  # tags read from a tag index's columns (``index_column``)
    index: TagIndex | None = field(default=None, compare=False, repr=False)  # a TagIndex to answer

    def with_index(self, index: TagIndex) -> Query:
        """This query answered from ``index`` (a ``TagIndex`` of the metadata it will run
        on): the posts are chosen there, and only their rows are read from the metadata."""
        return replace(self, index=index)

    def reads_tags(self) -> bool:
        """Whether answering the query reads the posts' tags (a tag, wildcard or tag
        count in it, with no tag index to answer from)."""
        if self.expr is None or self.index is not None:
            return False
        return any(n == "tags" or n.startswith("tags_") for n in self.expr.meta.root_names())

    def resolved(self) -> Query:
        """This query with the posts its tag index chose as its expression (an id list,
        looked up once however many frames it is applied to); itself without an index."""
        if self.index is None or self.expr is None:
            return self
        return replace(self, expr=self._ids(), anchors=(), index=None)

    def _ids(self) -> pl.Expr:
        if self.index is None:
            raise ValueError("the query has no index to take its ids from")
        return pl.col("id").is_in(self.index.ids(self).implode())

    def for_index(self) -> Query:
        """This query over a tag index's columns: a column per tag and wildcard
        (``index_column(pattern)``) and the tag counts, instead of the tag strings."""
        return _Parser(self.text, self.site, self.include_deleted, indexed=True).parse()

    def apply(self, frame: Frame) -> Frame:
        """``frame`` filtered by the query (lazy or eager)."""
        if self.expr is None:  # every post: nothing to look up in an index
            return frame
        if self.index is not None:
            return frame.filter(self._ids())
        return frame if self.expr is None else frame.filter(self.expr)

    def _candidates(self, frame: pl.LazyFrame, columns: list[str]) -> tuple[pl.LazyFrame, bool]:
        """The frame to read once: the anchor's candidates when the query has an anchor
        (with what the query needs), else the selection itself; and whether the whole
        query still has to run on it."""
        if self.expr is None or not self.anchors or self.index is not None:
            return self.apply(frame).select(columns), False
        anchor = max(self.anchors, key=len)
        needed = list(dict.fromkeys([*columns, *self.expr.meta.root_names()]))
        # The bare regex (no null handling) is the form polars evaluates while decoding.
        first = pl.col("tags").str.contains(tag_pattern(anchor))
        return frame.filter(first).select(needed), True

    def collect(self, frame: pl.LazyFrame, columns: list[str] | tuple[str, ...]) -> pl.DataFrame:
        """The selected rows' ``columns``, read in two passes when the query has an anchor.

        The first pass streams the metadata with one predicate, the anchor tag with the
        longest name (usually the rarest), which polars evaluates on each row group as it
        decodes it; only those candidates are read. The whole query then runs on them.
        Without an anchor the whole query runs in one streaming pass.
        """
        first, rest = self._candidates(frame, list(columns))
        read = first.collect(engine="streaming")
        if not rest or self.expr is None:
            return read
        return read.lazy().filter(self.expr).select(columns).collect()

    def sink(self, frame: pl.LazyFrame, columns: list[str] | tuple[str, ...], path: Path) -> None:
        """Stream the selected rows' ``columns`` into the parquet file ``path`` (little
        memory, whatever the size; row groups of ``SINK_ROW_GROUP`` rows), by the same
        passes as :meth:`collect`: with an anchor, its candidates go to a temporary file
        first and the whole query runs on them in a second streaming pass."""
        first, rest = self._candidates(frame, list(columns))
        if not rest or self.expr is None:
            first.sink_parquet(
                path,
                engine="streaming",
                row_group_size=SINK_ROW_GROUP,
                compression=SINK_COMPRESSION,
            )
            return
        candidates = temp_path(path)
        try:
            first.sink_parquet(candidates, engine="streaming", compression=SINK_COMPRESSION)
            selected = pl.scan_parquet(candidates).filter(self.expr).select(list(columns))
            selected.sink_parquet(
                path,
                engine="streaming",
                row_group_size=SINK_ROW_GROUP,
                compression=SINK_COMPRESSION,
            )
        finally:
            candidates.unlink(missing_ok=True)

    def count(self, frame: pl.LazyFrame) -> int:
        """The number of selected rows, by the same two passes as :meth:`collect` (from
        the index alone when the query has one)."""
        if self.index is not None:
            return self.index.count(self)
        return self.collect(frame, ["id"]).height

    def explain_empty(self, frame: pl.LazyFrame) -> str:
        """Why the query selects nothing: the first term that matches no post alone, else
        the smallest set of terms that no post has together (pairs first, in one pass);
        or that the metadata holds no post to select from (deleted posts left out)."""
        if frame.select(pl.len()).collect(engine="streaming").item() == 0:
            deleted = "" if self.include_deleted else " that is not deleted (--include-deleted)"
            return f"the metadata holds no post{deleted}"
        if not self.required:
            return "no post matches"
        terms = self.required
        pairs = list(itertools.combinations(range(len(terms)), 2))
        counts = frame.select(
            *(expr.sum().alias(f"{i}") for i, (_, expr) in enumerate(terms)),
            *((terms[i][1] & terms[j][1]).sum().alias(f"{i},{j}") for i, j in pairs),
        ).collect(engine="streaming")
        for i, (term, _) in enumerate(terms):
            if counts[f"{i}"][0] == 0:
                return f"{term!r} matches no post"
        for i, j in pairs:
            if counts[f"{i},{j}"][0] == 0:
                return (f"{terms[i][0]!r} and {terms[j][0]!r} match some posts each, but no "
                        "post has both")  # fmt: skip
        kept = list(range(len(terms)))
        for i in list(kept):  # drop each term the rest is still empty without
            rest = [k for k in kept if k != i]
            together = pl.all_horizontal([terms[k][1] for k in rest]).sum()
            if frame.select(together).collect(engine="streaming").item() == 0:
                kept = rest
        names = ", ".join(repr(terms[k][0]) for k in kept)
        return f"each term matches some posts, but no post has all of {names}"


@dataclass
class _Level:
    """The terms of one level (the query, or a group): required, and ``~`` alternatives."""

    start: int
    prefix: str = ""
    required: list[tuple[str, pl.Expr]] = field(default_factory=list)
    any_of: list[pl.Expr] = field(default_factory=list)

    def add(self, text: str, expr: pl.Expr, prefix: str) -> None:
        if prefix == "-":
            self.required.append((text, ~expr))
        elif prefix == "~":
            self.any_of.append(expr)
        else:
            self.required.append((text, expr))

    def combined(self) -> pl.Expr | None:
        parts = [e for _, e in self.required]
        if self.any_of:
            parts.append(pl.any_horizontal(self.any_of) if len(self.any_of) > 1 else self.any_of[0])
        if not parts:
            return None
        return pl.all_horizontal(parts) if len(parts) > 1 else parts[0]


class _Parser:
    def __init__(
        self, text: str, site: str | None, include_deleted: bool, indexed: bool = False
    ) -> None:
        self.text, self.site, self.include_deleted = text, site, include_deleted
        self.indexed = indexed
        self.tags: list[TagTerm] = []
        self.patterns: list[str] = []
        self.anchors: list[str] = []
        self.order: tuple[str, bool] | None = None

    def error(self, start: int, raw: str, reason: str) -> QueryError:
        return QueryError(self.text, start, raw, reason)

    def term(self, raw: str, start: int, body: str, prefix: str, top: bool) -> pl.Expr | None:
        """The expression of one term (None for ``order:``)."""
        name, sep, value = body.partition(":")
        name = name.lower()
        if sep and name == "order":
            if prefix or not top or self.order is not None:
                raise TermError("order: stands alone, once, outside groups")
            self.order = order(value)
            return None
        if sep and name in SUPPORTED:
            counts = (lambda n: pl.col(index_column(n))) if self.indexed else None
            return metatag(name, value, self.site, self.include_deleted, counts)
        if sep and name in UNANSWERABLE:
            hint = " (use --limit N)" if name == "limit" else ""
            raise TermError(f"{name}: cannot be answered from the metadata{hint}; "
                            f"supported metatags: {supported_list()}")  # fmt: skip
        tag = body.lower()
        if tag.strip("*") == "":
            raise TermError("a wildcard needs some text besides *")
        if "*" not in tag:
            self.tags.append(TagTerm(tag, start, raw, colon=bool(sep) and bool(name)))
            if top and not prefix:
                self.anchors.append(tag)
        self.patterns.append(tag)
        return pl.col(index_column(tag)) if self.indexed else has_tag(tag)

    def parse(self) -> Query:
        levels = [_Level(0)]
        for match in re.finditer(r"\S+", self.text):
            raw, start = match.group(), match.start()
            try:
                self._token(raw, start, levels)
            except TermError as exc:
                raise self.error(start, raw, str(exc)) from None
        if len(levels) > 1:
            opened = levels[-1]
            raise self.error(opened.start, "(", "this parenthesis is never closed")
        top = levels[0]
        return Query(self.text, top.combined(), tuple(self.anchors), tuple(self.tags),
                     self.order, tuple(top.required), self.site, self.include_deleted,
                     tuple(dict.fromkeys(self.patterns)), self.indexed)  # fmt: skip

    def _token(self, raw: str, start: int, levels: list[_Level]) -> None:
        prefix = raw[0] if raw[0] in "-~" else ""
        body = raw[len(prefix) :]
        if not body:
            raise TermError("a - or ~ needs a tag or a group after it")
        if body[0] in "-~":
            raise TermError("use one of - or ~ per term")
        if body.startswith("("):  # a group opens: ( a b ), -( a ), ~(a
            levels.append(_Level(start, prefix))
            rest = body[1:]
            if rest:
                self._token(rest, start + len(raw) - len(rest), levels)
            return
        closes = 0
        unbalanced = body.endswith(")") and body.count(")") > body.count("(")
        if len(levels) > 1:  # a tag may end a group: b) but pokemon_(game) stays a tag
            while body.endswith(")") and body.count(")") - closes > body.count("("):
                body, closes = body[:-1], closes + 1
        elif unbalanced and body != ")" and body.rstrip(")")[-1:].isalnum():
            raise TermError("no parenthesis to close")  # solo) is no tag; :) is
        if body:
            expr = self.term(raw, start, body, prefix, top=len(levels) == 1)
            if expr is not None:
                levels[-1].add(raw, expr, prefix)
        elif prefix:
            raise TermError("a - or ~ needs a tag or a group after it")
        for _ in range(closes or (raw == ")")):
            self._close(levels, start, raw)

    def _close(self, levels: list[_Level], start: int, raw: str) -> None:
        if len(levels) == 1:
            raise TermError("no parenthesis to close")
        group = levels.pop()
        expr = group.combined()
        if expr is None:
            raise TermError("an empty group")
        levels[-1].add(raw, expr, group.prefix)


def parse_query(text: str | None, site: str | None = None, include_deleted: bool = False) -> Query:
    """Parse booru search syntax into a :class:`Query`; raises :class:`QueryError`.

    With ``site``, ``rating:`` takes that site's ratings only; ``status:deleted`` needs
    ``include_deleted`` (deleted posts are otherwise not in the metadata frame).
    """
    return _Parser(text or "", site, include_deleted).parse()


def ratings_query(ratings: tuple[str, ...]) -> str:
    """The query term for a ``--rating`` flag (empty when every rating is wanted)."""
    return f"rating:{','.join(ratings)}" if ratings else ""


def selection_query(
    query: str, ratings: tuple[str, ...], site: str | None = None, include_deleted: bool = False
) -> Query:
    """``--query`` and ``--rating`` combined with AND."""
    text = " ".join(t for t in (query, ratings_query(ratings)) if t)
    return parse_query(text, site, include_deleted)
