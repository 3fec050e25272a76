"""What a pull tells its ``progress`` callback as it goes: one frozen dataclass per event.

A reporter matches on the class (``isinstance(event, PostsDone)``) or on ``event.name``;
``event.fields()`` is the event's JSON shape (what ``--log-json`` writes after ``event`` and
``time``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

from e6ingest.shards.stats import ShardStats

if TYPE_CHECKING:
    from e6ingest.pipeline.results import PullSummary


@dataclass(frozen=True)
class Event:
    """Something a run reports; ``name`` is its name in the JSON log."""

    name: ClassVar[str] = ""

    def fields(self) -> dict[str, Any]:
        """The event's data as JSON-ready values, by field name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class PlanningStarted(Event):
    """The run has its output folder and starts reading the metadata."""

    name: ClassVar[str] = "planning"


@dataclass(frozen=True)
class Warned(Event):
    """Something a person should know; the run goes on."""

    name: ClassVar[str] = "warning"
    message: str


@dataclass(frozen=True)
class IndexBuilt(Event):
    """How far the tag index build is: ``done`` of ``total`` posts."""

    name: ClassVar[str] = "index"
    done: int
    total: int


@dataclass(frozen=True)
class Planned(Event):
    """The plan: posts ``selected`` in ``shards``, of which ``todo`` shards holding
    ``posts_todo`` posts are still to write."""

    name: ClassVar[str] = "planned"
    selected: int
    shards: int
    todo: int
    posts_todo: int


@dataclass(frozen=True)
class PostsDone(Event):
    """Posts finished since the last such event: ``written`` or ``failed``."""

    name: ClassVar[str] = "posts"
    written: int
    failed: int


@dataclass(frozen=True)
class ShardDone(Event):
    """A shard task ended with these ``stats``."""

    name: ClassVar[str] = "shard"
    stats: ShardStats

    def fields(self) -> dict[str, Any]:
        """The shard's counts (the per-post failures are in ``failures.parquet``)."""
        return {k: v for k, v in asdict(self.stats).items() if k != "failures"}


@dataclass(frozen=True)
class Finished(Event):
    """The run ended with this ``summary``."""

    name: ClassVar[str] = "summary"
    summary: PullSummary

    def fields(self) -> dict[str, Any]:
        """The summary as JSON-ready data."""
        return self.summary.to_dict()


Progress = Callable[[Event], None]
