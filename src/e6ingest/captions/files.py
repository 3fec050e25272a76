"""Caption inputs read from files: natural-language captions and tag aliases."""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from e6ingest import tomlfile
from e6ingest.captions.spec import CaptionSpec, raw_tag
from e6ingest.core import first_line
from e6ingest.metadata import collapse_separators

FINISH_FIELD = "response_finish_reason"
NO_TEXTS = pl.lit([], pl.List(pl.String))  # a post without natural-language texts


class CaptionInputError(ValueError):
    """A natural-language captions or aliases file cannot be used; the message names it."""


NL_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet")


def nl_caption_files(names: Sequence[str]) -> list[Path]:
    """The files of ``names``: a folder (a snapshot of lodestones/e621-captions, one
    ``YYYY-MM_grouped.jsonl`` per month) stands for its JSON lines and parquet files in
    name order, so that a later month wins for a repeated id; a folder without any is
    refused, naming it."""
    files: list[Path] = []
    for name in names:
        path = Path(name)
        if not path.is_dir():
            files.append(path)
            continue
        found = sorted(p for p in path.iterdir() if p.suffix in NL_SUFFIXES and p.is_file())
        if not found:
            raise CaptionInputError(f"{path}: a folder without natural-language captions "
                                    f"files ({', '.join(NL_SUFFIXES)})")  # fmt: skip
        files += found
    return files


def _scan(path: Path) -> pl.LazyFrame:
    if not path.is_file():
        raise CaptionInputError(f"{path}: no such natural-language captions file")
    if path.stat().st_size == 0:
        raise CaptionInputError(f"{path}: an empty file, with no natural-language captions")
    if path.suffix == ".parquet":
        return pl.scan_parquet(path)
    if path.suffix in (".jsonl", ".ndjson", ".json"):
        return pl.scan_ndjson(path, infer_schema_length=None)
    raise CaptionInputError(f"{path}: natural-language captions must be .jsonl or .parquet")


def _why_unreadable(path: Path, exc: BaseException) -> str:
    """Why ``path`` could not be read: for JSON lines, the first line that is no JSON
    object (polars' own message does not say which); else the reader's first line."""
    if path.suffix != ".parquet":
        with contextlib.suppress(OSError, UnicodeDecodeError), path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                bad = _not_an_object(line)
                if bad:
                    return f"line {number} {bad}"
    return first_line(exc)


def _not_an_object(line: str) -> str:
    """What keeps a line of a JSON lines file from being a row ("" when nothing does)."""
    if not line.strip():
        return ""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as bad:
        return f"is not JSON ({bad.msg})"
    return "" if isinstance(row, dict) else "is not a JSON object"


def _nl_parts(spec: CaptionSpec, names: Sequence[str]) -> pl.Expr:
    """The selected texts of one row, cleaned: a list of non-empty single-line strings."""
    texts = [collapse_separators(pl.col(f).cast(pl.String)) for f in spec.nl_fields]
    # an array of the fields made a list: three times faster than concat_list here
    parts = pl.concat_arr(texts).arr.to_list().list.filter(pl.element() != "")
    if spec.nl_finished and FINISH_FIELD in names:
        finished = pl.col(FINISH_FIELD).cast(pl.String) == spec.nl_finished
        return pl.when(finished).then(parts).otherwise(pl.lit([], pl.List(pl.String)))
    return parts


def read_nl_captions(spec: CaptionSpec, ids: pl.Series | None = None) -> pl.DataFrame | None:
    """``id`` and ``nl`` (a list of texts) from the spec's files, by its selection rule.

    Default rule (e621-captions): ``regular_summary`` and ``brief_summary`` when
    ``response_finish_reason`` is ``STOP``, else nothing; newlines become spaces. A later
    file wins for a repeated id (a folder is its files in name order,
    :func:`nl_caption_files`). ``ids`` limits the rows kept to those posts.
    """
    if not spec.nl_captions:
        return None
    frames = []
    for path in nl_caption_files(spec.nl_captions):
        lf = _scan(path)
        try:
            schema = lf.collect_schema()
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise CaptionInputError(f"{path}: cannot read: {_why_unreadable(path, exc)}") from exc
        names = schema.names()
        missing = [f for f in ("id", *spec.nl_fields) if f not in names]
        if spec.nl_finished and FINISH_FIELD not in names:
            missing.append(FINISH_FIELD)
        if missing:
            raise CaptionInputError(
                f"{path}: missing field(s) {missing} (has {sorted(names)}); "
                'set nl_fields, or nl_finished = "" to take every row'
            )
        _check_types(path, lf, schema, spec.nl_fields)
        lf = lf.select(pl.col("id").cast(pl.Int64), _nl_parts(spec, names).alias("nl"))
        if ids is not None:
            lf = lf.filter(pl.col("id").is_in(ids.implode()))
        try:
            frames.append(lf.collect())
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise CaptionInputError(f"{path}: cannot read: {_why_unreadable(path, exc)}") from exc
    nl = pl.concat(frames)
    if not nl["id"].null_count() and (nl["id"].diff() > 0).all():  # increasing: no repeats
        return nl
    return nl.unique("id", keep="last", maintain_order=True)


