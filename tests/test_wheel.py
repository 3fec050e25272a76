"""The wheel users install from a checkout (no release on PyPI yet): it builds, and holds
what e6ingest reads at run time (the dataset manifests, the CLIP vocabulary) and the
command."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_builds_with_its_data_and_command(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", str(ROOT),
         "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("e6ingest-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "e6ingest/manifests/e621.toml" in names
    assert "e6ingest/captions/clip/bpe_simple_vocab_16e6.txt.gz" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "e6ingest = e6ingest.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
