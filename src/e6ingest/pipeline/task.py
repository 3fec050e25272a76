"""One task = one output shard: fetch, normalise, caption and write its samples.

A task is a plain, picklable description carrying what it needs by value (the source, the
image and bucket policy) and the output root; ``run_task`` can run in any process that sees
the output root, and returns the shard's typed stats.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from e6ingest.buckets import BucketSpec, choose_bucket, fit_to_bucket
from e6ingest.imaging import ImagePolicy, ImageRecord
from e6ingest.metadata import TAG_CATEGORIES
from e6ingest.pipeline.budget import current_budget
from e6ingest.pipeline.context import task_cores
from e6ingest.pipeline.imagepool import ImagePool, Normalized, normalize_all
from e6ingest.pipeline.planfile import DUPLICATE_OF, plan_id, shard_rows
from e6ingest.pipeline.progress import count_post, flush_posts
from e6ingest.shards import PLAN_FILE, SHARDS_DIR, Sample, ShardWriter, sample_key, shard_complete
from e6ingest.shards.layout import OutputError
from e6ingest.shards.record import SampleRecord
from e6ingest.shards.stats import WRITTEN, FailureRecord, ShardCounts, ShardStats
from e6ingest.shards.writer import read_stats
from e6ingest.sources import FailureKind, Fetched, PostFailure, SourceSpec, open_source

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "gif", "webp", "avif", "bmp", "tif", "tiff"})

Row = dict[str, Any]  # one planned post: the plan's columns by name


@dataclass(frozen=True)
class ShardTask:
    """Everything one worker needs to produce output shard ``number``."""

    number: int
    out: str  # the output root (its plan and shards folder)
    source: SourceSpec
    image: ImagePolicy
    buckets: BucketSpec
    plan: str = ""  # the plan the driver made (``plan.plan_id``): checked before writing

    @property
    def plan_path(self) -> Path:
        """The run's plan."""
        return Path(self.out) / PLAN_FILE

    @property
    def shards_dir(self) -> Path:
        """Where the shard is written."""
        return Path(self.out) / SHARDS_DIR


def _tags_by_category(row: Row) -> dict[str, list[str]]:
    """Every category, empty ones too: readers that declare a schema find each key."""
    return {c: list(row[f"tags_{c}"] or []) for c in TAG_CATEGORIES}


def build_sample(row: Row, webp: bytes, record: ImageRecord, task: ShardTask) -> Sample:
    """The output sample of one post: image, caption text and JSON record."""
    tags = _tags_by_category(row)
    bucket = choose_bucket(record.width, record.height, task.buckets)
    fit = fit_to_bucket(record.width, record.height, bucket)
    meta: SampleRecord = {
        "id": row["id"],
        "site": row["site"],
        "key": sample_key(row["site"], row["id"]),
        "rating": row["rating"],
        "score": row["score"],
        "created_at": row["created_at"].isoformat() if row["created_at"] else None,
        "tags": tags,
        "caption": {
            "text": row["caption"],
            "tags": row["caption_tags"],
            "nl": list(row["caption_nl"] or []),
        },
        "source_format": record.source_format,
        "original_size": [record.source_width, record.source_height],
        "size": [record.width, record.height],
        # The LAION / img2dataset names, read by diffusers' webdataset scripts.
        "width": record.width,
        "height": record.height,
        "original_width": record.source_width,
        "original_height": record.source_height,
        "reencoded": record.reencoded,
        "bucket": list(bucket),
        # What sd-scripts' latent cache records for the image in its bucket: the size it is
        # read at, the size it is resized to before the center crop, and that crop.
        "latent": {
            "original_size": [record.width, record.height],
            "resized_size": list(fit.resized),
            "crop_ltrb": list(fit.crop_ltrb),
        },
    }
    if row.get("caption_variants"):  # every variant's caption by name, "default" first
        meta["captions"] = dict(row["caption_variants"])
    return Sample(meta["key"], webp, row.get("caption_lines") or row["caption"], meta)


def check_extension(row: Row) -> None:
    """Refuse posts whose file is not an image (videos, flash): they have no WebP."""
    ext = (row["file_ext"] or "").lower()
    if ext not in IMAGE_EXTENSIONS:
        raise PostFailure(
            FailureKind.UNSUPPORTED, f"post {row['id']} is a {ext or 'unknown'} file", "select"
        )


def check_not_duplicate(row: Row) -> None:
    """Refuse a post the plan marked as a duplicate (``--drop-duplicates``: the same file
    as a post of lower id, which is kept)."""
    kept = row.get(DUPLICATE_OF)
    if kept is not None:
        raise PostFailure(FailureKind.DUPLICATE,
                          f"post {row['id']} is the same file (md5) as post {kept}, which is kept",
                          "select")  # fmt: skip


# What each planned post goes through before its image is fetched, in order: each step
# raises PostFailure to leave the post out (recorded with its reason). A stage that decides
# from the plan's row alone joins here.
ROW_STEPS = (check_extension, check_not_duplicate)


