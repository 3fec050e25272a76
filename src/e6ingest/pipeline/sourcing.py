"""Where a run's images come from: the local mirror or the Hub, and Hub shard bookkeeping."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import polars as pl

from e6ingest.manifests import DatasetManifest
from e6ingest.sources import HubOptions, HubSource, MirrorSource
from e6ingest.sources.hub import delete_cached_tar


def metadata_source(manifest: DatasetManifest, mirror: str | Path | None, hub: HubOptions):
    """The source that provides the metadata files: the mirror, or the Hub."""
    return MirrorSource(mirror, manifest) if mirror is not None else HubSource(manifest, hub)


def whole_shards(
    metadata: pl.LazyFrame, plan_path: Path, modulus: int, share: float
) -> frozenset[int]:
    """Source shards (``id % modulus``) of which the plan selects at least ``share`` of the
    posts: downloading those whole beats one ranged request per post."""
    if share > 1:
        return frozenset()
    key = (pl.col("id") % modulus).alias("source_shard")
    totals = metadata.group_by(key).agg(pl.len().alias("total"))
    chosen = pl.scan_parquet(plan_path).group_by(key).agg(pl.len().alias("chosen"))
    shards = (
        chosen.join(totals, on="source_shard")
        .filter(pl.col("chosen") >= share * pl.col("total"))
        .select("source_shard")
        .collect(engine="streaming")
    )
    return frozenset(shards["source_shard"].to_list())


class ShardJanitor:
    """Deletes each downloaded source shard once every task that reads it is done, so a
    run of several TB never holds more than the shards in use on disk."""

    def __init__(
        self, source: HubSource, plan_path: Path, numbers: list[int], shards: frozenset[int]
    ):
        self.source = source
        modulus = source.manifest.images[0].shards
        uses = (
            pl.scan_parquet(plan_path)
            .filter(pl.col("shard").is_in(numbers))
            .select("shard", (pl.col("id") % modulus).alias("source_shard"))
            .unique()
            .collect()
        )
        self.by_task: dict[int, list[int]] = {}
        for task, source_shard in uses.iter_rows():
            if source_shard in shards:
                self.by_task.setdefault(task, []).append(source_shard)
        self.remaining = Counter(s for shards in self.by_task.values() for s in shards)

    def task_done(self, number: int) -> list[Path]:
        """Record that task ``number`` finished; delete and return shards no longer needed."""
        deleted = []
        for source_shard in self.by_task.pop(number, []):
            self.remaining[source_shard] -= 1
            if self.remaining[source_shard] == 0:
                for repo in self.source.manifest.images:
                    path = self.source.cached_tar(repo, source_shard)
                    if path is not None:
                        delete_cached_tar(path)
                        deleted.append(path)
        return deleted
