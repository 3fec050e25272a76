"""Where e6ingest keeps what it can rebuild: the demo mirror and the Hub shard indexes."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """e6ingest's cache folder: ``$E6INGEST_CACHE``, else ``$XDG_CACHE_HOME/e6ingest``."""
    if os.environ.get("E6INGEST_CACHE"):
        return Path(os.environ["E6INGEST_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "e6ingest"
