"""A pull killed with SIGKILL (workers included) at each point the code marks as one
(``core.kill_point``: after the plan, in the middle of a tar, between a tar and its stats,
between the failures and the manifest...), then rerun, writes exactly the bytes of an
uninterrupted run; two clean runs write identical bytes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest


def _command(mirror: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "e6ingest", "pull", "--mirror", str(mirror), "--out", str(out),
            "--rating", "e,q,s", "--shard-size", "8", "--workers", "2", "--quiet"]  # fmt: skip


def _digests(out: Path) -> dict[str, str]:
    files = sorted((out / "shards").glob("*.tar")) + sorted((out / "shards").glob("*.parquet"))
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _run(mirror: Path, out: Path) -> None:
    done = subprocess.run(_command(mirror, out), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_two_clean_runs_are_byte_identical(small_demo, tmp_path):
    from e6ingest.config import make_config
    from e6ingest.pipeline import pull

    config = make_config({"ratings": "e,q,s", "shard_size": 8})
    first = pull(config, tmp_path / "a", small_demo, workers=2)
    second = pull(config, tmp_path / "b", small_demo, workers=1)
    assert first.written == second.written > 0
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    plan_a, plan_b = (pl.read_parquet(tmp_path / d / "plan.parquet") for d in "ab")
    assert plan_a.equals(plan_b)


# Each run is killed where the code says (``core.kill_point``), one point after the other,
# each run continuing what the one before left.
KILL_POINTS = ["planned", "sample:3", "tar-written", "tar-renamed", "before-stats",
               "failures-written", "manifest-written"]  # fmt: skip


@pytest.mark.slow
def test_a_run_killed_at_each_kill_point_is_finished_by_the_next(small_demo, tmp_path):
    from e6ingest.core import KILL_POINT_VARIABLE

    reference = tmp_path / "reference"
    _run(small_demo, reference)
    out = tmp_path / "killed"
    for point in KILL_POINTS:
        env = {**os.environ, KILL_POINT_VARIABLE: point}
        done = subprocess.run(_command(small_demo, out), capture_output=True, env=env,
                              start_new_session=True, timeout=600)  # fmt: skip
        assert done.returncode == -signal.SIGKILL, (point, done.returncode, done.stderr)
    _run(small_demo, out)
    assert _digests(out) == _digests(reference)
    assert (out / "manifest.json").read_bytes() == (reference / "manifest.json").read_bytes()
    assert not [p for p in out.rglob("*.tmp")]  # every temporary file was replaced
