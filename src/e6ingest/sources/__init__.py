"""Sources: where images come from. Each yields verified bytes per id or a typed failure."""

from __future__ import annotations

from dataclasses import dataclass, field

from e6ingest.core import FailureKind, PostFailure
from e6ingest.manifests import DatasetManifest
from e6ingest.sources.base import (
    Fetched,
    IndexEntry,
    Source,
    TarIndex,
    member_stem,
    verify,
)
from e6ingest.sources.hub import HubOptions, HubSource
from e6ingest.sources.mirror import MirrorError, MirrorSource
from e6ingest.sources.retry import HubError

__all__ = [
    "FailureKind",
    "Fetched",
    "HubError",
    "HubOptions",
    "HubSource",
    "IndexEntry",
    "MirrorError",
    "MirrorSource",
    "PostFailure",
    "Source",
    "SourceSpec",
    "TarIndex",
    "member_stem",
    "open_source",
    "verify",
]


@dataclass(frozen=True)
class SourceSpec:
    """A plain, picklable description of a source, so any worker can open its own.

    With ``mirror`` set, a local mirror; otherwise the Hub, with ``hub`` options and the
    source shards to download whole.
    """

    manifest: DatasetManifest  # the dataset, pinned to commits (carried by value)
    mirror: str | None = None  # root folder of a local mirror
    hub: HubOptions = field(default_factory=HubOptions)
    whole_shards: frozenset[int] = frozenset()


def open_source(spec: SourceSpec) -> Source:
    """Open the source a spec describes."""
    if spec.mirror is not None:
        return MirrorSource(spec.mirror, spec.manifest)
    return HubSource(spec.manifest, spec.hub, spec.whole_shards)
