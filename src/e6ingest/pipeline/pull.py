"""``pull``: metadata -> query -> plan -> tasks -> shards, failures and the run manifest."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from e6ingest import __version__
from e6ingest.manifests import DatasetManifest, load_manifest
from e6ingest.metadata import scan_files
from e6ingest.pipeline.executor import LocalExecutor, default_workers
from e6ingest.pipeline.imagepool import ImagePool
from e6ingest.pipeline.plan import (
    plan_fingerprint,
    shard_sizes,
    write_plan,
)
from e6ingest.pipeline.sourcing import ShardJanitor, metadata_source, whole_shards
from e6ingest.pipeline.task import ShardTask, run_task
from e6ingest.query import selection_query
from e6ingest.shards import (
    FAILURES_FILE,
    MANIFEST_FILE,
    PLAN_FILE,
    SHARDS_DIR,
    shard_complete,
    shard_paths,
    write_atomic,
)
from e6ingest.sources import FailureKind, HubOptions, HubSource, SourceSpec
from e6ingest.sources.retry import require_reachable

FORMAT_VERSION = 2
FAILURE_SCHEMA = {
    "id": pl.Int64,
    "site": pl.String,
    "stage": pl.String,
    "kind": pl.String,
    "message": pl.String,
}


Progress = Callable[[str, dict], None]


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
    retryable: int = 0  # failed posts a rerun with retry_failed may still get

    @property
    def samples_per_second(self) -> float:
        """Written samples per second of wall time."""
        return self.written / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        """The summary as JSON-ready data."""
        return {
            "out": str(self.out), "selected": self.selected, "written": self.written,
            "failed": self.failed, "retryable": self.retryable, "shards": self.shards,
            "shards_skipped": self.shards_skipped, "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "samples_per_second": round(self.samples_per_second, 2),
        }  # fmt: skip

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
            *(
                [f"{self.retryable} posts failed for a reason that may pass (their source was "
                 "unavailable); rerun the same command with --retry-failed to try them again"]
                if self.retryable else []
            ),
        ]  # fmt: skip


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
    leftovers = [p for p in out.iterdir() if not p.name.endswith(".tmp")] if out.exists() else []
    if leftovers:  # temporary files alone are what a run killed while planning leaves
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


def run_tasks(tasks: list[ShardTask], workers: int | None) -> Iterator[dict]:
    """Run the shard tasks on every core: one process per shard while there are at least as
    many shards as cores, else shard by shard here with images normalised in a pool."""
    workers = max(1, workers or default_workers())
    if workers == 1 or len(tasks) >= workers or not tasks:
        yield from LocalExecutor(workers).run(run_task, tasks)
        return
    with ImagePool(tasks[0].image, workers) as images:
        for task in tasks:
            yield run_task(task, images)


def _has_retryable(stats: dict) -> bool:
    return any(FailureKind(f["kind"]).retryable for f in stats["failures"])


def shards_to_run(shards_dir: Path, numbers: list[int], retry_failed: bool) -> list[int]:
    """The shards a run still has to write: incomplete ones, and with ``retry_failed`` the
    complete ones holding retryable failures (made incomplete first, so a kill while one
    is rewritten never leaves a stats file describing other bytes)."""
    todo = []
    for number in numbers:
        if not shard_complete(shards_dir, number):
            todo.append(number)
        elif retry_failed and _has_retryable(_collect_stats(shards_dir, [number])[0]):
            shard_paths(shards_dir, number)["stats"].unlink()
            todo.append(number)
    return todo


def _notify(progress: Progress | None, event: str, **info) -> None:
    if progress is not None:
        progress(event, info)


def pull(
    config,
    out: str | Path,
    mirror: str | Path | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    hub: HubOptions | None = None,
    retry_failed: bool = False,
) -> PullSummary:
    """Run a pull into ``out`` from a local ``mirror``, or from the Hub when it is None.

    A rerun of the same config on the same ``out`` continues the saved plan, skipping
    shards that are complete; with ``retry_failed`` it also rewrites the shards holding
    posts that failed for a retryable reason. A different config on a non-empty ``out``
    raises :class:`OutputConflict` unless ``overwrite``.

    ``progress(event, info)`` hears ``planning``, ``planned`` (selected, shards, todo,
    posts_todo) and ``shard`` (a shard's stats) as they happen.
    """
    start = time.perf_counter()
    out = Path(out)
    hub = hub or HubOptions()
    manifest = load_manifest(config.dataset)
    query = selection_query(config.query, config.ratings)  # fails before any work
    _notify(progress, "planning")
    with metadata_source(manifest, mirror, hub) as source:
        files = [source.metadata_file(m) for m in manifest.metadata]
    metadata = scan_files(files, [m.schema for m in manifest.metadata], config.include_deleted)
    fingerprint = _fingerprint(config, manifest)
    plan_path = out / PLAN_FILE
    if not _prepare_output(out, fingerprint, overwrite):
        write_plan(metadata, query, plan_path, fingerprint, config.shard_size,
                   manifest.images[0].shards, config.caption, config.tag_table)  # fmt: skip
    shards_dir = out / SHARDS_DIR
    sizes = shard_sizes(plan_path)
    numbers = sorted(sizes)
    todo = shards_to_run(shards_dir, numbers, retry_failed)
    _notify(progress, "planned", selected=sum(sizes.values()), shards=len(numbers),
            todo=len(todo), posts_todo=sum(sizes[n] for n in todo))  # fmt: skip
    if mirror is not None:
        spec = SourceSpec(manifest.source_file, mirror=str(Path(mirror).resolve()))
    else:
        if todo:
            require_reachable(hub.resolved_endpoint(), "to fetch images")
        whole = whole_shards(metadata, plan_path, manifest.images[0].shards,
                             hub.whole_shard_share)  # fmt: skip
        spec = SourceSpec(manifest.source_file, hub=hub, whole_shards=whole)
    tasks = [
        ShardTask(n, str(plan_path), str(shards_dir), spec, config.image, config.buckets)
        for n in todo
    ]
    janitor = None
    if mirror is None and hub.delete_shards_after_use and spec.whole_shards:
        janitor = ShardJanitor(HubSource(manifest, hub), plan_path, todo, spec.whole_shards)
    for stats in run_tasks(tasks, workers):
        if janitor is not None:
            janitor.task_done(int(stats["shard"]))
        _notify(progress, "shard", **stats)
    complete = [n for n in numbers if shard_complete(shards_dir, n)]
    stats = _collect_stats(shards_dir, complete)
    document = _write_results(out, manifest, fingerprint, stats)
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
        retryable=sum(FailureKind(f["kind"]).retryable for s in stats for f in s["failures"]),
    )
