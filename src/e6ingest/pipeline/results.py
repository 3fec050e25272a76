"""The end of a run, done once on the driver: ``failures.parquet`` and ``manifest.json``
streamed from the shards' stats (one shard's at a time, so a run with millions of failures
needs no more memory than one with none), and the summary a person reads."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from e6ingest import __version__
from e6ingest.core import atomic_path, kill_point, write_atomic
from e6ingest.manifests import DatasetManifest
from e6ingest.shards import FAILURES_FILE, MANIFEST_FILE, SHARDS_DIR
from e6ingest.shards.card import write_card
from e6ingest.shards.layout import CARD_FILE
from e6ingest.shards.manifest import (
    FORMAT_VERSION,
    OutputDataset,
    OutputManifest,
    OutputTotals,
    ShardEntry,
)
from e6ingest.shards.stats import WRITTEN, FailureRecord, ShardStats

FAILURE_SCHEMA = pa.schema(
    [("id", pa.int64()), ("site", pa.string()), ("stage", pa.string()), ("kind", pa.string()),
     ("message", pa.string())]
)  # fmt: skip
# The same columns for polars, which builds the tables.
FAILURE_COLUMNS = {"id": pl.Int64, "site": pl.String, "stage": pl.String, "kind": pl.String,
                   "message": pl.String}  # fmt: skip
FAILURE_BATCH = 65_536


def plural(n: int, word: str) -> str:
    """``1 shard``, ``3 shards``."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


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
    written_now: int = 0  # samples written by this run (not by an earlier one)
    examples: dict[str, str] = field(default_factory=dict)  # failure kind -> one message
    notes: list[str] = field(default_factory=list)  # what a person should know (one line each)

    @property
    def samples_per_second(self) -> float:
        """Samples written by this run per second of its wall time."""
        return self.written_now / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data."""
        data = asdict(self)
        data["out"] = str(self.out)
        data["seconds"] = round(self.seconds, 3)
        data["samples_per_second"] = round(self.samples_per_second, 2)
        return data

    def lines(self) -> list[str]:
        """The summary as human-readable lines."""
        failed = sum(self.failed.values())
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(self.failed.items(), key=lambda i: -i[1]))
        lines = [
            f"selected {self.selected:,}, written {self.written:,}, failed {failed:,}"
            + (f" ({kinds})" if kinds else ""),
            f"{plural(self.shards, 'shard')} ({self.shards_skipped:,} already complete), "
            f"{self.bytes / 1e6:.1f} MB; this run: {plural(self.written_now, 'sample')} in "
            f"{self.seconds:.1f} s, {self.samples_per_second:.1f} samples/s",
        ]
        if failed:
            lines.append(f"failures: {self.out / FAILURES_FILE} (one row per post, with why)")
            for kind, _ in sorted(self.failed.items(), key=lambda i: -i[1])[:3]:
                if kind in self.examples:
                    lines.append(f"  e.g. {kind}: {self.examples[kind]}")
        lines.append(f"output: {self.out}")
        if self.retryable:
            lines.append(
                f"{plural(self.retryable, 'post')} failed for a reason that may pass (their "
                "source was unavailable); rerun the same command with --retry-failed to try "
                "them again"
            )
        return lines + self.notes


def _failure_rows(records: Iterable[FailureRecord]) -> Iterable[pa.Table]:
    """The records as tables of ``FAILURE_BATCH`` rows, built by polars (pyarrow's
    conversion of Python values imports pandas, a second or so of a run for nothing)."""
    batch: list[dict[str, Any]] = []
    for record in records:
        batch.append(asdict(record))
        if len(batch) >= FAILURE_BATCH:
            yield _failure_table(batch)
            batch = []
    if batch:
        yield _failure_table(batch)


def _failure_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pl.DataFrame(rows, schema=FAILURE_COLUMNS).to_arrow().cast(FAILURE_SCHEMA)


def finalise(
    out: Path,
    manifest: DatasetManifest,
    fingerprint: Mapping[str, Any],
    commits: dict[str, str],
    rejected: list[FailureRecord],
    stats: Iterable[ShardStats],
    plan: str = "",
) -> tuple[OutputManifest, PullSummary]:
    """Write ``failures.parquet`` and ``manifest.json`` from the shards' stats (streamed)
    and the plan's rejected rows; return the manifest and the totals as a summary."""
    summary = PullSummary(out, selected=len(rejected))
    outcomes: Counter[str] = Counter(r.kind for r in rejected)
    examples = {r.kind: r.message for r in reversed(rejected)}
    entries = []

    def records() -> Iterable[FailureRecord]:
        yield from rejected
        for shard in stats:
            summary.selected += shard.selected
            summary.bytes += shard.tar_bytes
            summary.retryable += shard.retryable
            outcomes.update(shard.outcomes)
            for failure in shard.failures:
                examples.setdefault(failure.kind, failure.message)
            entries.append(ShardEntry(f"{SHARDS_DIR}/{shard.shard}.tar", shard.samples,
                                      shard.tar_bytes, shard.tar_sha256))  # fmt: skip
            yield from shard.failures

    with atomic_path(out / FAILURES_FILE) as tmp, pq.ParquetWriter(tmp, FAILURE_SCHEMA) as w:
        for batch in _failure_rows(records()):
            w.write_table(batch)
    kill_point("failures-written")
    summary.written = outcomes.pop(WRITTEN, 0)
    summary.failed = dict(sorted(outcomes.items()))
    summary.examples = examples
    summary.shards = len(entries)
    document = OutputManifest(
        format_version=FORMAT_VERSION,
        e6ingest_version=__version__,
        dataset=OutputDataset(manifest.name, manifest.site, dict(sorted(commits.items()))),
        config=fingerprint["config"],
        totals=OutputTotals(summary.selected, summary.written, summary.failed, summary.bytes),
        shards=tuple(entries),
        plan=plan,
    )
    write_atomic(out / MANIFEST_FILE, document.to_json())
    kill_point("manifest-written")
    if not write_card(out, document):
        summary.notes.append(
            f"{out / CARD_FILE} was edited after e6ingest wrote it: left as it is, so its "
            "totals may be those of an earlier run (move it away and rerun to have it written)"
        )
    return document, summary
