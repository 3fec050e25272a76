"""Schema adapters: each real metadata parquet schema to one canonical lazy frame.

The canonical frame has these columns (see ``CANONICAL_COLUMNS``):

- ``id`` (Int64), ``site`` (str), ``rating`` (one of g/s/q/e);
- ``tags``: every tag of the post as one space-separated string or null (what queries match
  on, read straight from the source without a copy when the source has such a column);
- ``tags_<category>`` (list[str]) for general, artist, character, copyright, species, meta,
  lore, invalid; a source without categories puts every tag in ``tags_general``;
- ``width``, ``height``, ``score``, ``fav_count``, ``parent_id`` (Int64), ``file_ext``, ``md5``,
  ``created_at`` (UTC datetime), ``is_deleted`` (bool).

Everything is lazy and column-projected: polars only reads the source columns that the
requested canonical columns need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.compute as pc
import pyarrow.parquet as pq

from e6ingest.arrays import to_numpy

TAG_CATEGORIES = (
    "general",
    "artist",
    "character",
    "copyright",
    "species",
    "meta",
    "lore",
    "invalid",
)
TAG_COLUMNS = tuple(f"tags_{c}" for c in TAG_CATEGORIES)
CANONICAL_COLUMNS = (
    "id",
    "site",
    "rating",
    "tags",
    *TAG_COLUMNS,
    "width",
    "height",
    "file_ext",
    "score",
    "fav_count",
    "created_at",
    "md5",
    "parent_id",
    "is_deleted",
)
EMPTY_TAGS = pl.lit([], dtype=pl.List(pl.String))
ISO_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%:z"  # the exports' text: 2024-04-07T12:00:00.123-04:00
# Other ways a date is written as text, tried where the first fails: with a space or a T,
# with a UTC offset (+00, +0000, +00:00) or without one (read as UTC).
DATE_FORMATS = (
    ISO_FORMAT,
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d",
)


class SchemaError(ValueError):
    """A metadata file is in no supported schema, or lacks a column its schema needs."""


# What separates tags (Rust regex classes): any Unicode whitespace or control character.
# Tags never hold either on the sites; a newline, tab, NUL, ESC or U+2028 inside a tag
# string separates tags like a space, so a caption stays one line of printable text.
TAG_SEPARATOR = r"[\s\p{Cc}]"
TAG_CHARACTER = r"[^\s\p{Cc}]"


# A run of separators that is not one space: with another separator in it, or spaces alone.
_SEPARATOR_RUN = r"[\s\p{Cc}]*[[\s\p{Cc}]&&[^ ]][\s\p{Cc}]*| {2,}"
_NO_TAGS = pl.lit([], pl.List(pl.String))


def split_tags(column: str | pl.Expr) -> pl.Expr:
    """A tag string as a list of tags, split on :data:`TAG_SEPARATOR` (empty and null give
    ``[]``). Each run of separators becomes one space and the ends are stripped
    (:func:`collapse_separators`), so the split makes no empty tag (filtering them out of
    every list took twice as long)."""
    expr = pl.col(column) if isinstance(column, str) else column
    spaced = collapse_separators(expr.fill_null(""))
    return pl.when(spaced != "").then(spaced.str.split(" ")).otherwise(_NO_TAGS)


def collapse_separators(texts: pl.Expr) -> pl.Expr:
    """``texts`` (strings) with each run of separators (:data:`TAG_SEPARATOR`) made one
    space, and none at either end. Only the strings that are not printable ASCII one space
    apart, with no space at an end, go through the separator regex and the strip, which
    leave those as they are. Most tag strings are: the regex over all of them took 9% of
    the CPU time of ``e6ingest captions``, the strip copied every string
    (``benchmarks/split_bench.py`` measures the two ways)."""
    spaces = texts.str.contains("  ", literal=True)
    ends = texts.str.starts_with(" ") | texts.str.ends_with(" ")
    marked = pl.struct(texts, (spaces | ends).alias(_SPACES))  # named as texts
    return marked.map_batches(_collapsed, return_dtype=pl.String, is_elementwise=True)


_SPACES = "__e6ingest_spaced"


def _collapsed(marked: pl.Series) -> pl.Series:
    """The texts of ``marked`` (its first field; the second, whether each has two spaces
    in a row or one at an end) with each run of separators made one space and the ends
    stripped, by the regex where needed. The checks are pyarrow's: a polars call costs
    more than their work on the small batches of a filtered read."""
    columns = marked.to_arrow()
    printable = pc.ascii_is_printable(columns.field(0))
    odd = pc.or_kleene(columns.field(1), pc.invert(printable))
    texts = marked.struct.unnest().to_series(0)
    if not pc.any(odd).as_py():
        return texts
    rows = to_numpy(pc.indices_nonzero(odd)).astype(np.int64)  # a missing text: no
    collapsed = texts.gather(rows).str.replace_all(_SEPARATOR_RUN, " ").str.strip_chars(" ")
    return texts.scatter(rows, collapsed)


Columns = pl.Schema  # a file's columns and their types, as its adapter reads them


def whole_number(columns: Columns, column: str) -> pl.Expr:
    """A numeric column as Int64: a whole number as it is; text (a CSV converted by hand)
    parsed; what is no whole number (NaN, 1.5, "abc") a missing value, never rounded to
    another (an id of 1.5 is not post 1)."""
    dtype = columns.get(column)
    if dtype is not None and (dtype.is_integer() or dtype == pl.Null):
        return pl.col(column).cast(pl.Int64, strict=False)
    if dtype != pl.String and not (dtype is not None and dtype.is_float()):
        raise SchemaError(f"column {column!r} is {dtype}, not a number")
    value = pl.col(column).cast(pl.Float64, strict=False)
    return pl.when(value == value.floor()).then(value.cast(pl.Int64, strict=False))


def post_id(columns: Columns) -> pl.Expr:
    """The ``id`` column of a metadata file with ``columns`` as the post ids it gives: null
    where a row gives none (missing, or no whole number)."""
    return whole_number(columns, "id")


def _text(columns: Columns, column: str) -> pl.Expr:
    """A text column (or a categorical one) as String."""
    dtype = columns.get(column)
    if dtype in (pl.String, pl.Null) or isinstance(dtype, pl.Categorical | pl.Enum):
        return pl.col(column).cast(pl.String)
    raise SchemaError(f"column {column!r} is {dtype}, not text")


def timestamp(columns: Columns, column: str) -> pl.Expr:
    """A date column as a UTC datetime: a timestamp or date as it is (one without a time
    zone read as UTC), text in one of :data:`DATE_FORMATS` (text in none of them: null, as
    a date the metadata does not give)."""
    dtype = columns.get(column)
    if isinstance(dtype, pl.Datetime) or dtype == pl.Date:
        return pl.col(column).cast(pl.Datetime("us", "UTC"))
    if dtype != pl.String and dtype != pl.Null:
        raise SchemaError(f"column {column!r} is {dtype}, neither a date nor text")
    text = pl.col(column).cast(pl.String)
    parsed = (text.str.to_datetime(f, time_zone="UTC", strict=False) for f in DATE_FORMATS)
    return pl.coalesce(*parsed).cast(pl.Datetime("us", "UTC"))


FLAG_TRUE = ("t", "true", "True", "1")  # a flag stored as text: what means true
FLAG_FALSE = ("f", "false", "False", "0", "")


def _flag(columns: Columns, column: str) -> pl.Expr:
    """A boolean flag stored as a real boolean, as the strings 't'/'f' (or true, 1), or as
    the numbers 1/0 (a real boolean is read as it is: its cast to text cost 0.05 s per 8M
    rows on every question)."""
    dtype = columns.get(column)
    if dtype == pl.Boolean:
        return pl.col(column).fill_null(False)
    if dtype is not None and dtype.is_numeric():  # 0 and 1
        return (pl.col(column) != 0).fill_null(False)
    return _text(columns, column).is_in(FLAG_TRUE).fill_null(False)


@dataclass(frozen=True)
class Schema:
    """One supported source schema: the columns that identify it and its adapter."""

    name: str
    site: str
    required: frozenset[str]
    adapt: Callable[[pl.LazyFrame], pl.LazyFrame]
    categorised: bool = True  # False: every tag in one list (tags_general) until a tags
    # table restores the categories

    def canonical(self, lf: pl.LazyFrame, path: str | Path) -> pl.LazyFrame:
        """``lf``, rows of the file ``path``, as the canonical frame; a column of a type
        this schema cannot read fails here, naming the file."""
        try:
            return self.adapt(lf)
        except SchemaError as exc:
            raise SchemaError(f"{path}: {exc}") from None


def _danbooru2024(lf: pl.LazyFrame) -> pl.LazyFrame:
    columns = lf.collect_schema()
    per_category = {
        f"tags_{c}": split_tags(_text(columns, f"tag_string_{c}"))
        for c in ("general", "artist", "character", "copyright", "meta")
    }
    return lf.select(
        post_id(columns).alias("id"),
        pl.lit("danbooru").alias("site"),
        _text(columns, "rating").alias("rating"),
        _text(columns, "tag_string").alias("tags"),
        *(per_category.get(c, EMPTY_TAGS).alias(c) for c in TAG_COLUMNS),
        whole_number(columns, "image_width").alias("width"),
        whole_number(columns, "image_height").alias("height"),
        *_common(columns),
    )


def _common(columns: Columns) -> list[pl.Expr]:
    """The canonical columns every schema reads alike, from columns of the same name."""
    return [
        _text(columns, "file_ext").alias("file_ext"),
        whole_number(columns, "score").alias("score"),
        whole_number(columns, "fav_count").alias("fav_count"),
        timestamp(columns, "created_at").alias("created_at"),
        _text(columns, "md5").alias("md5"),
        whole_number(columns, "parent_id").alias("parent_id"),
        _flag(columns, "is_deleted").alias("is_deleted"),
    ]


def _e621_common(lf: pl.LazyFrame, columns: Columns, tags: pl.Expr) -> pl.LazyFrame:
    return lf.select(
        post_id(columns).alias("id"),
        pl.lit("e621").alias("site"),
        _text(columns, "rating").alias("rating"),
        tags.alias("tags"),
        *((split_tags(tags) if c == "tags_general" else EMPTY_TAGS).alias(c) for c in TAG_COLUMNS),
        whole_number(columns, "width").alias("width"),
        whole_number(columns, "height").alias("height"),
        *_common(columns),
    )


def _e621_2024(lf: pl.LazyFrame) -> pl.LazyFrame:
    lf = lf.rename({"image_width": "width", "image_height": "height"})
    columns = lf.collect_schema()
    return _e621_common(lf, columns, _text(columns, "tag_string").fill_null(""))


def _e621_newest(lf: pl.LazyFrame) -> pl.LazyFrame:
    columns = lf.collect_schema()
    dtype = columns.get("tags")
    if not (isinstance(dtype, pl.List) and dtype.inner == pl.String):
        raise SchemaError(f"column 'tags' is {dtype}, not a list of tags")
    return _e621_common(lf, columns, pl.col("tags").fill_null([]).list.join(" "))


SCHEMAS: dict[str, Schema] = {
    s.name: s
    for s in (
        Schema(
            "danbooru2024",
            "danbooru",
            frozenset(
                {
                    "id", "rating", "tag_string", "tag_string_general", "tag_string_artist",
                    "tag_string_character", "tag_string_copyright", "tag_string_meta",
                    "image_width", "image_height", "file_ext", "score", "fav_count",
                    "created_at", "md5", "parent_id", "is_deleted",
                }
            ),
            _danbooru2024,
        ),
        Schema(
            "e621_2024",
            "e621",
            frozenset(
                {
                    "id", "rating", "tag_string", "image_width", "image_height", "file_ext",
                    "score", "fav_count", "created_at", "md5", "parent_id", "is_deleted",
                    "change_seq",
                }
            ),
            _e621_2024,
            categorised=False,
        ),
        Schema(
            "e621_newest",
            "e621",
            frozenset(
                {
                    "id", "rating", "tags", "width", "height", "file_ext", "score",
                    "fav_count", "created_at", "md5", "parent_id", "is_deleted",
                }
            ),
            _e621_newest,
            categorised=False,
        ),
    )
}  # fmt: skip


def file_columns(path: str | Path) -> list[str]:
    """Column names of a parquet file, read from its footer only."""
    try:
        return list(pq.read_schema(path).names)
    except (OSError, ValueError) as exc:
        raise SchemaError(f"{path}: not a readable parquet file ({exc})") from exc


def detect_schema(path: str | Path) -> Schema:
    """The supported schema of a parquet file, recognised from its columns."""
    columns = set(file_columns(path))
    # The most specific schema first: danbooru2024 has every column e621_2024 would need but one.
    for schema in sorted(SCHEMAS.values(), key=lambda s: -len(s.required)):
        if schema.required <= columns:
            return schema
    closest = min(SCHEMAS.values(), key=lambda s: len(s.required - columns))
    missing = sorted(closest.required - columns)
    raise SchemaError(
        f"{path}: not in a supported metadata schema; closest is {closest.name!r}, "
        f"which needs columns {missing} that the file lacks "
        f"(found {len(columns)} columns: {sorted(columns)[:12]}...)"
    )


_ROW = "__e6ingest_row"


def rows_left_out(path: str | Path) -> np.ndarray:
    """The row numbers of a metadata file that are no post of their own: those without
    an id (missing, or no whole number), and those whose id comes again in a later row (a
    post is its last row, never a blend of several); read from the id column alone, none
    when the ids rise, as the exports' do. That is checked first without holding the ids
    in memory; only a file whose ids do not rise has them read again, to find its rows."""
    lf = pl.scan_parquet(path)
    try:
        id_ = post_id(lf.collect_schema())
    except SchemaError as exc:
        raise SchemaError(f"{path}: {exc}") from None
    # the common case answered without the ids in memory: none missing, each above the last
    check = lf.select(id_.null_count().alias("missing"), id_.diff().min().alias("step"))
    missing, smallest_step = check.collect().row(0)
    if missing == 0 and (smallest_step is None or smallest_step > 0):  # None: under two rows
        return np.zeros(0, np.int64)
    ids = lf.select(id_).collect().to_series()
    left_out = ids.is_null() | ~ids.is_last_distinct()
    rows: np.ndarray = left_out.arg_true().cast(pl.Int64).to_numpy()
    return rows


def scan_file(path: str | Path, schema: str | None = None) -> pl.LazyFrame:
    """One metadata parquet file as a canonical lazy frame, one row per id (the last), no
    row without one.

    ``schema`` names the expected schema (as in a dataset manifest); without it the schema
    is recognised from the file's columns. A file lacking a needed column fails here with
    the file name, the schema and the missing columns. The rows are streamed: the rows
    without an id or whose id comes again later in the file are found first, from the id
    column alone (:func:`rows_left_out`).
    """
    found = file_schema(path, schema)
    left_out = rows_left_out(path)
    if not len(left_out):
        return found.canonical(pl.scan_parquet(path), path)
    rows = pl.scan_parquet(path, row_index_name=_ROW)
    kept = rows.filter(~pl.col(_ROW).is_in(pl.Series(left_out).implode()))
    return found.canonical(kept.drop(_ROW), path)


def file_schema(path: str | Path, schema: str | None = None) -> Schema:
    """The schema a metadata file is read with: ``schema`` (checked against the file's
    columns), or the one recognised from them."""
    if schema is None:
        return detect_schema(path)
    if schema not in SCHEMAS:
        raise SchemaError(f"{path}: unknown schema {schema!r} (known: {sorted(SCHEMAS)})")
    found = SCHEMAS[schema]
    missing = sorted(found.required - set(file_columns(path)))
    if missing:
        raise SchemaError(
            f"{path}: schema {schema!r} needs columns {missing}, which the file lacks"
        )
    return found
