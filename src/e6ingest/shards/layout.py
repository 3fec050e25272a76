"""The files of an output folder (docs/FORMAT.md), named once."""

from __future__ import annotations

import re

SHARDS_DIR = "shards"
PLAN_FILE = "plan.parquet"
FAILURES_FILE = "failures.parquet"
MANIFEST_FILE = "manifest.json"
CARD_FILE = "README.md"
CARD_MARKER = "<!-- e6ingest dataset card -->"
# The files of shard NNNNN: tar, index parquet, indexed-tar JSON and stats.
SHARD_FILE = re.compile(r"^\d{5}\.(?:tar|parquet|json|stats\.json)$")


class OutputError(ValueError):
    """An output folder is not (or not yet) a complete e6ingest run; the message names it."""
