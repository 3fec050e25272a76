"""``pull``: metadata -> query -> plan -> tasks -> shards, failures and the run manifest."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from e6ingest import __version__
from e6ingest.manifests import DatasetManifest, load_manifest
from e6ingest.metadata import scan_files
from e6ingest.pipeline.executor import LocalExecutor
from e6ingest.pipeline.plan import (
    PLAN_FILE,
    make_plan,
    plan_fingerprint,
    save_plan,
    shard_numbers,
)
from e6ingest.pipeline.task import ShardTask, run_task
from e6ingest.query import selection_query
from e6ingest.shards import shard_complete, shard_paths, write_atomic
from e6ingest.sources import MirrorSource, SourceSpec

FORMAT_VERSION = 1
SHARDS_DIR = "shards"
FAILURES_FILE = "failures.parquet"
MANIFEST_FILE = "manifest.json"
FAILURE_SCHEMA = {
    "id": pl.Int64,
    "site": pl.String,
    "stage": pl.String,
    "kind": pl.String,
    "message": pl.String,
}


class OutputConflict(RuntimeError):
    """The output folder holds a run made with a different configuration."""


@dataclass
class PullSummary:
    """What a pull did, for the final report."""

    out: Path
    selected: int = 0
    written: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    shards: int = 0
    shards_skipped: int = 0
    bytes: int = 0
    seconds: float = 0.0

    @property
    def samples_per_second(self) -> float:
        """Written samples per second of wall time."""
        return self.written / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        """The summary as human-readable lines."""
        failed = ", ".join(f"{k} {v}" for k, v in sorted(self.failed.items())) or "none"
        return [
            f"selected {self.selected}, written {self.written}, "
            f"failed {sum(self.failed.values())} ({failed})",
            f"{self.shards} shards ({self.shards_skipped} already complete), "
            f"{self.bytes / 1e6:.1f} MB, {self.seconds:.1f} s, "
            f"{self.samples_per_second:.1f} samples/s",
            f"output: {self.out}",
        ]


def _fingerprint(config, manifest: DatasetManifest) -> dict:
    """What decides a run's output, in the JSON form it is saved in."""
    document = {
        "format_version": FORMAT_VERSION,
        "dataset": manifest.name,
        "config": config.to_dict(),
    }
    return json.loads(json.dumps(document))


def _prepare_output(out: Path, fingerprint: dict, overwrite: bool) -> bool:
    """Make ``out`` ready; True when a saved plan of the same config is to be continued."""
    saved = plan_fingerprint(out / PLAN_FILE)
    if saved == fingerprint:
        return True
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            what = "a run with a different configuration" if saved else "other files"
            raise OutputConflict(
                f"{out} holds {what}; use another --out, or --overwrite to start over"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return False


def _collect_stats(shards_dir: Path, numbers: list[int]) -> list[dict]:
    return [
        json.loads(shard_paths(shards_dir, n)["stats"].read_text(encoding="utf-8")) for n in numbers
    ]


def _write_results(out: Path, manifest: DatasetManifest, fingerprint: dict, stats: list[dict]):
    failures = [f for s in stats for f in s["failures"]]
    frame = pl.DataFrame(failures, schema=FAILURE_SCHEMA)
    frame.write_parquet(out / f".{FAILURES_FILE}.tmp")
    (out / f".{FAILURES_FILE}.tmp").replace(out / FAILURES_FILE)
    outcomes: Counter[str] = Counter()
    for s in stats:
        outcomes.update(s["outcomes"])
    document = {
        "format_version": FORMAT_VERSION,
        "e6ingest_version": __version__,
        "dataset": {
            "name": manifest.name,
            "site": manifest.site,
            "repos": {
                **{m.repo: m.revision for m in manifest.metadata},
                **{i.repo: i.revision for i in manifest.images},
            },
        },
        "config": fingerprint["config"],
        "totals": {
            "selected": sum(s["selected"] for s in stats),
            "written": outcomes.pop("written", 0),
            "failed": dict(sorted(outcomes.items())),
            "bytes": sum(s["tar_bytes"] for s in stats),
        },
        "shards": [
            {
                "name": f"{SHARDS_DIR}/{s['shard']}.tar",
                "samples": s["samples"],
                "bytes": s["tar_bytes"],
                "sha256": s["tar_sha256"],
            }
            for s in stats
        ],
    }
    write_atomic(out / MANIFEST_FILE, json.dumps(document, indent=1).encode())
    return document


def pull(
    config,
    out: str | Path,
    mirror: str | Path,
    workers: int | None = None,
    overwrite: bool = False,
    progress: Callable[[dict, int, int], None] | None = None,
) -> PullSummary:
    """Run a pull from a local mirror into ``out`` and return its summary.

    A rerun of the same config on the same ``out`` continues the saved plan, skipping
    shards that are complete; a different config on a non-empty ``out`` raises
    :class:`OutputConflict` unless ``overwrite``. ``progress(stats, done, total)`` is
    called as each shard completes.
    """
    start = time.perf_counter()
    out = Path(out)
    manifest = load_manifest(config.dataset)
    query = selection_query(config.query, config.ratings)  # fails before any work
    source = MirrorSource(mirror, manifest)
    files = [source.metadata_file(m) for m in manifest.metadata]
    fingerprint = _fingerprint(config, manifest)
    if not _prepare_output(out, fingerprint, overwrite):
        metadata = scan_files(files, [m.schema for m in manifest.metadata], config.include_deleted)
        plan = make_plan(metadata, query, config.shard_size, manifest.images[0].shards)
        save_plan(plan, out, fingerprint)
    shards_dir = out / SHARDS_DIR
    numbers = shard_numbers(out / PLAN_FILE)
    spec = SourceSpec(manifest=manifest.source_file, mirror=str(Path(mirror).resolve()))
    todo = [n for n in numbers if not shard_complete(shards_dir, n)]
    tasks = [
        ShardTask(
            n,
            str(out / PLAN_FILE),
            str(shards_dir),
            spec,
            config.image,
            config.caption,
            config.buckets,
        )
        for n in todo
    ]
    for done, stats in enumerate(LocalExecutor(workers).run(run_task, tasks), 1):
        if progress is not None:
            progress(stats, done, len(tasks))
    all_stats = _collect_stats(shards_dir, numbers)
    document = _write_results(out, manifest, fingerprint, all_stats)
    totals = document["totals"]
    return PullSummary(
        out=out,
        selected=totals["selected"],
        written=totals["written"],
        failed=totals["failed"],
        shards=len(numbers),
        shards_skipped=len(numbers) - len(todo),
        bytes=totals["bytes"],
        seconds=time.perf_counter() - start,
    )
