"""The tags a dataset has: counted once per metadata file set and cached, so a query naming
a tag no post has gets a warning with the closest real tags, and a ``name:value`` term that
is neither a metatag nor a tag is refused."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from e6ingest.cache import cache_dir
from e6ingest.core import atomic_path
from e6ingest.metadata import scan_files
from e6ingest.metadata.identity import FileIdentity, identify_all, still_valid
from e6ingest.metadata.schemas import TAG_CHARACTER, TAG_SEPARATOR, scan_file
from e6ingest.query.index_build import metadata_rows
from e6ingest.query.metatags import SUPPORTED, supported_list
from e6ingest.query.parse import Query, QueryError, has_tag

VOCABULARY_VERSION = 3
IDENTITY_KEY = b"e6ingest.identity"  # the files' identity, in the parquet's key-value metadata


def _key(found: Sequence[FileIdentity]) -> str:
    document = json.dumps({"version": VOCABULARY_VERSION, "files": [f.key for f in found]},
                          sort_keys=True)  # fmt: skip
    return hashlib.sha256(document.encode()).hexdigest()[:32]


def _read(path: Path, found: Sequence[FileIdentity]) -> pl.DataFrame | None:
    """The vocabulary cached at ``path`` when it was counted from the files as they are
    now (``metadata.identity.still_valid``), else None."""
    try:
        saved = json.loads(pq.read_schema(path).metadata[IDENTITY_KEY])
        if len(saved) != len(found) or any(
            still_valid(s, f) is None for s, f in zip(saved, found, strict=True)
        ):
            return None
        return pl.read_parquet(path)
    except (OSError, ValueError, KeyError, TypeError, pl.exceptions.PolarsError):
        return None


def cached_vocabulary(
    files: Sequence[str | os.PathLike[str]], schemas: Sequence[str | None], folder: Path
) -> pl.DataFrame:
    """Every tag of the metadata ``files`` (read with ``schemas``) with its number of posts,
    most used first, kept in ``folder`` under the files' identity (path, schema, size,
    footer hash; ``metadata.identity``) and used again only when their content is
    unchanged. Counted in one streaming pass (:func:`tag_counts`)."""
    found = identify_all(files, schemas)
    path = folder / f"{_key(found)}.parquet"
    cached = _read(path, found)
    if cached is not None:
        return cached
    counted = identify_all(files, schemas, content=True)
    vocabulary = tag_counts([Path(f) for f in files], schemas)
    identity = json.dumps([f.to_dict() for f in counted]).encode()
    table = vocabulary.to_arrow()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), IDENTITY_KEY: identity})
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
    except OSError:  # a cache folder e6ingest may not write: counted again next time
        pass
    return vocabulary


def _counted(rows: pl.LazyFrame, tags: pl.Expr) -> pl.DataFrame:
    """On how many ``rows`` each of the ``tags`` lists' items is, most used first."""
    return (
        rows.select(tags.list.unique().alias("tag"))
        .explode("tag")
        .filter(pl.col("tag").is_not_null() & (pl.col("tag") != ""))
        .group_by("tag")
        .agg(pl.len().cast(pl.UInt32).alias("posts"))
        .sort(["posts", "tag"], descending=[True, False])
        .collect(engine="streaming")
    )


def tag_counts(files: Sequence[Path], schemas: Sequence[str | None]) -> pl.DataFrame:
    """Every tag of the metadata ``files`` (deleted posts included) with its number of
    ``posts``, most used first, as the tag index counts them: a tag string's runs of
    characters other than whitespace and control characters. Split at spaces in one
    streaming pass; read again, by those runs, only when some tag string holds other
    whitespace."""
    rows = scan_files(files, schemas, include_deleted=True)
    counted = _counted(rows, pl.col("tags").str.split(" "))
    if counted["tag"].str.contains(TAG_SEPARATOR).any():
        counted = _counted(rows, pl.col("tags").str.extract_all(f"{TAG_CHARACTER}+"))
    return counted


FIRST_ROWS = 131_072  # rows read first when looking for tags; each next read twice as many
MOST_ROWS = 1_048_576


