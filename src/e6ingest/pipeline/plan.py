"""The plan: which selected post goes to which output shard, fixed at the start of a run."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from e6ingest.arrays import to_arrow
from e6ingest.captions import CaptionSpec, read_aliases
from e6ingest.captions.session import Captioning
from e6ingest.captions.variants import (
    NLTextsBySpec,
    posts_per_batch,
    variant_thresholds,
    with_variants,
)
from e6ingest.core import atomic_path, temp_path
from e6ingest.metadata import TAG_COLUMNS
from e6ingest.metadata.tagtable import apply_tag_table, read_tag_table
from e6ingest.pipeline.planfile import DUPLICATE_OF
from e6ingest.query import Query, Subset
from e6ingest.query.parse import SINK_COMPRESSION, SINK_ROW_GROUP

PLAN_BATCH_ROWS = 250_000  # captions made at once: about 1 GB (benchmarks/RESULTS.md)
SHARD_SIZE = 1000  # samples per output shard unless asked otherwise
MIN_SHARDS = 32  # ... fewer in small pulls, so they make at least this many shards


def auto_shard_size(posts: int) -> int:
    """Samples per shard when none is asked for: 1000, or fewer so that a small pull still
    makes ``MIN_SHARDS`` shards (enough for 8 GPUs x 4 DataLoader workers to split by shard,
    and an interrupted run redoes little)."""
    return max(1, min(SHARD_SIZE, -(-posts // MIN_SHARDS)))


PLAN_COLUMNS = (
    "id",
    "site",
    "rating",
    *TAG_COLUMNS,
    "width",
    "height",
    "file_ext",
    "score",
    "created_at",
)


def _source_ranges(ids: pl.Series, source_shards: int, batch_rows: int) -> list[tuple[int, int]]:
    """Consecutive ranges [lo, hi) of source shards, each holding about ``batch_rows``
    selected posts (one range when the selection is smaller)."""
    if ids.is_empty():
        return []
    counts = (ids % source_shards).value_counts(name="n").sort(ids.name)
    ranges, lo, rows = [], None, 0
    for shard, n in counts.iter_rows():
        lo = shard if lo is None else lo
        rows += n
        if rows >= batch_rows:
            ranges.append((lo, shard + 1))
            lo, rows = None, 0
    if lo is not None:
        ranges.append((lo, source_shards))
    return ranges


class EmptySelection(ValueError):
    """The query selects no post; the message says which term removed everything."""


@dataclass(frozen=True)
class PlanRequest:
    """What a plan is made of: the query and the part of its selection kept, the output
    shard size, the caption spec and the tags table restoring categories."""

    query: Query
    shard_size: int = 0  # 0: auto_shard_size of the selection
    source_shards: int = 1000
    caption: CaptionSpec = field(default_factory=CaptionSpec)
    tag_table: str = ""
    subset: Subset = field(default_factory=Subset)
    allow_empty: bool = True
    batch_rows: int = PLAN_BATCH_ROWS
    rarity: Mapping[str, pl.DataFrame] | None = None  # per variant: tag -> posts (budgets)
    implied: pl.DataFrame | None = None  # closed implications, for prune_implied
    threads: int | None = None  # captioning threads (default: the cores this process may use)
    drop_duplicates: bool = False  # mark posts whose file (md5) a lower id of the selection has


def duplicates(keys: pl.DataFrame, kept: pl.Series) -> pl.DataFrame:
    """Per post of ``kept`` whose file (``md5``, from ``keys``) another post of ``kept``
    with a lower id has: its ``id`` and ``duplicate_of`` (the lowest such id, kept)."""
    return (
        keys.filter(pl.col("id").is_in(kept.implode()))
        .filter(pl.col("md5").is_not_null() & (pl.col("md5") != ""))
        .with_columns(pl.col("id").min().over("md5").alias(DUPLICATE_OF))
        .filter(pl.col("id") != pl.col(DUPLICATE_OF))
        .select("id", DUPLICATE_OF)
    )


def _plan_part(
    part: pl.DataFrame,
    request: PlanRequest,
    captions: dict[str, Any],
    offset: int,
    duplicates_: pl.DataFrame | None = None,
) -> pl.DataFrame:
    spec = request.caption
    part = part.unique("id", keep="last", maintain_order=True)  # a later row wins
    if duplicates_ is not None:
        part = part.join(duplicates_, on="id", how="left", maintain_order="left")
    part = with_variants(part, spec, NLTextsBySpec(part["id"]), rarity=request.rarity,
                         implied=request.implied, **captions)  # fmt: skip
    return (
        part.sort((pl.col("id") % request.source_shards), pl.col("id"))
        .with_row_index("row", offset)
        .with_columns(
            (pl.col("row") // request.shard_size).cast(pl.Int32).alias("shard"),
            (pl.col("row") % request.shard_size).cast(pl.Int32).alias("position"),
        )
        .drop("row")
    )


def _selected_keys(selection: pl.LazyFrame, request: PlanRequest) -> tuple[pl.DataFrame, pl.Series]:
    """The selection's small columns, and the ids kept."""
    order = request.query.order
    extra = [c for c in request.subset.columns(order) if c not in ("id", "rating", "score")]
    extra += ["md5"] if request.drop_duplicates and "md5" not in extra else []
    # one row per id, and none without: metadata.scan_files
    keys = selection.select("id", "rating", "score", *extra).collect(engine="streaming")
    kept = request.subset.pick(keys, order)["id"] if request.subset else keys["id"]
    return keys, kept


