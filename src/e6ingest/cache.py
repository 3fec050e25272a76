"""Where e6ingest keeps what it can rebuild: the demo mirror and the Hub shard indexes."""

from __future__ import annotations

import os
from pathlib import Path


class CacheError(OSError):
    """The cache folder cannot be used; the message names it."""


def cache_dir() -> Path:
    """e6ingest's cache folder: ``$E6INGEST_CACHE``, else ``$XDG_CACHE_HOME/e6ingest``;
    :class:`CacheError` when that path is a file."""
    if os.environ.get("E6INGEST_CACHE"):
        path, named = Path(os.environ["E6INGEST_CACHE"]), "$E6INGEST_CACHE"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        path, named = Path(base) / "e6ingest", "the cache folder"
    if path.exists() and not path.is_dir():
        raise CacheError(f"{named} {path} is a file, not a folder; set E6INGEST_CACHE to a "
                         "folder e6ingest may fill")  # fmt: skip
    return path
