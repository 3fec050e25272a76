"""A pull killed with SIGKILL (workers included) at any point, then rerun, writes exactly
the bytes of an uninterrupted run; two clean runs write identical bytes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from e6ingest.shards.reader import iter_samples


def _command(mirror: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "e6ingest", "pull", "--mirror", str(mirror), "--out", str(out),
            "--rating", "e,q,s", "--shard-size", "8", "--workers", "2", "--quiet"]  # fmt: skip


def _digests(out: Path) -> dict[str, str]:
    files = sorted((out / "shards").glob("*.tar")) + sorted((out / "shards").glob("*.parquet"))
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _run(mirror: Path, out: Path) -> None:
    done = subprocess.run(_command(mirror, out), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


def _kill_when(mirror: Path, out: Path, ready, delay: float) -> None:
    """Start a pull, wait until ``ready(out)`` (or the run ends), wait ``delay`` more, and
    kill its whole process group with SIGKILL."""
    proc = subprocess.Popen(
        _command(mirror, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and not ready(out) and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tar_being_written(out: Path) -> bool:
    shards = out / "shards"
    if not shards.is_dir():
        return False
    for path in shards.iterdir():
        if ".tar." in path.name and path.name.endswith(".tmp"):
            try:
                if path.stat().st_size > 0:
                    return True
            except FileNotFoundError:  # renamed into place meanwhile
                continue
    return False


def _some_shard_complete(out: Path) -> bool:
    return (out / "shards").is_dir() and any((out / "shards").glob("*.stats.json"))


@pytest.mark.slow
def test_killed_runs_finish_with_the_bytes_of_an_uninterrupted_run(small_demo, tmp_path):
    reference = tmp_path / "reference"
    _run(small_demo, reference)
    expected = _digests(reference)
    assert len(expected) >= 2 * 5  # tars and indexes of several shards

    rng = random.Random(7)
    out = tmp_path / "killed"
    kill_points = [
        (lambda o: o.exists(), rng.uniform(0.0, 0.5)),  # while reading and planning
        (_tar_being_written, 0.0),  # in the middle of a tar
        (_tar_being_written, rng.uniform(0.0, 0.05)),
        (_some_shard_complete, rng.uniform(0.0, 0.3)),
        (lambda o: True, rng.uniform(0.5, 2.5)),  # anywhere, a moment after the start
    ]
    for ready, delay in kill_points:
        _kill_when(small_demo, out, ready, delay)
    _run(small_demo, out)

    assert _digests(out) == expected
    assert (out / "manifest.json").read_bytes() == (reference / "manifest.json").read_bytes()
    keys = [key for key, _ in iter_samples(out)]
    assert len(keys) == len(set(keys))
    assert keys == [key for key, _ in iter_samples(reference)]
    assert not [p for p in out.rglob("*.tmp")]  # every temporary file was replaced


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
