"""``pull``: metadata -> query -> plan -> executor -> tasks -> shards, then the run's
failures and manifest, once, on the driver."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from e6ingest.captions import CaptionSpec

import polars as pl

from e6ingest.cache import cache_dir
from e6ingest.config import ConfigError, PullConfig, parse_ratings
from e6ingest.core import check_plain_fields, kill_point
from e6ingest.manifests import DatasetManifest, load_manifest
from e6ingest.metadata import rows_without_id, scan_files
from e6ingest.metadata.values import unreadable_values
from e6ingest.outdir.lock import OutputLock
from e6ingest.pipeline.budget import default_budget_bytes
from e6ingest.pipeline.context import WorkerContext, enter_context
from e6ingest.pipeline.events import (
    Event,
    IndexBuilt,
    Planned,
    PlanningStarted,
    PostsDone,
    Progress,
    ShardDone,
    Warned,
)
from e6ingest.pipeline.executor import Executor, LocalExecutor
from e6ingest.pipeline.output import (
    changed_metadata,
    make_output_folder,
    metadata_footprint,
    prepare_output,
    shards_to_run,
)
from e6ingest.pipeline.plan import PlanRequest, write_plan
from e6ingest.pipeline.planfile import (
    heaviest_last_first,
    plan_commits,
    plan_id,
    plan_rejected,
    run_end,
    shard_costs,
    shard_sizes,
)
from e6ingest.pipeline.results import PullSummary, finalise
from e6ingest.pipeline.sourcing import (
    CaptionTables,
    ShardJanitor,
    caption_tables,
    check_implications,
    discard_source_shard,
    metadata_source,
    pin_commits,
    whole_shards,
)
from e6ingest.pipeline.task import ShardTask, run_task
from e6ingest.query import Query, selection_query
from e6ingest.query.index import TagIndex, built_index, open_index
from e6ingest.query.vocabulary import metadata_warnings
from e6ingest.shards import PLAN_FILE, SHARDS_DIR, shard_complete
from e6ingest.shards.manifest import FORMAT_VERSION
from e6ingest.shards.stats import FailureRecord
from e6ingest.shards.writer import read_stats
from e6ingest.sources import HubOptions, SourceSpec
from e6ingest.sources.retry import require_reachable


class RunInterrupted(KeyboardInterrupt):
    """A pull stopped by Ctrl-C; ``detail`` says what the next run of it has left to do."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


def _fingerprint(config: PullConfig, manifest: DatasetManifest) -> dict[str, Any]:
    """What decides a run's output, in the JSON form it is saved in."""
    document = {
        "format_version": FORMAT_VERSION,
        "dataset": manifest.name,
        "config": config.to_dict(),
    }
    saved: dict[str, Any] = json.loads(json.dumps(document))
    return saved


def _notify(progress: Progress | None, event: Event) -> None:
    if progress is not None:
        progress(event)


CAPTION_WINDOW = 75  # the tokens SDXL trainers read of a caption (77 with start and end)