def make_sample(
    row: Row, fetched: Fetched, normalized: Normalized | PostFailure, task: ShardTask
) -> Sample:
    """One fetched and normalised post as a sample; raises PostFailure naming the file."""
    if isinstance(normalized, PostFailure):
        raise PostFailure(normalized.kind, f"{fetched.location}: {normalized.message}", "image")
    return build_sample(row, *normalized, task)


def run_task(task: ShardTask, images: ImagePool | None = None) -> ShardStats:
    """Produce output shard ``task.number`` and return its stats (as written).

    Images are normalised through ``images`` when given, else in a pool of its own when the
    executor offers this task several cores (:func:`~.context.task_cores`), else here.
    Each finished post is counted for progress as it is done.

    Posts whose source was unavailable (after retries) are recorded as failures of the
    retryable kind; ``pull(..., retry_failed=True)`` rewrites the shards that hold some.
    """
    if images is None and task_cores() > 1:  # this task has the machine's cores to itself
        with ImagePool(task.image, task_cores(), budget=current_budget()) as pool:
            return run_task(task, pool)
    start = time.perf_counter()
    if task.plan and plan_id(task.plan_path) != task.plan:
        raise OutputError(
            f"{task.plan_path} is not the plan this run made (another run replaced it); "
            "stopped so that one output never mixes two runs"
        )
    rows = shard_rows(task.plan_path, task.number).to_dicts()
    writer = ShardWriter(task.shards_dir, task.number)
    counts = ShardCounts(selected=len(rows))

    def fail(row: Row, exc: PostFailure) -> None:
        counts.fail(FailureRecord.of(row["id"], row["site"], exc))
        count_post(written=False)

    try:
        with contextlib.closing(_samples(task, _fetchable(rows, fail), images)) as samples:
            for row, made in samples:
                if isinstance(made, PostFailure):
                    fail(row, made)
                    continue
                sample, record = made
                writer.add(sample)
                counts.outcomes[WRITTEN] += 1
                counts.image_seconds += record.seconds
                counts.reencoded += sample.meta["reencoded"]
                count_post(written=True)
    except BaseException:
        writer.abort()
        raise
    previous = _replaced(task)
    if previous is not None and _loses_posts(previous, counts):
        writer.abort()  # the source failed again: the shard stays as it was
        flush_posts()
        return replace(previous, kept=True)
    stats = writer.finish(counts, time.perf_counter() - start, task.plan)
    flush_posts()
    return stats


def _fetchable(rows: list[Row], fail: Callable[[Row, PostFailure], None]) -> list[Row]:
    """The rows that pass every step of ``ROW_STEPS``; each other one is given to ``fail``."""
    fetchable = []
    for row in rows:
        try:
            for step in ROW_STEPS:
                step(row)
            fetchable.append(row)
        except PostFailure as exc:
            fail(row, exc)
    return fetchable


def _samples(
    task: ShardTask, rows: list[Row], images: ImagePool | None
) -> Generator[tuple[Row, tuple[Sample, ImageRecord] | PostFailure], None, None]:
    """Each of ``rows`` in turn with its sample and image record, or the failure that
    left it out: fetched from the task's source and normalised (through ``images`` when
    given) as the rows come."""
    with open_source(task.source) as source:
        fetched_all = source.fetch_many(row["id"] for row in rows)
        taken: deque[Fetched | PostFailure] = deque()

        def image_bytes() -> Iterator[bytes | None]:
            for fetched in fetched_all:
                taken.append(fetched)
                yield fetched.data if isinstance(fetched, Fetched) else None

        normalized_all = normalize_all(image_bytes(), task.image, images)
        for row, normalized in zip(rows, normalized_all, strict=True):
            fetched = taken.popleft()
            try:
                if isinstance(fetched, PostFailure):
                    raise fetched
                if normalized is None:  # pragma: no cover - bytes were given
                    raise RuntimeError(f"post {row['id']}: no image result")
                sample = make_sample(row, fetched, normalized, task)
                assert not isinstance(normalized, PostFailure)  # make_sample raised it
            except PostFailure as exc:
                yield row, exc
                continue
            yield row, (sample, normalized[1])


def _replaced(task: ShardTask) -> ShardStats | None:
    """The stats of the complete shard a task is about to replace (a rewrite for
    ``--retry-failed``), or None."""
    if not shard_complete(task.shards_dir, task.number, check_bytes=True):
        return None
    return read_stats(task.shards_dir, task.number)


def _loses_posts(previous: ShardStats, counts: ShardCounts) -> bool:
    """Whether a rewrite would lose a post the shard holds for a reason a rerun may fix
    (its source unavailable now): such a shard is never replaced. A post the shard holds
    that now fails as data (corrupt, undecodable...) may go."""
    held = previous.failed_ids
    return any(f.retryable and f.id not in held for f in counts.failures)