def _select(
    metadata: pl.LazyFrame, request: PlanRequest, selection_file: Path
) -> tuple[pl.DataFrame, pl.Series]:
    """The selection's keys and kept ids (``_selected_keys``), and its rows written to
    ``selection_file``: every selected row, or with a subset (``--sample``, ``--limit``)
    only the kept ones, chosen first from the small columns (a sample of 1,000 posts does
    not copy millions of rows' tags) and then read by id alone (the query chose them; a
    tag query is not run on the tags twice)."""
    columns = (*PLAN_COLUMNS, "md5") if request.drop_duplicates else PLAN_COLUMNS
    if not request.subset:
        request.query.sink(metadata, columns, selection_file)
        return _selected_keys(pl.scan_parquet(selection_file), request)
    keys, kept = _selected_keys(request.query.apply(metadata), request)
    chosen = metadata.filter(pl.col("id").is_in(kept.implode())).select(columns)
    if len(kept) > posts_per_batch(request.batch_rows, request.caption):
        chosen.sink_parquet(selection_file, row_group_size=SINK_ROW_GROUP,
                            compression=SINK_COMPRESSION, engine="streaming")  # fmt: skip
        return keys, kept
    # planned as one part, read whole anyway: the in-memory engine reads rows scattered
    # over the file sooner (the canonical columns made once, not once a row group)
    frame = chosen.collect(engine="in-memory")
    frame.write_parquet(selection_file, row_group_size=SINK_ROW_GROUP, compression=SINK_COMPRESSION)
    return keys, kept


def write_plan(
    metadata: pl.LazyFrame,
    request: PlanRequest,
    path: Path,
    saved: Mapping[str, object] | None = None,
) -> int:
    """Write the plan to ``path`` (atomically, with ``saved`` in its parquet metadata:
    ``fingerprint``, ``commits``, ``rejected``) and return its number of posts: the selected
    posts (the kept part of them with ``--sample`` or ``--limit``), each with its output
    ``shard``, its ``position`` in it and its caption (``caption``, ``caption_tags``,
    ``caption_nl``). An empty selection raises :class:`EmptySelection` (and writes
    nothing) unless ``request.allow_empty``.

    Posts are ordered by source shard (``id % source_shards``) and id, so one output shard
    reads from as few source shards as possible, and the order is the same on every run.
    With a tags table, tag categories are restored first. The selection is streamed to a
    temporary file and planned ``batch_rows`` captions at a time (ranges of source shards;
    fewer posts when each has variants), so
    memory does not grow with the selection; quality percentiles are taken over the whole
    selection (a sample's captions are those of a full run). A post id present in several
    rows is planned once, from the last row.
    """
    selection_file = temp_path(path.with_name("selection.parquet"))
    parts: list[Path] = []
    try:
        with contextlib.ExitStack() as stack, atomic_path(path) as plan_file:
            keys, kept = _select(metadata, request, selection_file)
            empty = pl.read_parquet(selection_file, n_rows=0)  # the columns, for no parts
            if kept.is_empty() and not request.allow_empty:
                raise EmptySelection(
                    f"the selection is empty: {request.query.explain_empty(metadata)} "
                    "(--allow-empty to write an empty output)"
                )
            captions = _shared_captioning(keys, request, stack)
            dropped = duplicates(keys, kept) if request.drop_duplicates else None
            del keys
            if not request.shard_size:
                request = replace(request, shard_size=auto_shard_size(len(kept)))
            posts = posts_per_batch(request.batch_rows, request.caption)
            ranges = _source_ranges(kept, request.source_shards, posts)
            if request.subset and len(ranges) == 1:  # the file holds only kept rows
                parts = [selection_file]
            else:
                only = kept if request.subset else None
                parts = partition(selection_file, ranges, request.source_shards, only)
                selection_file.unlink()
            pa.default_memory_pool().release_unused()  # what reading the selection kept
            planned = _PlanParts(request, captions, dropped, empty)
            return planned.write(parts, plan_file, saved or {})
    finally:
        for leftover in (selection_file, *parts):
            leftover.unlink(missing_ok=True)


