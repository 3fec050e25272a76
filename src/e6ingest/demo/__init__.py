"""The built-in demo: a synthetic mirror of the real Hub repositories, built locally."""

from __future__ import annotations

import os
from pathlib import Path

from e6ingest.demo.writer import DEMO_DATASETS, DemoSummary, build_demo

__all__ = ["DEMO_DATASETS", "DemoSummary", "build_demo", "cache_dir", "demo_mirror"]

DEMO_VERSION = 1


def cache_dir() -> Path:
    """e6ingest's cache folder: ``$E6INGEST_CACHE``, else ``$XDG_CACHE_HOME/e6ingest``."""
    if os.environ.get("E6INGEST_CACHE"):
        return Path(os.environ["E6INGEST_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "e6ingest"


def demo_mirror(posts: int = 1000, seed: int = 0) -> Path:
    """The demo mirror in the cache folder, built on first use and reused afterwards."""
    path = cache_dir() / f"demo-v{DEMO_VERSION}-n{posts}-s{seed}"
    if not (path / "DEMO.json").is_file():
        build_demo(path, posts=posts, seed=seed)
    return path