def caption_window_notes(plan_path: Path, spec: CaptionSpec) -> list[str]:
    """A note when the plan's captions overrun SDXL's 75-token window (trainers cut them
    silently) and no budget was asked for, with the flags that fit them."""
    if spec.max_tokens or not plan_path.is_file():
        return []
    from e6ingest.captions.tokens import STATS_SAMPLE, token_stats

    captions = pl.read_parquet(plan_path, columns=["caption"])["caption"]
    step = max(1, len(captions) // STATS_SAMPLE)
    stats = token_stats(captions.gather_every(step).to_list())
    share = stats.get(f"over_{CAPTION_WINDOW}", 0)
    if share < 0.1:
        return []
    over = f"{share:.0%} over {CAPTION_WINDOW}"
    cut = "SDXL trainers read 75 and cut the rest silently"
    return [f"captions: median {stats['median']} CLIP tokens, {over}: {cut}; {_window_fixes(spec)}"]


def _window_fixes(spec: CaptionSpec) -> str:
    """The flags that fit captions to the window, for a run that has ``spec``'s variants or
    none."""
    fits = "--max-tokens 75 fits them"
    if not spec.variants:
        return f"{fits}, --variants adds shorter ones (docs/CAPTIONS.md)"
    names = ", ".join(name for name, _ in spec.variant_pairs)
    if spec.variant_lines:
        where = f"{{key}}.txt holds the variants ({names}) one per line after this caption"
    else:
        where = (f"the variants ({names}) are in {{key}}.json only; --variant-lines writes "
                 "them to {key}.txt as well, one per line")  # fmt: skip
    return f"{fits} (the default caption); {where} (docs/TRAINERS.md)"


MOST_WORKERS = 65_536  # processes a run may ask for (the system counts them as C ints)


@dataclass(frozen=True)
class RunOptions:
    """How a pull runs (nothing here changes what it writes)."""

    workers: int | None = None
    overwrite: bool = False
    retry_failed: bool = False
    memory_budget: int | None = None
    allow_empty: bool = False
    executor: Executor | None = None
    index: bool | None = None  # True: build the tag index; None: use one if built; False: scan

    def __post_init__(self) -> None:
        try:
            check_plain_fields(self)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.workers is not None and not 1 <= self.workers <= MOST_WORKERS:
            raise ConfigError(f"--workers must be within 1..{MOST_WORKERS:,}, not {self.workers:,}")
        if self.memory_budget is not None and self.memory_budget < 1:
            raise ConfigError(f"--memory-budget must be positive, not {self.memory_budget}")


def pull(
    config: PullConfig,
    out: str | Path,
    mirror: str | Path | None = None,
    *,
    hub: HubOptions | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> PullSummary:
    """Pull the posts ``config`` selects into the output folder ``out``: from a local
    ``mirror`` (a folder laid out as the Hub: ``owner/name/path``), or from the Hub when it
    is None. Returns what the run did (:class:`PullSummary`).

    >>> from e6ingest import make_config, pull
    >>> summary = pull(make_config({"rating": "e,q,s", "sample": 1000}), "out", "mirror")

    A rerun of the same config on the same ``out`` continues the saved plan, skipping
    shards that are complete. A different config on ``out`` raises
    :class:`OutputConflict` unless ``overwrite``; a folder holding files e6ingest did not
    write is refused. One run holds ``out`` at a time (``.e6ingest.lock``).

    ``demo=True`` reads the built-in demo (built once and cached) instead of ``mirror``.
    ``options`` (:class:`RunOptions`): ``workers`` processes (default: every core) run the
    shard tasks, or ``executor`` (e.g. a Ray cluster); ``overwrite``; ``retry_failed``
    rewrites the shards holding posts that failed for a retryable reason;
    ``memory_budget`` bounds the bytes images being decoded may take at once on this
    machine (default: half of its memory); an empty selection raises
    :class:`EmptySelection` unless ``allow_empty``. ``hub``: how the Hub is reached.
    ``progress(event)`` hears the run's events (:mod:`.events`) as they happen:
    ``PlanningStarted``, ``Warned``, ``IndexBuilt``, ``Planned``, ``PostsDone`` (as posts
    finish) and ``ShardDone``.
    """
    if options.pop("demo", False):
        from e6ingest.demo import demo_mirror

        mirror = demo_mirror()
    run = _Run(config, Path(out), mirror, hub or HubOptions(), RunOptions(**options), progress)
    return run()


@dataclass
class _Run:
    config: PullConfig
    out: Path
    mirror: str | Path | None
    hub: HubOptions
    options: RunOptions
    progress: Progress | None
    start: float = field(default_factory=time.perf_counter)
    lock: OutputLock | None = None

    def notify(self, event: Event) -> None:
        _notify(self.progress, event)

    def warn(self, message: str) -> None:
        self.notify(Warned(message))

    def __call__(self) -> PullSummary:
        config = self.config
        manifest = load_manifest(config.dataset)
        parse_ratings(config.ratings, manifest.site)  # a rating the site lacks: refused
        query = selection_query(config.query, config.ratings, manifest.site,
                                config.include_deleted)  # fmt: skip
        check_implications(config.caption, manifest)  # before the output folder is made
        make_output_folder(self.out)
        with OutputLock(self.out) as lock:
            self.lock = lock
            fingerprint = _fingerprint(config, manifest)
            continued = prepare_output(self.out, fingerprint, self.options.overwrite)
            self.notify(PlanningStarted())
            commits = plan_commits(self.out / PLAN_FILE) if continued else None
            if commits is None:
                commits = pin_commits(manifest, self.mirror, self.hub, dict(config.revisions))
            if self.mirror is None:
                manifest = manifest.pinned(commits)
            with metadata_source(manifest, self.mirror, self.hub) as source:
                files = [source.metadata_file(m) for m in manifest.metadata]
                tables = caption_tables(config.caption, config.tag_table, manifest, source,
                                        files, self.warn)  # fmt: skip
                tables = replace(tables, index=self.options.index)
            schemas = [m.schema for m in manifest.metadata]
            metadata = scan_files(files, schemas, config.include_deleted)
            if continued:
                for warning in changed_metadata(self.out / PLAN_FILE, manifest, files):
                    self.warn(warning)
            else:
                index = self.tag_index(files, schemas)
                if index is not None:
                    query = query.with_index(index)
                self.plan(manifest, query, files, metadata, fingerprint, commits, tables)
            try:
                summary = self.execute(manifest, metadata)
            except KeyboardInterrupt:
                raise RunInterrupted(self.left_to_do()) from None
            rejected = [FailureRecord(**r) for r in plan_rejected(self.out / PLAN_FILE)]
            complete = [n for n in sorted(shard_sizes(self.out / PLAN_FILE))
                        if shard_complete(self.out / SHARDS_DIR, n)]  # fmt: skip
            stats = (s for n in complete if (s := read_stats(self.out / SHARDS_DIR, n)) is not None)
            lock.check()
            plan = plan_id(self.out / PLAN_FILE)
            _, totals = finalise(self.out, manifest, fingerprint, commits, rejected, stats, plan)
        totals.shards, totals.shards_skipped = summary.shards, summary.shards_skipped
        totals.written_now = summary.written_now
        totals.notes += caption_window_notes(self.out / PLAN_FILE, config.caption)
        totals.seconds = time.perf_counter() - self.start
        return totals

    def left_to_do(self) -> str:
        """What an interrupted run leaves for the next: complete shards, posts to redo."""
        sizes = shard_sizes(self.out / PLAN_FILE)
        done = [n for n in sizes if shard_complete(self.out / SHARDS_DIR, n)]
        redo = sum(size for n, size in sizes.items() if n not in done)
        return (f"{len(done):,} of {len(sizes):,} shards complete; the next run writes the "
                f"other {redo:,} posts")  # fmt: skip

    def tag_index(self, files: list[Path], schemas: Sequence[str | None]) -> TagIndex | None:
        """The tag index planning answers from: built (its build reported as ``index``
        events) with ``index=True``, one already built by default (planning scans without
        one: a pull's plan is one question), none with ``index=False``."""

        def report(done: int, total: int) -> None:
            self.notify(IndexBuilt(done, total))

        root = cache_dir() / "index"
        if self.options.index is True:
            return open_index(files, schemas, root, report)
        return built_index(files, schemas, root) if self.options.index is None else None

    def plan(
        self,
        manifest: DatasetManifest,
        query: Query,
        files: list[Path],
        metadata: pl.LazyFrame,
        fingerprint: dict[str, Any],
        commits: dict[str, str],
        tables: CaptionTables,
    ) -> None:
        """Check the query against the dataset's tags and write the plan."""
        schemas = [m.schema for m in manifest.metadata]
        for warning in metadata_warnings(query, files, schemas, self.config.include_deleted):
            self.warn(warning)
        for warning in (w for path in files for w in unreadable_values(path, manifest.site)):
            self.warn(warning)
        for warning in self.config.buckets.warnings():
            self.warn(warning)
        rejected = [
            asdict(FailureRecord(None, manifest.site, "metadata", "invalid", message))
            for path, entry in zip(files, manifest.metadata, strict=True)
            for message in rows_without_id(path, f"{entry.repo}/{entry.path}")
        ]
        config = self.config
        request = PlanRequest(query, config.shard_size, manifest.images[0].shards,
                              config.caption, tables.tag_table, config.subset,
                              self.options.allow_empty, rarity=tables.rarity(),
                              implied=tables.implied(), threads=self.options.workers,
                              drop_duplicates=config.drop_duplicates)  # fmt: skip
        saved = {"fingerprint": fingerprint, "commits": commits, "rejected": rejected,
                 "metadata": metadata_footprint(manifest, files)}  # fmt: skip
        planned = write_plan(metadata, request, self.out / PLAN_FILE, saved)
        subset = config.subset
        if planned < (asked := subset.sample or subset.limit):  # a smoke test gets fewer
            flag = "--sample" if subset.sample else "--limit"
            self.warn(f"{flag} {asked:,}: the selection holds only {planned:,} posts; all "
                      "of them are planned")  # fmt: skip
        kill_point("planned")

    def execute(self, manifest: DatasetManifest, metadata: pl.LazyFrame) -> PullSummary:
        """Write the planned shards still to write; the counts of this run's work."""
        plan_path, shards_dir = self.out / PLAN_FILE, self.out / SHARDS_DIR
        lock = self.lock
        if lock is None:
            raise RuntimeError("execute runs with the output folder locked")
        sizes = shard_sizes(plan_path)
        numbers = sorted(sizes)
        hub, mirror = self.hub, self.mirror
        if mirror is None and numbers:  # before anything is decided from the shards on disk
            require_reachable(hub.resolved_endpoint(), "to fetch images")
        todo = shards_to_run(shards_dir, numbers, self.options.retry_failed)
        self.notify(Planned(sum(sizes.values()), len(numbers), len(todo),
                            sum(sizes[n] for n in todo)))  # fmt: skip
        if mirror is not None:
            spec = SourceSpec(manifest, mirror=str(Path(mirror).resolve()))
        else:
            whole = whole_shards(metadata, plan_path, manifest.images[0].shards,
                                 hub.whole_shard_share)  # fmt: skip
            spec = SourceSpec(manifest, hub=hub, whole_shards=whole)
        plan = plan_id(plan_path)
        executor = self.options.executor or LocalExecutor(self.options.workers)
        image = self.config.image
        at_once = executor.parallel_tasks()
        end = run_end(todo, at_once)
        costs = shard_costs(plan_path, image.max_pixels, image.pass_through, end)
        order = heaviest_last_first(todo, costs, at_once)
        tasks = [ShardTask(n, str(self.out), spec, image, self.config.buckets, plan)
                 for n in order]  # fmt: skip
        janitor = None
        if mirror is None and hub.delete_shards_after_use and spec.whole_shards:
            janitor = ShardJanitor(
                plan_path, todo, spec.whole_shards, manifest.images[0].shards,
                lambda shard: executor.on_every_node(discard_source_shard, manifest, hub, shard),
            )  # fmt: skip
        summary = PullSummary(self.out, shards=len(numbers),
                              shards_skipped=len(numbers) - len(todo))  # fmt: skip
        budget = executor.memory_budget(self.options.memory_budget or default_budget_bytes())
        with contextlib.ExitStack() as stack:
            queue = None
            if self.progress is not None:

                def receive(written: int, failed: int) -> None:
                    self.notify(PostsDone(written, failed))

                queue = stack.enter_context(executor.progress_channel(receive))
            context = WorkerContext(budget, queue)
            for stats in executor.run(run_task, tasks, enter_context, context):
                lock.check()  # still this run's folder (no flock: its lock file is the lock)
                if janitor is not None:
                    janitor.task_done(stats.number)
                if stats.kept:
                    self.warn(
                        f"shard {stats.shard} kept as it was: posts it holds could not be "
                        "fetched again (their source is unavailable); nothing was lost"
                    )
                else:
                    summary.written_now += stats.written
                if queue is None:  # no posts as they went: the shard's, now
                    self.notify(PostsDone(stats.written, stats.selected - stats.written))
                self.notify(ShardDone(stats))
        return summary
