"""Restore e621 tag categories from a tags table (``id,name,category,post_count``)."""

from __future__ import annotations

import contextlib
import csv
import gzip
from pathlib import Path

import polars as pl

from e6ingest.core import first_line
from e6ingest.metadata.schemas import TAG_COLUMNS, SchemaError, whole_number

# e621 category numbers (as in the e621 database export) to canonical columns.
E621_CATEGORIES = {
    0: "tags_general",
    1: "tags_artist",
    2: "tags_general",  # contributor
    3: "tags_copyright",
    4: "tags_character",
    5: "tags_species",
    6: "tags_invalid",
    7: "tags_meta",
    8: "tags_lore",
}
TAG_TABLE_COLUMNS = ("name", "category")


def read_table_file(path: Path, what: str, error: type[Exception]) -> pl.DataFrame:
    """A parquet table, or a CSV one (gzip too, every column as text); unreadable, an
    ``error`` naming the file and ``what`` it should hold."""
    try:
        if path.suffix == ".parquet":
            table = pl.read_parquet(path)
        else:
            return pl.read_csv(path, infer_schema_length=0)
    except (OSError, pl.exceptions.PolarsError) as exc:
        why = _ragged_row(path) if path.suffix != ".parquet" else None
        raise error(f"{path}: cannot read {what}: {why or first_line(exc)}") from exc
    for name, dtype in table.schema.items():
        if dtype.is_nested() or dtype == pl.Object:
            raise error(f"{path}: column {name!r} holds {dtype}, not text or numbers: "
                        f"a {what} file holds one value per cell")  # fmt: skip
    return table


def _ragged_row(path: Path) -> str | None:
    """The first line of a CSV file (gzip too) with another number of fields than its
    header, said as such; None when there is none (or it cannot be read as text)."""
    opener = gzip.open if path.suffix == ".gz" else open
    unreadable = (OSError, UnicodeDecodeError, csv.Error, EOFError)
    with contextlib.suppress(*unreadable), opener(path, "rt", encoding="utf-8", newline="") as f:
        rows = csv.reader(f)
        header = next(rows, [])
        for row in rows:
            if row and len(row) != len(header):
                return f"line {rows.line_num} has {len(row)} fields, the header {len(header)}"
    return None


def read_tag_table(path: str | Path) -> pl.DataFrame:
    """A tags table (CSV or parquet) as ``name -> column``; a bad row is named in the error."""
    path = Path(path)
    frame = read_table_file(path, "tag table", SchemaError)
    missing = [c for c in TAG_TABLE_COLUMNS if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"{path}: tag table needs columns {list(TAG_TABLE_COLUMNS)}, lacks {missing} "
            f"(found {frame.columns})"
        )
    try:
        number = whole_number(frame.schema, "category")  # 1.5 is no category, never 1
    except SchemaError as exc:
        raise SchemaError(f"{path}: {exc}") from None
    frame = frame.with_row_index("row").with_columns(number.alias("number"))
    known = pl.col("number").is_in(list(E621_CATEGORIES)).fill_null(False)
    bad = frame.filter(~known | pl.col("name").is_null())
    if bad.height:
        first = bad.row(0, named=True)
        raise SchemaError(
            f"{path}: row {first['row'] + 1} (tag {first['name']!r}) has category "
            f"{first['category']!r}; expected one of {sorted(E621_CATEGORIES)}"
            f" ({bad.height} bad rows in all)"
        )
    _refuse_conflicts(frame, path)
    mapping = pl.DataFrame(
        {"number": list(E621_CATEGORIES), "column": list(E621_CATEGORIES.values())},
        schema={"number": pl.Int64, "column": pl.String},
    )
    table = frame.join(mapping, on="number").select(pl.col("name").cast(pl.String), "column")
    return table.unique("name", keep="first", maintain_order=True)  # a row given twice


def _refuse_conflicts(frame: pl.DataFrame, path: Path) -> None:
    """Refuse a table that gives one tag two categories (the export names each tag once):
    the tag would be in both on every post, counted and captioned twice."""
    conflicts = frame.filter(pl.col("number").n_unique().over("name") > 1)
    if conflicts.height:
        first = conflicts.filter(pl.col("name") == conflicts["name"][0]).head(2).rows(named=True)
        raise SchemaError(
            f"{path}: tag {first[0]['name']!r} has category {first[0]['category']!r} in row "
            f"{first[0]['row'] + 1} and {first[1]['category']!r} in row {first[1]['row'] + 1} "
            f"({conflicts['name'].n_unique()} tags with two categories in all)"
        )


def apply_tag_table(frame: pl.LazyFrame, table: pl.DataFrame) -> pl.LazyFrame:
    """Split every post's ``tags_general`` into categories by the table (the other tag
    columns are made from it alone), each tag in its order, null tags left out.

    Tags the table does not know stay general. Each tag is looked up once; then each
    category takes its tags' positions in the list."""
    codes = {column: number for number, column in enumerate(TAG_COLUMNS)}
    general = codes["tags_general"]
    known = table["column"].replace_strict(codes, return_dtype=pl.UInt8)
    tags = pl.col("tags_general").list.drop_nulls().fill_null(pl.lit([], pl.List(pl.String)))
    where = tags.list.eval(pl.element().replace_strict(table["name"], known, default=general,
                                                       return_dtype=pl.UInt8))  # fmt: skip
    at = "__e6ingest_category"
    columns = frame.collect_schema().names()
    placed = {column: tags.list.gather(pl.col(at).list.eval((pl.element() == number).arg_true()))
              for column, number in codes.items()}  # fmt: skip
    return frame.with_columns(where.alias(at)).with_columns(**placed).select(columns)
