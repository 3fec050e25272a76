"""The built-in demo: a synthetic mirror of the real Hub repositories, built locally."""

from __future__ import annotations

from pathlib import Path

from e6ingest.cache import cache_dir
from e6ingest.demo.writer import DEMO_DATASETS, DemoSummary, build_demo

__all__ = ["DEMO_DATASETS", "DemoSummary", "build_demo", "cache_dir", "demo_mirror"]

DEMO_VERSION = 2  # 2: tag tables, implied species


def demo_mirror(posts: int = 1000, seed: int = 0) -> Path:
    """The demo mirror in the cache folder, built on first use and reused afterwards."""
    path = cache_dir() / f"demo-v{DEMO_VERSION}-n{posts}-s{seed}"
    if not (path / "DEMO.json").is_file():
        build_demo(path, posts=posts, seed=seed)
    return path
