"""Where a run's images come from: the local mirror or the Hub, and Hub shard bookkeeping."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from e6ingest.cache import cache_dir
from e6ingest.captions import CaptionSpec, ranks_by_rarity, read_implications, variant_rarity
from e6ingest.config import ConfigError
from e6ingest.manifests import DatasetManifest, MetadataFile
from e6ingest.query.index import built_index, open_index
from e6ingest.query.vocabulary import cached_vocabulary
from e6ingest.sources import HubError, HubOptions, HubSource, MirrorError, MirrorSource


def metadata_source(
    manifest: DatasetManifest, mirror: str | Path | None, hub: HubOptions
) -> MirrorSource | HubSource:
    """The source that provides the metadata files: the mirror, or the Hub."""
    return MirrorSource(mirror, manifest) if mirror is not None else HubSource(manifest, hub)


def pin_commits(
    manifest: DatasetManifest, mirror: str | Path | None, hub: HubOptions, pins: dict[str, str]
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
    optional = {t.repo for t in manifest.tables} - {m.repo for m in manifest.metadata}
    commits = {}
    with HubSource(manifest, hub) as source:
        for repo, revision in revisions.items():
            try:
                commits[repo] = source.commit(repo, revision)
            except HubError:
                if repo not in optional:
                    raise  # a tag table's repository may be gone: the run goes on without
    return commits


TABLE_COSTS = {
    "tags": ("tags stay uncategorised: every tag counts as general, artists and characters "
             "do not lead the captions, and meta tags such as hi_res stay", "--tag-table"),
    "implications": ("--prune-implied has nothing to prune with", "--implications"),
}  # fmt: skip


def table_file(
    source: MirrorSource | HubSource, entry: MetadataFile | None, warn: Callable[[str], object]
) -> Path | None:
    """The local copy of one of the manifest's tag tables, or None (with a warning that says
    what its absence costs) when the source lacks it."""
    if entry is None:
        return None
    try:
        return source.metadata_file(entry)
    except (MirrorError, HubError) as exc:
        cost, flag = TABLE_COSTS[entry.schema]
        warn(f"no {entry.schema} table ({exc}); {cost}. Give one with {flag} FILE")
        return None


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


@dataclass(frozen=True)
class CaptionTables:
    """What captions need from the dataset beyond the posts: the tags table restoring
    categories, the implications, and (lazily) how many posts each tag is on, from the tag
    index of the metadata ``files`` (read with ``schemas``) unless ``index`` is off."""

    spec: CaptionSpec
    tag_table: str = ""
    implications: str = ""
    files: tuple[Path, ...] = ()
    schemas: tuple[str | None, ...] = ()  # default: each recognised from its columns
    index: bool | None = None  # True: build the index; None: one already built; False: none

    def implied(self, spec: CaptionSpec | None = None) -> pl.DataFrame | None:
        """The closed implications when ``spec`` (default: the tables' own) prunes implied
        tags: its own ``implications`` file, else the tables'. Tables made for a spec that
        did not prune looked for none: asked then, it is refused, never pruning nothing."""
        spec = spec or self.spec
        if not spec.prune_implied:
            return None
        path = spec.implications or self.implications
        if path:
            return read_implications(path)
        if self.spec.prune_implied:  # looked for, and its absence said when they were made
            return None
        raise ConfigError(
            "prune_implied: these tag tables were made without an implications table; "
            "open the dataset with caption=CaptionSpec(prune_implied=True) (the dataset's "
            "own table) or give implications=FILE"
        )

    def rarity(self, spec: CaptionSpec | None = None) -> dict[str, pl.DataFrame]:
        """Per variant of ``spec`` (default: the tables' own; ``default`` too) whose token
        budget orders tags by how many posts they are on: posts per tag, as that variant
        writes tags (none when none does)."""
        spec = spec or self.spec
        if not ranks_by_rarity(spec):
            return {}
        schemas = list(self.schemas) or [None] * len(self.files)
        root = cache_dir() / "index"
        index = None
        if self.index is True:
            index = open_index(self.files, schemas, root)
        elif self.index is None:
            index = built_index(self.files, schemas, root)
        if index is not None:
            vocabulary = index.vocabulary()
        else:
            vocabulary = cached_vocabulary(self.files, schemas, cache_dir() / "vocabulary")
        return variant_rarity(vocabulary, spec)


def check_implications(spec: CaptionSpec, manifest: DatasetManifest | None) -> None:
    """Refuse ``prune_implied`` when no implications table can be had: neither the spec
    nor the dataset (``manifest``; None for metadata files given alone) names one, so it
    would prune nothing."""
    if not spec.prune_implied or spec.implications:
        return
    if manifest is None or manifest.implications is None:
        names = "metadata files given alone name" if manifest is None else f"{manifest.name} names"
        raise ConfigError(f"--prune-implied: no implications table ({names} none); give one "
                          "with --implications FILE")  # fmt: skip


def caption_tables(
    spec: CaptionSpec,
    tag_table: str,
    manifest: DatasetManifest,
    source: MirrorSource | HubSource,
    files: Sequence[Path],
    warn: Callable[[str], object],
) -> CaptionTables:
    """The tag tables captions use: ``tag_table`` and the spec's implications when given,
    else the dataset's (a missing one is a warning saying what it costs)."""
    tags = tag_table or table_file(source, manifest.tags, warn)
    implications: str | Path | None = spec.implications
    if spec.prune_implied and not implications:
        check_implications(spec, manifest)
        implications = table_file(source, manifest.implications, warn)
    schemas = tuple(m.schema for m in manifest.metadata)
    return CaptionTables(spec, str(tags or ""), str(implications or ""), tuple(files),
                         schemas)  # fmt: skip
