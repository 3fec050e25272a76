"""The files of an output folder (docs/FORMAT.md), named once."""

from __future__ import annotations

import enum
import hashlib
import re
from pathlib import Path

SHARDS_DIR = "shards"
PLAN_FILE = "plan.parquet"
FAILURES_FILE = "failures.parquet"
MANIFEST_FILE = "manifest.json"
CARD_FILE = "README.md"
# The mark of a card: e6ingest's, with the sha256 of the card's other lines, so a card a
# person edited afterwards is told from one e6ingest wrote as it is (older cards: no hash).
CARD_MARK = re.compile(r"^<!-- e6ingest dataset card(?: sha256:([0-9a-f]{64}))? -->\r?\n", re.M)
CARD_MARK_WITHIN = 4096  # characters from the start where the mark is looked for
CARD_MAX_BYTES = 1 << 22  # a bigger README.md is none of e6ingest's cards
# The files of shard NNNNN: tar, index parquet, indexed-tar JSON and stats.
SHARD_FILE = re.compile(r"^\d{5}\.(?:tar|parquet|json|stats\.json)$")


class CardState(enum.Enum):
    """Who a README.md is of: e6ingest's as written, e6ingest's edited since, or not."""

    OURS = "ours"
    EDITED = "edited"
    FOREIGN = "foreign"


def mark_card(front: str, body: str) -> str:
    """A card's text: ``front`` (its YAML front matter), the mark, then ``body``."""
    digest = hashlib.sha256((front + body).encode("utf-8")).hexdigest()
    return f"{front}<!-- e6ingest dataset card sha256:{digest} -->\n{body}"


def card_state(path: Path) -> CardState:
    """Whether the README.md at ``path`` is a card e6ingest wrote, one it wrote that was
    edited since (its text no longer matches the mark's hash), or another file. A card of
    an older version, marked without a hash, counts as e6ingest's."""
    try:
        if path.stat().st_size > CARD_MAX_BYTES:
            return CardState.FOREIGN
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return CardState.FOREIGN
    mark = CARD_MARK.search(text, 0, CARD_MARK_WITHIN)
    if mark is None:
        return CardState.FOREIGN
    if mark.group(1) is None:
        return CardState.OURS
    rest = (text[: mark.start()] + text[mark.end() :]).encode("utf-8")
    same = hashlib.sha256(rest).hexdigest() == mark.group(1)
    return CardState.OURS if same else CardState.EDITED


class OutputError(ValueError):
    """An output folder is not (or not yet) a complete e6ingest run; the message names it."""
