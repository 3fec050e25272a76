"""Where a run's images come from: the local mirror or the Hub, and Hub shard bookkeeping."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import polars as pl

from e6ingest.config import ConfigError
from e6ingest.manifests import DatasetManifest
from e6ingest.sources import HubOptions, HubSource, MirrorSource


def metadata_source(manifest: DatasetManifest, mirror: str | Path | None, hub: HubOptions):
    """The source that provides the metadata files: the mirror, or the Hub."""
    return MirrorSource(mirror, manifest) if mirror is not None else HubSource(manifest, hub)


def pin_commits(
    manifest: DatasetManifest, mirror, hub: HubOptions, pins: dict[str, str]
) -> dict[str, str]:
    """The commit each repository of the dataset is read at for a whole run: the revision
    pinned in ``pins`` (``--revision``) or the manifest, resolved on the Hub now. A mirror
    has no commits: ``"local"`` for each."""
    unknown = sorted(set(pins) - set(manifest.repos))
    if unknown:
        raise ConfigError(
            f"--revision: {unknown[0]} is not a repository of {manifest.name} "
            f"(its repositories: {', '.join(manifest.repos)})"
        )
    if mirror is not None:
        return dict.fromkeys(manifest.repos, "local")
    revisions = {**manifest.revisions(), **pins}
    with HubSource(manifest, hub) as source:
        return {repo: source.commit(repo, revision) for repo, revision in revisions.items()}


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


def discard_source_shard(manifest: DatasetManifest, hub: HubOptions, shard: int) -> int:
    """Delete this machine's cached copies of one source shard (every image repository);
    how many there were. Runs on each node of a cluster (its own cache)."""
    with HubSource(manifest, hub) as source:
        return sum(source.discard_tar(repo, shard) for repo in manifest.images)


class ShardJanitor:
    """Deletes each downloaded source shard once every task that reads it is done, so a
    run of several TB never holds more than the shards in use on disk. ``discard(shard)``
    deletes it wherever it was downloaded (on every node of a cluster)."""

    def __init__(
        self, plan_path: Path, numbers: list[int], shards: frozenset[int], modulus: int,
        discard: Callable[[int], object],
    ):  # fmt: skip
        self.discard = discard
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

    def task_done(self, number: int) -> list[int]:
        """Record that task ``number`` finished; discard and return the source shards no
        task still needs."""
        done = []
        for source_shard in self.by_task.pop(number, []):
            self.remaining[source_shard] -= 1
            if self.remaining[source_shard] == 0:
                self.discard(source_shard)
                done.append(source_shard)
        return done
