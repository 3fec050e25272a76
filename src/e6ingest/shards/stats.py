"""What one output shard holds and how it came to be: its stats, written last beside its tar
(``NNNNN.stats.json``), so a shard is complete exactly when they are there and match."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from e6ingest.core import FailureKind, PostFailure

WRITTEN = "written"  # the outcome of a post made a sample; the others are FailureKind values


@dataclass(frozen=True)
class FailureRecord:
    """One post that did not make it: a row of ``failures.parquet``."""

    id: int | None
    site: str
    stage: str
    kind: str
    message: str

    @classmethod
    def of(cls, post_id: int | None, site: str, failure: PostFailure) -> FailureRecord:
        """The record of a post's failure."""
        return cls(post_id, site, failure.stage, failure.kind.value, failure.message)

    @property
    def retryable(self) -> bool:
        """Whether a rerun with ``--retry-failed`` may still get the post."""
        return FailureKind(self.kind).retryable


@dataclass
class ShardCounts:
    """What a task counts while it writes a shard."""

    selected: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[FailureRecord] = field(default_factory=list)
    reencoded: int = 0
    image_seconds: float = 0.0

    def fail(self, record: FailureRecord) -> None:
        """Count one failed post."""
        self.outcomes[record.kind] += 1
        self.failures.append(record)


@dataclass(frozen=True)
class ShardStats:
    """The stats of a finished shard, as its stats file holds them."""

    shard: str  # "00042"
    selected: int  # posts planned into the shard
    samples: int  # samples written
    outcomes: dict[str, int]  # WRITTEN and each failure kind
    failures: tuple[FailureRecord, ...]
    reencoded: int
    image_seconds: float
    seconds: float
    tar_bytes: int
    tar_sha256: str
    plan: str = ""  # the plan the shard was written for (``plan.plan_id``)
    # Returned by a rewrite that kept this shard as it was (not in the stats file).
    kept: bool = field(default=False, compare=False)

    @property
    def number(self) -> int:
        """The shard's number."""
        return int(self.shard)

    @property
    def written(self) -> int:
        """Samples written."""
        return self.outcomes.get(WRITTEN, 0)

    @property
    def retryable(self) -> int:
        """Failed posts a rerun with ``--retry-failed`` may still get."""
        return sum(f.retryable for f in self.failures)

    @property
    def failed_ids(self) -> set[int | None]:
        """The ids of the posts that failed."""
        return {f.id for f in self.failures}

    def to_json(self) -> bytes:
        """The stats file's bytes."""
        data = asdict(self)
        del data["kept"]
        return json.dumps(data, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> ShardStats:
        """Stats from a stats file's bytes."""
        raw = json.loads(data)
        raw["failures"] = tuple(FailureRecord(**f) for f in raw["failures"])
        raw.pop("kept", None)
        return cls(**raw)

    @classmethod
    def read(cls, path: Path) -> ShardStats | None:
        """The stats at ``path``, or None when there are none (an unfinished shard)."""
        try:
            return cls.from_json(path.read_bytes())
        except FileNotFoundError:
            return None
