"""A cached tag index, so a question asked again takes no scan of the tag strings.

Built once per set of metadata files (on the first query that needs it, or by ``e6ingest
index``) into e6ingest's cache, under the files' identity (path, schema, size and the
hash of the parquet footer; ``metadata.identity``), and used only after a check that the
files' content is still what it was built from: a changed file gets a new index, and the
stale one is removed. A query then reads
the posting lists of the tags it names (sorted row numbers, memory-mapped), turns them into
one boolean column per tag or wildcard, and runs on the small columns (rating, score,
dates, sizes...) of the index: the same expression as on the metadata, with the same
result (``Query.for_index``). Wildcards expand over the index's sorted tag vocabulary.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from e6ingest.core import write_atomic
from e6ingest.metadata.identity import FileIdentity, identify_all, still_valid
from e6ingest.metadata.schemas import SchemaError
from e6ingest.query.index_build import DATA_FILES, INDEX_VERSION, MARKER, Report, build
from e6ingest.query.metatags import COUNTED
from e6ingest.query.parse import Query, index_column

__all__ = ["ROW", "Report", "TagIndex", "TagIndexError", "built_index", "identity", "open_index"]

ROW = index_column("row")  # a post's row number in the index


class TagIndexError(RuntimeError):
    """An index folder that is not a complete index e6ingest wrote."""


def identity(
    files: Sequence[str | os.PathLike[str]], schemas: Sequence[str | None]
) -> dict[str, object]:
    """What an index is valid for (``metadata.identity``): for each file its resolved path,
    schema, size and parquet footer hash (the key), and the witnesses checked before each
    use (inode, times, the whole content's hash)."""
    found = identify_all(files, schemas, content=True)
    return {"version": INDEX_VERSION, "files": [f.to_dict() for f in found]}


def _key(found: Sequence[FileIdentity]) -> str:
    document = {"version": INDEX_VERSION, "files": [f.key for f in found]}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:32]


def _wildcard(pattern: str) -> str:
    """The regex a whole tag matches for a ``*`` pattern (tags hold no whitespace)."""
    return "^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$"


def _values(rows: pa.Array) -> np.ndarray:
    """The row numbers of a slice of postings, without a copy (they hold no nulls)."""
    return np.frombuffer(rows.buffers()[1], np.uint32, len(rows), rows.offset * 4)


