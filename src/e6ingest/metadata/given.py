"""Metadata files a user names (``--metadata FILE ...``, ``open_dataset(files=...)``):
checked before any is read as posts, and what is odd about them said once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from e6ingest.metadata import SchemaError, id_range
from e6ingest.metadata.schemas import Schema, detect_schema
from e6ingest.metadata.values import file_warnings


def given_files(
    files: Sequence[str | Path], warn: Callable[[str], None] | None = None
) -> tuple[tuple[Path, ...], list[Schema]]:
    """``files`` as paths with their schemas (recognised from their columns). A missing
    file, a folder or files of two sites are refused; ``warn(message)`` hears of an older
    snapshot given after a newer one and of values a file cannot hold."""
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing and Path(missing[0]).is_dir():
        raise SchemaError(f"{missing[0]}: a folder; give its parquet files "
                          f"({Path(missing[0]) / '*.parquet'})")  # fmt: skip
    if missing:
        raise SchemaError(f"{missing[0]}: no such metadata file")
    given = tuple(Path(f) for f in files)
    found = [detect_schema(f) for f in given]
    _check_one_site(given, found)
    if warn is not None:
        _warn_older_last(given, warn)
        for message in (m for path in given for m in file_warnings(path)):
            warn(message)
    return given, found


def _check_one_site(files: Sequence[Path], schemas: Sequence[Schema]) -> None:
    """Refuse metadata files of two sites together: their post ids repeat (danbooru's
    post 1 is not e621's), and a later file's post would hide the other site's."""
    first = schemas[0].site
    for path, schema in zip(files, schemas, strict=True):
        if schema.site != first:
            raise SchemaError(
                f"{path}: {schema.site} metadata beside {first} metadata ({files[0]}); post "
                "ids repeat across sites, so give one site's files at a time"
            )


def _warn_older_last(files: Sequence[Path], warn: Callable[[str], None]) -> None:
    """Say, once, when a file comes after one holding higher post ids that overlap its own
    (an older snapshot after a newer one): for a post in both the later file wins, so the
    older ratings and tags would."""
    ranges = [id_range(path) for path in files]
    for later, (path, mine) in enumerate(zip(files, ranges, strict=True)):
        for earlier, theirs in enumerate(ranges[:later]):
            if mine and theirs and theirs[0] <= mine[1] < theirs[1]:
                warn(f"{path} (post ids up to {mine[1]:,}) comes after {files[earlier]} (up "
                     f"to {theirs[1]:,}): for a post in both, the later file wins, so this "
                     "older snapshot's rows would; give the newest file last")  # fmt: skip
                return
