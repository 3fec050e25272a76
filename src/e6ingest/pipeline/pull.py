"""``pull``: metadata -> query -> plan -> tasks -> shards, failures and the run manifest."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from e6ingest import __version__
from e6ingest.core import atomic_path, is_temp_name, write_atomic
from e6ingest.manifests import DatasetManifest, load_manifest
from e6ingest.metadata import rows_without_id, scan_files
from e6ingest.pipeline.budget import MemoryBudget, default_budget_bytes, use_budget
from e6ingest.pipeline.executor import LocalExecutor, default_workers
from e6ingest.pipeline.imagepool import ImagePool
from e6ingest.pipeline.plan import (
    plan_commits,
    plan_fingerprint,
    plan_rejected,
    shard_sizes,
    write_plan,
)
from e6ingest.pipeline.sourcing import (
    ShardJanitor,
    metadata_source,
    pin_commits,
    whole_shards,
)
from e6ingest.pipeline.task import ShardTask, run_task
from e6ingest.query import selection_query
from e6ingest.shards import (
    FAILURES_FILE,
    MANIFEST_FILE,
    PLAN_FILE,
    SHARDS_DIR,
    shard_complete,
)
from e6ingest.shards.folder import (
    OutputContents,
    OutputLock,
    foreign_error,
    remove_ours,
    scan_output,
)
from e6ingest.shards.layout import OutputError
from e6ingest.shards.writer import read_stats
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


def _differences(saved: dict, new: dict, prefix: str = "") -> list[str]:
    """The option names whose values differ between two configs (nested with dots)."""
    names = []
    for key in sorted(set(saved) | set(new)):
        a, b = saved.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            names += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            names.append(f"{prefix}{key} ({a!r} -> {b!r})")
    return names


def prepare_output(out: Path, fingerprint: dict, overwrite: bool) -> bool:
    """Make ``out`` ready for a run (its lock held); True when a saved plan of the same
    config is to be continued. Only files e6ingest wrote are ever removed: a folder
    holding anything else is refused, naming one such file."""
    contents = scan_output(out)
    if contents.foreign:
        raise foreign_error(contents)
    saved = plan_fingerprint(out / PLAN_FILE)
    if saved == fingerprint:
        remove_ours(OutputContents(out, [p for p in contents.ours if is_temp_name(p.name)]))
        return True
    if contents.has_run and not overwrite:
        if saved is None:
            raise OutputConflict(
                f"{out} holds an earlier run whose plan is missing; "
                "use another --out, or --overwrite to replace that run"
            )
        changed = _differences(saved.get("config", {}), fingerprint["config"])
        if saved.get("dataset") != fingerprint["dataset"]:
            changed.insert(0, f"dataset ({saved.get('dataset')!r} -> {fingerprint['dataset']!r})")
        raise OutputConflict(
            f"{out} holds a run with a different configuration ({'; '.join(changed[:5])}"
            f"{' ...' if len(changed) > 5 else ''}); use another --out, or --overwrite to "
            "replace that run"
        )  # fmt: skip
    remove_ours(contents)
    return False


def _collect_stats(shards_dir: Path, numbers: list[int]) -> list[dict]:
    return [read_stats(shards_dir, n) for n in numbers]


def _write_results(
    out: Path, manifest: DatasetManifest, fingerprint: dict, stats: list[dict], commits: dict
):
    rejected = plan_rejected(out / PLAN_FILE)
    failures = [*rejected, *(f for s in stats for f in s["failures"])]
    frame = pl.DataFrame(failures, schema=FAILURE_SCHEMA)
    with atomic_path(out / FAILURES_FILE) as tmp:
        frame.write_parquet(tmp)
    outcomes: Counter[str] = Counter(f["kind"] for f in rejected)
    for s in stats:
        outcomes.update(s["outcomes"])
    document = {
        "format_version": FORMAT_VERSION,
        "e6ingest_version": __version__,
        "dataset": {
            "name": manifest.name,
            "site": manifest.site,
            "repos": dict(sorted(commits.items())),
        },
        "config": fingerprint["config"],
        "totals": {
            "selected": sum(s["selected"] for s in stats) + len(rejected),
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


def run_tasks(
    tasks: list[ShardTask], workers: int | None, budget: MemoryBudget | None = None
) -> Iterator[dict]:
    """Run the shard tasks on every core: one process per shard while there are at least as
    many shards as cores, else shard by shard here with images normalised in a pool. Image
    decoding in every process shares ``budget`` (default: half of this machine's memory)."""
    workers = max(1, workers or default_workers())
    budget = budget or MemoryBudget(default_budget_bytes())
    if workers == 1 or len(tasks) >= workers or not tasks:
        yield from LocalExecutor(workers, use_budget, (budget,)).run(run_task, tasks)
        return
    with ImagePool(tasks[0].image, workers, budget=budget) as images:
        for task in tasks:
            yield run_task(task, images)


def _has_retryable(stats: dict) -> bool:
    return any(FailureKind(f["kind"]).retryable for f in stats["failures"])


def shards_to_run(shards_dir: Path, numbers: list[int], retry_failed: bool) -> list[int]:
    """The shards a run still has to write: those not complete (files missing, or a tar
    whose size or sha256 is not what its stats say), and with ``retry_failed`` the complete
    ones holding retryable failures. Nothing is changed here: a shard being rewritten
    loses its stats only when its new tar is about to replace the old one."""

    def redo(number: int) -> bool:
        if not shard_complete(shards_dir, number, check_bytes=True):
            return True
        return retry_failed and _has_retryable(read_stats(shards_dir, number))

    return [n for n in numbers if redo(n)]


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
    memory_budget: int | None = None,
) -> PullSummary:
    """Run a pull into ``out`` from a local ``mirror``, or from the Hub when it is None.

    A rerun of the same config on the same ``out`` continues the saved plan, skipping
    shards that are complete; with ``retry_failed`` it also rewrites the shards holding
    posts that failed for a retryable reason. A different config on a non-empty ``out``
    raises :class:`OutputConflict` unless ``overwrite``; a folder holding files e6ingest
    did not write is refused. One run holds ``out`` at a time (``.e6ingest.lock``).
    ``memory_budget`` bounds the bytes images being decoded may take at once, over every
    worker (default: half of this machine's memory).

    ``progress(event, info)`` hears ``planning``, ``planned`` (selected, shards, todo,
    posts_todo) and ``shard`` (a shard's stats) as they happen.
    """
    start = time.perf_counter()
    out = Path(out)
    hub = hub or HubOptions()
    manifest = load_manifest(config.dataset)
    query = selection_query(config.query, config.ratings)  # fails before any work
    make_output_folder(out)
    with OutputLock(out):
        budget = MemoryBudget(memory_budget or default_budget_bytes())
        return _pull_locked(config, manifest, query, out, mirror, workers, overwrite,
                            progress, hub, retry_failed, start, budget)  # fmt: skip