def _check_types(path: Path, lf: pl.LazyFrame, schema: pl.Schema, fields: Sequence[str]) -> None:
    """Refuse a natural-language captions file whose ``fields`` hold no text (lists,
    objects) or whose ``id`` is not a whole number in some row (named, counted from 1)."""
    for name in fields:
        if schema[name].is_nested() or schema[name] == pl.Object:
            raise CaptionInputError(f"{path}: {name} holds {schema[name]}, not text")
    kind = schema["id"]
    if kind.is_integer() or kind == pl.Null:
        return
    if not (kind.is_float() or kind == pl.String):
        raise CaptionInputError(f"{path}: id holds {kind}, not post ids")
    raw, whole = pl.col("id"), pl.col("id").cast(pl.Int64, strict=False)
    bad = raw.is_not_null() & (whole.is_null() | (whole.cast(kind) != raw))
    found = lf.with_row_index("row", 1).filter(bad).select("row", "id").head(1).collect()
    if found.height:
        row, value = found.row(0)
        raise CaptionInputError(f"{path}: row {row}: id {value!r} is not a post id")


def read_aliases(path: str | Path) -> dict[str, str]:
    """Tag aliases (old -> new): a CSV/TSV of ``old,new`` lines (or the e621 ``tag_aliases``
    export, active rows), or a JSON/TOML mapping; gzipped (``.csv.gz``, as e621 publishes
    its exports) or not."""
    path = Path(path)
    kind = Path(path.stem).suffix if path.suffix == ".gz" else path.suffix
    try:
        data = path.read_bytes()
        text = (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8-sig")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise CaptionInputError(f"{path}: cannot read aliases: {exc}") from exc
    try:
        if kind == ".json":
            mapping = json.loads(text)
        elif kind == ".toml":
            mapping = tomlfile.loads(text)
        else:
            delimiter = "\t" if kind == ".tsv" else ","
            rows = [r for r in csv.reader(text.splitlines(), delimiter=delimiter) if r]
            if rows and {"antecedent_name", "consequent_name"} <= set(rows[0]):  # e621 export
                rows = _active_aliases(path, rows)
            bad = [i for i, r in enumerate(rows, 1) if len(r) < 2]
            if bad:
                raise CaptionInputError(f"{path}: line {bad[0]}: expected old{delimiter}new")
            mapping = {r[0].strip(): r[1].strip() for r in rows if not r[0].startswith("#")}
    except (json.JSONDecodeError, tomlfile.TOMLDecodeError) as exc:
        raise CaptionInputError(f"{path}: cannot read aliases: {exc}") from exc
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise CaptionInputError(f"{path}: aliases must map tag names to tag names")
    # both sides as raw tags ("Absurd res" is absurd_res): a post holding the new tag as
    # well keeps it once, and it is categorised and rendered as the site's tag is
    return {raw_tag(old): raw_tag(new) for old, new in mapping.items()}


def _active_aliases(path: Path, rows: list[list[str]]) -> list[list[str]]:
    """The ``[old, new]`` pairs of the e621 ``tag_aliases`` export's active rows (all rows
    when it has no ``status``); a row too short for its header is refused, naming it."""
    head = rows[0]
    old, new = head.index("antecedent_name"), head.index("consequent_name")
    status = head.index("status") if "status" in head else None
    width = max(old, new, -1 if status is None else status) + 1
    pairs = []
    for number, row in enumerate(rows[1:], 2):
        if len(row) < width:
            raise CaptionInputError(f"{path}: line {number}: {len(row)} fields, the header "
                                    f"names {len(head)}")  # fmt: skip
        if status is None or row[status] == "active":
            pairs.append([row[old], row[new]])
    return pairs


class NLTexts:
    """Natural-language texts by post id, looked up by binary search (a batch's posts in a
    table of millions, without hashing the table again for every batch)."""

    def __init__(self, nl: pl.DataFrame) -> None:
        if nl["id"].null_count():
            nl = nl.drop_nulls("id")
        if not nl["id"].is_sorted():
            nl = nl.sort("id", maintain_order=True)
        ids = nl["id"].to_numpy()
        last = np.append(ids[1:] != ids[:-1], True)  # a later row wins for a repeated id
        if not last.all():
            nl, ids = nl.filter(pl.Series(last)), ids[last]
        self.ids, self.texts = ids, nl["nl"].alias("caption_nl")

    def of(self, ids: pl.Series) -> pl.Series:
        """The texts of each of ``ids``, in order (an empty list for a post without)."""
        keys = ids.fill_null(-1).to_numpy()
        if not len(self.ids):
            return pl.Series("caption_nl", [[]] * len(ids), pl.List(pl.String))
        at = np.minimum(np.searchsorted(self.ids, keys), len(self.ids) - 1)
        found = pl.Series(self.ids[at] == keys)
        gathered = self.texts.gather(at)
        return pl.select(pl.when(found).then(gathered).otherwise(NO_TEXTS).alias("caption_nl"))[
            "caption_nl"
        ]