def _shared_captioning(
    keys: pl.DataFrame, request: PlanRequest, stack: contextlib.ExitStack
) -> dict[str, Any]:
    """What every part's captions share: the quality thresholds over the whole selection
    (``keys``), the tag aliases and the captioning threads (closed with ``stack``)."""
    spec = request.caption
    return {
        "thresholds": variant_thresholds(keys, spec),
        "aliases": read_aliases(spec.aliases) if spec.aliases else None,
        "captioning": stack.enter_context(Captioning(request.threads)),
    }


@dataclass
class _PlanParts:
    """The plan written from the selection's part files, one after the other: each part
    captioned, numbered on from the previous one and appended to the plan file."""

    request: PlanRequest
    captions: dict[str, Any]
    dropped: pl.DataFrame | None
    empty: pl.DataFrame  # the selection's columns, planned when there is no part

    def write(self, parts: list[Path], plan_file: Path, saved: Mapping[str, object]) -> int:
        """Plan ``parts`` (deleting each once planned) into ``plan_file``, with ``saved``
        in its metadata; the number of posts planned."""
        tags = read_tag_table(self.request.tag_table) if self.request.tag_table else None
        notes = {f"e6ingest.{k}": json.dumps(v, sort_keys=True) for k, v in saved.items()}
        writer: pq.ParquetWriter | None = None
        offset = 0
        for part_file in [*parts] if parts else [None]:  # none: one empty part
            part = pl.read_parquet(part_file) if part_file is not None else self.empty
            if tags is not None:
                part = apply_tag_table(part.lazy(), tags).collect()
            table = _plan_part(part, self.request, self.captions, offset, self.dropped).to_arrow()
            del part
            if writer is None:
                writer = pq.ParquetWriter(plan_file, table.schema.with_metadata(notes))
            writer.write_table(table.cast(writer.schema), row_group_size=65536)
            offset += table.num_rows
            del table
            pa.default_memory_pool().release_unused()
            if part_file is not None:
                part_file.unlink()
        if writer is not None:
            writer.close()
        return offset


def partition(
    selection: Path, ranges: list[tuple[int, int]], source_shards: int, only: pl.Series | None
) -> list[Path]:
    """Split the selection file into one file per range of source shards, in one pass
    over it (a row group at a time), rows in their order; with ``only``, just those ids.
    Each batch of the plan then reads its own file, not the whole selection again."""
    if not ranges:
        return []
    ends = np.array([hi for _, hi in ranges])
    keep = only.to_arrow() if only is not None else None
    files = [temp_path(selection.with_name(f"part{i}.parquet")) for i in range(len(ranges))]
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for batch in pq.ParquetFile(selection).iter_batches(batch_size=65_536):
            table = pa.Table.from_batches([batch])
            if table["id"].null_count:  # a copy of every column: only when needed
                table = table.filter(pc.is_valid(table["id"]))
            if keep is not None:
                table = table.filter(pc.is_in(table["id"], keep))
            ids = pl.from_arrow(table["id"]).to_numpy()  # (arrow's to_numpy imports pandas)
            which = np.searchsorted(ends, ids % source_shards, side="right")
            order = np.argsort(which, kind="stable")  # by part, rows in their order
            table, which = table.take(to_arrow(order)), which[order]
            starts = np.flatnonzero(np.diff(which, prepend=-1))
            for start, stop in zip(starts, [*starts[1:], len(which)], strict=True):
                number = int(which[start])
                if number not in writers:
                    writers[number] = pq.ParquetWriter(files[number], table.schema)
                writers[number].write_table(table.slice(start, stop - start))
    finally:
        for writer in writers.values():
            writer.close()
    return [files[n] for n in sorted(writers)]
