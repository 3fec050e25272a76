"""Shards: the output format of a run: its layout (``layout``), the tar shards and their
indexes (``writer``, ``tarindex``), each shard's stats (``stats``), the output manifest
(``manifest``) and the dataset card (``card``). What reads it is in ``e6ingest.readers``;
the output folder's lock and safety in ``e6ingest.outdir``."""

from e6ingest.shards.layout import FAILURES_FILE, MANIFEST_FILE, PLAN_FILE, SHARDS_DIR
from e6ingest.shards.manifest import FORMAT_VERSION, OutputManifest, read_manifest
from e6ingest.shards.writer import (
    INDEX_SCHEMA,
    MEMBER_ORDER,
    Sample,
    ShardWriter,
    sample_key,
    sample_key_expr,
    shard_complete,
    shard_name,
    shard_paths,
)

__all__ = [
    "FAILURES_FILE",
    "FORMAT_VERSION",
    "INDEX_SCHEMA",
    "MANIFEST_FILE",
    "MEMBER_ORDER",
    "PLAN_FILE",
    "SHARDS_DIR",
    "OutputManifest",
    "Sample",
    "ShardWriter",
    "read_manifest",
    "sample_key",
    "sample_key_expr",
    "shard_complete",
    "shard_name",
    "shard_paths",
]