class TagIndex:
    """A built index (see the module doc): queries, counts and per-tag counts."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.built_now = False  # True when open_index built it for this call
        try:
            self.record = json.loads((self.folder / MARKER).read_text())
            sizes = {name: (self.folder / name).stat().st_size for name in DATA_FILES}
            if sizes != self.record["sizes"]:
                raise ValueError(f"file sizes {sizes}, built as {self.record['sizes']}")
            self.rows: int = self.record["rows"]
            pq.read_metadata(self.folder / "tags.parquet")  # footers a damaged file fails
            for name in ("rows.arrow", "postings.arrow"):
                pa.ipc.open_file(pa.memory_map(str(self.folder / name))).schema  # noqa: B018
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TagIndexError(f"{self.folder}: not a complete tag index ({exc})") from None

    @cached_property
    def _postings(self) -> pa.ChunkedArray:
        source = pa.memory_map(str(self.folder / "postings.arrow"))
        return pa.ipc.open_file(source).read_all().column("row")

    def vocabulary(self) -> pl.DataFrame:
        """Every tag with its number of posts, most used first."""
        tags = pl.read_parquet(self.folder / "tags.parquet", columns=["tag", "posts"])
        return tags.sort(["posts", "tag"], descending=[True, False])

    def _lists(self, tags: pl.DataFrame) -> np.ndarray:
        """The row numbers of the posts of any of ``tags`` (``posts``, ``start``)."""
        parts = [_values(chunk)
                 for posts, start in tags.select("posts", "start").iter_rows()
                 for chunk in self._postings.slice(start, posts).chunks]  # fmt: skip
        return np.concatenate(parts) if parts else np.empty(0, np.uint32)

    def matching(self, pattern: str) -> pl.DataFrame:
        """The tags of the vocabulary ``pattern`` names (itself, or those a ``*`` matches)."""
        tags = pl.scan_parquet(self.folder / "tags.parquet")
        if "*" in pattern:
            return tags.filter(pl.col("tag").str.contains(_wildcard(pattern))).collect()
        return tags.filter(pl.col("tag") == pattern).collect()

    def mask(self, pattern: str) -> np.ndarray:
        """For each row, whether its post has a tag ``pattern`` names."""
        mask = np.zeros(self.rows, dtype=bool)
        mask[self._lists(self.matching(pattern))] = True
        return mask

    def _frame(self, columns: Sequence[str], counts: Sequence[str] = ()) -> pl.DataFrame:
        """The row numbers (``ROW``), ``columns`` of the rows and the tag ``counts`` named
        as a query over the index names them."""
        frame = pl.select(pl.int_range(self.rows, dtype=pl.UInt32).alias(ROW))
        names = [*dict.fromkeys(columns), *dict.fromkeys(counts)]
        if names:
            read = pl.read_ipc(self.folder / "rows.arrow", columns=names)
            frame = frame.hstack(read.rename({n: index_column(n) for n in counts}))
        return frame

    def selected(self, query: Query, columns: Sequence[str] = ("id",)) -> pl.DataFrame:
        """``columns`` of the posts ``query`` selects, in metadata order (deleted posts
        only when the query was parsed with ``include_deleted``); ``ROW`` is each post's
        row number in the index."""
        indexed = query.for_index()
        expr = indexed.expr
        if not query.include_deleted:
            expr = ~pl.col("is_deleted") if expr is None else expr & ~pl.col("is_deleted")
        names = set(expr.meta.root_names()) if expr is not None else set()
        plain = [n for n in names if not n.startswith(index_column(""))]
        counts = [n for n in COUNTED if index_column(n) in names]
        wanted = [c for c in columns if c != ROW]
        frame = self._frame([*plain, *(c for c in wanted if c not in plain)], counts)
        tags = [p for p in indexed.patterns if index_column(p) in names]
        if tags:
            frame = frame.with_columns(pl.Series(index_column(t), self.mask(t)) for t in tags)
        return (frame if expr is None else frame.filter(expr)).select(columns)

    def count(self, query: Query) -> int:
        """How many posts ``query`` selects."""
        return self.selected(query, (ROW,)).height

    def ids(self, query: Query) -> pl.Series:
        """The ids of the posts ``query`` selects, in metadata order."""
        return self.selected(query, ("id",))["id"]

    def tag_counts(self, query: Query, tags: Sequence[str]) -> dict[str, int]:
        """For each of ``tags`` (or wildcards), on how many of the selected posts it is."""
        chosen = np.zeros(self.rows, dtype=bool)
        chosen[self.selected(query, (ROW,))[ROW].to_numpy()] = True
        return {tag: int((self.mask(tag) & chosen).sum()) for tag in tags}


def _stale(root: Path, found: Sequence[FileIdentity], key: str) -> list[Path]:
    """Complete indexes of the same files (by path) under another key: theirs changed."""
    paths = {f.path for f in found}
    stale = []
    for marker in root.glob(f"*/{MARKER}"):
        try:
            record = json.loads(marker.read_text())
            theirs = {f["path"] for f in record["identity"]["files"]}
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not one of ours: left alone
        if theirs == paths and marker.parent.name != key and not marker.parent.is_symlink():
            stale.append(marker.parent)
    return stale


def _confirm(index: TagIndex, found: Sequence[FileIdentity]) -> bool:
    """Whether ``index`` holds for the files as they are now (``found``): the witnesses
    of its record checked (``metadata.identity.still_valid``); a record whose witnesses
    moved while the content stayed the same is brought up to date."""
    try:
        saved = index.record["identity"]["files"]
        kept = [still_valid(s, now) for s, now in zip(saved, found, strict=True)]
    except (KeyError, TypeError, ValueError):
        return False
    if any(k is None for k in kept):
        return False
    current = [k.to_dict() for k in kept if k is not None]
    if current != saved:
        record = {**index.record, "identity": {**index.record["identity"], "files": current}}
        write_atomic(index.folder / MARKER, json.dumps(record, indent=1).encode())
        index.record = record
    return True


def _remove(folder: Path) -> None:
    """Remove an index's files (the marker first, so a half-removed index is never taken
    for a complete one), then its folder if nothing else is in it."""
    for name in (MARKER, *DATA_FILES):
        (folder / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # something e6ingest did not write is in it: kept
        folder.rmdir()


def built_index(
    files: Sequence[str | os.PathLike[str]], schemas: Sequence[str | None], root: Path
) -> TagIndex | None:
    """The index of the metadata ``files`` in ``root`` when one is built for them as they
    are now (checked: ``_confirm``), else None; a stale or damaged one is removed."""
    found = identify_all(files, schemas)
    folder = root / _key(found)
    if folder.is_symlink():
        raise TagIndexError(f"{folder}: a symlink where a tag index belongs; remove it")
    if not (folder / MARKER).is_file():
        return None
    try:
        index = TagIndex(folder)
        if _confirm(index, found):
            return index
    except TagIndexError:  # damaged since it was built: built again
        pass
    _remove(folder)  # built from other content, or damaged
    return None


def open_index(
    files: Sequence[str | os.PathLike[str]],
    schemas: Sequence[str | None],
    root: Path,
    report: Report | None = None,
) -> TagIndex:
    """The index of the metadata ``files`` in the folder ``root``, built first when there
    is none for the files as they are now (``report(done, total)`` hears the progress);
    indexes of earlier versions of the same files are removed. An index is used only once
    its files' content is confirmed to be what it was built from."""
    index = built_index(files, schemas, root)
    if index is not None:
        return index
    found = identify_all(files, schemas)
    key = _key(found)
    folder = root / key
    if folder.exists():
        raise TagIndexError(f"{folder}: in the way of a tag index and not one; remove it")
    root.mkdir(parents=True, exist_ok=True)
    for old in _stale(root, found, key):
        _remove(old)
    ident = identity(files, schemas)
    build([Path(f) for f in files], schemas, folder, ident, report)
    index = TagIndex(folder)
    index.built_now = True
    if not _confirm(index, identify_all(files, schemas)):
        _remove(folder)
        raise SchemaError(
            f"{', '.join(map(str, files))}: changed while the tag index was built; "
            "try again once the files are written"
        )
    return index
