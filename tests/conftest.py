"""Shared fixtures: the 1k-post demo mirror (built once per session) and reference paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from e6ingest.demo import build_demo

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A demo mirror of 1000 posts per site, as users get from `e6ingest demo`."""
    root = tmp_path_factory.mktemp("mirror") / "demo"
    build_demo(root, posts=1000, seed=0)
    return root


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> Path:
    """A small demo mirror (60 posts per site) for tests that need few posts."""
    root = tmp_path_factory.mktemp("small") / "demo"
    build_demo(root, posts=60, seed=3, workers=1)
    return root


@pytest.fixture(scope="session")
def reference() -> Path:
    """The folder of real format samples (``shared/reference`` beside the checkout)."""
    if not REFERENCE.is_dir():
        pytest.fail(f"reference samples not found at {REFERENCE}; check out shared/ beside")
    return REFERENCE
