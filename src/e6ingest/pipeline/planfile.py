"""Reading a saved plan (``OUT/plan.parquet``): what workers and the driver's later steps
need of it, apart from the planner that writes it (so a worker imports no planner)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import polars as pl

DUPLICATE_OF = "duplicate_of"  # plan column: the post kept in place of this one (same md5)


def _plan_metadata(path: Path, key: str) -> Any:
    if not path.is_file():
        return None
    return json.loads(pl.read_parquet_metadata(path).get(key, "null"))


def plan_fingerprint(path: Path) -> dict[str, Any] | None:
    """The config fingerprint a saved plan was made with, or None when there is no plan."""
    fingerprint: dict[str, Any] | None = _plan_metadata(path, "e6ingest.fingerprint")
    return fingerprint


def plan_id(path: Path) -> str:
    """What names a plan: a hash of the config fingerprint and the commits it was made
    with. Every shard records the plan it was written for (``verify`` compares)."""
    document = {"fingerprint": plan_fingerprint(path), "commits": plan_commits(path)}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


def plan_metadata_files(path: Path) -> dict[str, str] | None:
    """The metadata files a saved plan was made from, by name (repository/path): each one's
    size and parquet footer hash (None if not recorded)."""
    files: dict[str, str] | None = _plan_metadata(path, "e6ingest.metadata")
    return files


def plan_rejected(path: Path) -> list[dict[str, Any]]:
    """Failure records of the metadata rows the plan could not use (rows without an id)."""
    rejected: list[dict[str, Any]] = _plan_metadata(path, "e6ingest.rejected") or []
    return rejected


def plan_commits(path: Path) -> dict[str, str] | None:
    """The commit of each repository a saved plan was made from (None if not recorded)."""
    commits: dict[str, str] | None = _plan_metadata(path, "e6ingest.commits") or None
    return commits


def shard_rows(plan_path: str | Path, shard: int) -> pl.DataFrame:
    """The plan rows of one output shard, in order."""
    return pl.scan_parquet(plan_path).filter(pl.col("shard") == shard).sort("position").collect()


def shard_sizes(plan_path: str | Path) -> dict[int, int]:
    """Every output shard number of a saved plan, with its number of posts."""
    sizes = pl.scan_parquet(plan_path).group_by("shard").len().sort("shard").collect()
    return dict(sizes.iter_rows())


# A post kept as it is (a compliant WebP) or left out costs its task about as much as
# re-encoding this many source pixels (fetching, checking, writing it).
_KEPT_POST_PIXELS = 50_000


def shard_costs(
    plan_path: str | Path, max_pixels: int, pass_through: bool, shards: list[int]
) -> dict[int, int]:
    """The estimated work of each of ``shards``, in source pixels: a post whose image is
    re-encoded counts its pixels, one a WebP within ``max_pixels`` kept as it is a small
    fixed share (the plan's sizes and file types; a guess that only orders the tasks)."""
    pixels = pl.col("width").fill_null(0) * pl.col("height").fill_null(0)
    kept = (pl.col("file_ext").str.to_lowercase() == "webp") & (pixels <= max_pixels)
    cost = pl.when(kept & pass_through).then(0).otherwise(pixels) + _KEPT_POST_PIXELS
    costs = (
        pl.scan_parquet(plan_path)
        .filter(pl.col("shard").is_in(shards))
        .group_by("shard")
        .agg(cost.sum().alias("cost"))
        .collect()
    )
    return dict(costs.iter_rows())


def run_end(numbers: list[int], workers: int) -> list[int]:
    """The last ``4 * workers`` shards of a run: those whose order decides how long the
    last worker runs alone."""
    return numbers[max(0, len(numbers) - 4 * max(1, workers)) :]


def heaviest_last_first(numbers: list[int], costs: dict[int, int], workers: int) -> list[int]:
    """The shards in plan order, but the run's end (:func:`run_end`) by falling cost: the
    run then ends on its lightest shards, and no worker waits long for the last one."""
    end = run_end(numbers, workers)
    return numbers[: len(numbers) - len(end)] + sorted(end, key=lambda n: (-costs.get(n, 0), n))