def make_output_folder(out: Path) -> None:
    """Create ``out`` (and its parents) or say why it cannot be an output folder."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"--out {out}: cannot create the folder: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"--out {out} is not writable")


def _pull_locked(config, manifest, query, out, mirror, workers, overwrite, progress, hub,
                 retry_failed, start, budget) -> PullSummary:  # fmt: skip
    fingerprint = _fingerprint(config, manifest)
    plan_path = out / PLAN_FILE
    continued = prepare_output(out, fingerprint, overwrite)
    _notify(progress, "planning")
    commits = plan_commits(plan_path) if continued else None
    if commits is None:
        commits = pin_commits(manifest, mirror, hub, dict(config.revisions))
    if mirror is None:
        manifest = manifest.pinned(commits)
    with metadata_source(manifest, mirror, hub) as source:
        files = [source.metadata_file(m) for m in manifest.metadata]
    metadata = scan_files(files, [m.schema for m in manifest.metadata], config.include_deleted)
    if not continued:
        rejected = [
            {"id": None, "site": manifest.site, "stage": "metadata", "kind": "invalid",
             "message": message}
            for path, entry in zip(files, manifest.metadata, strict=True)
            for message in rows_without_id(path, f"{entry.repo}/{entry.path}")
        ]  # fmt: skip
        write_plan(metadata, query, plan_path, fingerprint, config.shard_size,
                   manifest.images[0].shards, config.caption, config.tag_table,
                   commits=commits, rejected=rejected)  # fmt: skip
    shards_dir = out / SHARDS_DIR
    sizes = shard_sizes(plan_path)
    numbers = sorted(sizes)
    if mirror is None and numbers:  # before anything is decided from the shards on disk
        require_reachable(hub.resolved_endpoint(), "to fetch images")
    todo = shards_to_run(shards_dir, numbers, retry_failed)
    _notify(progress, "planned", selected=sum(sizes.values()), shards=len(numbers),
            todo=len(todo), posts_todo=sum(sizes[n] for n in todo))  # fmt: skip
    if mirror is not None:
        spec = SourceSpec(manifest, mirror=str(Path(mirror).resolve()))
    else:
        whole = whole_shards(metadata, plan_path, manifest.images[0].shards,
                             hub.whole_shard_share)  # fmt: skip
        spec = SourceSpec(manifest, hub=hub, whole_shards=whole)
    tasks = [
        ShardTask(n, str(plan_path), str(shards_dir), spec, config.image, config.buckets)
        for n in todo
    ]
    janitor = None
    if mirror is None and hub.delete_shards_after_use and spec.whole_shards:
        janitor = ShardJanitor(HubSource(manifest, hub), plan_path, todo, spec.whole_shards)
    for stats in run_tasks(tasks, workers, budget):
        if janitor is not None:
            janitor.task_done(int(stats["shard"]))
        _notify(progress, "shard", **stats)
    complete = [n for n in numbers if shard_complete(shards_dir, n)]
    stats = _collect_stats(shards_dir, complete)
    document = _write_results(out, manifest, fingerprint, stats, commits)
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