def tags_present(
    files: Sequence[str | os.PathLike[str]], schemas: Sequence[str | None], tags: Sequence[str],
    include_deleted: bool = False,
) -> set[str]:  # fmt: skip
    """Which of ``tags`` some post of the metadata ``files`` has, reading a growing slice
    of rows at a time and stopping once every tag is found (a tag no post has costs one
    whole pass). Rows a later file supersedes are read too: a tag only they hold counts as
    present, so at worst a warning about it is not given."""
    missing, found = sorted(set(tags)), set[str]()
    for path, schema in zip(files, schemas, strict=True):
        rows, start, total, size = (
            scan_file(Path(path), schema),
            0,
            metadata_rows([Path(path)]),
            FIRST_ROWS,
        )
        while missing and start < total:
            part = rows.slice(start, size)
            if not include_deleted:
                part = part.filter(~pl.col("is_deleted"))
            row = part.select(has_tag(t).any().alias(t) for t in missing).collect().row(0)
            found.update(t for t, there in zip(missing, row, strict=True) if there)
            missing = [t for t in missing if t not in found]
            start, size = start + size, min(size * 2, MOST_ROWS)
    return found


def closest_tags(tag: str, vocabulary: pl.DataFrame, n: int = 3) -> list[str]:
    """The ``n`` tags of the vocabulary spelled most like ``tag`` (most used on a tie)."""
    head = tag[:1]
    candidates = vocabulary.filter(
        pl.col("tag").str.starts_with(head) | (pl.col("tag").str.len_chars() - len(tag)).abs().le(1)
    )["tag"].to_list()
    return difflib.get_close_matches(tag, candidates, n=n, cutoff=0.6)


def check_tags(query: Query, vocabulary: pl.DataFrame) -> list[str]:
    """Warnings for the tags of ``query`` that no post has, each with the closest tags;
    raises :class:`QueryError` for a ``name:value`` term that is no tag either."""
    known = set(vocabulary.filter(pl.col("tag").is_in([t.tag for t in query.tags]))["tag"])
    warnings = []
    for term in query.tags:
        if term.tag in known:
            continue
        if term.colon:
            refuse_unknown_metatags(query, lambda tags: known)
        metatag = re.fullmatch(r"([a-z_]+)(>=|<=|>|<|=)(.+)", term.tag)
        if metatag and metatag[1] in SUPPORTED:  # score>=50: the metatag without its colon
            near = [f"{metatag[1]}:{metatag[2]}{metatag[3]}"]
        else:
            near = closest_tags(term.tag, vocabulary)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        warnings.append(f"tag {term.tag!r} is on no post of this dataset{hint}")
    return warnings


def refuse_unknown_metatags(query: Query, present: Callable[[list[str]], set[str]]) -> None:
    """Raise :class:`QueryError` for the first ``name:value`` term of ``query`` that is no
    metatag and that ``present(tags)`` (which of them some post has) does not find
    (``upvotes:>5``): never a tag no post has, answered 0 (or everything, negated)."""
    colon = [term for term in query.tags if term.colon]
    found = present([term.tag for term in colon]) if colon else set()
    for term in colon:
        if term.tag not in found:
            name = term.tag.split(":", 1)[0]
            raise QueryError(query.text, term.start, term.text,
                             f"{name}: is no metatag and {term.tag!r} no tag of this dataset "
                             f"(supported metatags: {supported_list()})")  # fmt: skip


def query_warnings(
    query: Query,
    present: Callable[[list[str]], set[str]],
    vocabulary: Callable[[], pl.DataFrame],
) -> list[str]:
    """:func:`check_tags` for ``query`` on metadata without an index: ``present(tags)``
    (which of them some post has; :func:`tags_present`, reading the first rows until each
    is found) first, and the whole ``vocabulary`` (a pass over every tag, cached) counted
    only when some tag of the query is on none of them: a query of real tags on fresh
    metadata is checked in a slice of it."""
    if not query.tags:
        return []
    names = {t.tag for t in query.tags}
    if present(sorted(names)) == names:
        return []
    return check_tags(query, vocabulary())


def metadata_warnings(
    query: Query,
    files: Sequence[str | os.PathLike[str]],
    schemas: Sequence[str | None],
    include_deleted: bool = False,
) -> list[str]:
    """Warnings for the tags of ``query`` that no post of the metadata ``files`` has (with
    the closest ones); raises :class:`QueryError` for ``name:value`` terms that are neither
    metatags nor tags. From the query's tag index when it has one; else its tags are looked
    for in the first rows and the dataset's tags counted (once, cached by the files) only
    to suggest the closest to a tag no post has."""
    if not query.tags:
        return []
    if query.index is not None:
        return check_tags(query, query.index.vocabulary())
    folder = cache_dir() / "vocabulary"
    present = partial(tags_present, files, schemas, include_deleted=include_deleted)
    return query_warnings(query, present, lambda: cached_vocabulary(files, schemas, folder))
