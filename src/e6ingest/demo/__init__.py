"""The built-in demo: a synthetic mirror of the real Hub repositories, built locally."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e6ingest.cache import cache_dir
from e6ingest.demo.writer import DEMO_DATASETS, DemoSummary, build_demo

__all__ = ["DEMO_DATASETS", "DemoSummary", "build_demo", "cache_dir", "demo_mirror"]

DEMO_VERSION = 3  # 2: tag tables, implied species; 3: images made ten times faster


def demo_mirror(posts: int = 1000, seed: int = 0, progress: bool = True) -> Path:
    """The demo mirror in the cache folder, built on first use (saying so, with a progress
    bar on stderr unless ``progress`` is false) and reused afterwards."""
    path = cache_dir() / f"demo-v{DEMO_VERSION}-n{posts}-s{seed}"
    if not (path / "DEMO.json").is_file():
        report = _bar(path) if progress else None
        build_demo(path, posts=posts, seed=seed, report=report)
        if report is not None:
            report.close()
    return path


class _bar:
    """A bar on stderr for the demo build (tqdm, made on the first report)."""

    def __init__(self, path: Path):
        self.path = path
        self.bar: Any = None  # a tqdm bar once the first shard is done

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            import sys

            from tqdm import tqdm

            print(f"building the demo mirror (once, about 15 s on 2 cores) in {self.path}",
                  file=sys.stderr)  # fmt: skip
            self.bar = tqdm(desc="demo", total=total, unit="shard", file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
