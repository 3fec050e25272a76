"""Sources: where images come from. Each yields verified bytes per id or a typed failure."""

from __future__ import annotations

from dataclasses import dataclass

from e6ingest.manifests import load_manifest
from e6ingest.sources.base import (
    FailureKind,
    Fetched,
    IndexEntry,
    PostFailure,
    Source,
    TarIndex,
    member_stem,
    verify,
)
from e6ingest.sources.mirror import MirrorError, MirrorSource

__all__ = [
    "FailureKind",
    "Fetched",
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
    """A plain, picklable description of a source, so any worker can open its own."""

    manifest: str  # bundled dataset name or path of a manifest TOML
    mirror: str  # root folder of a local mirror


def open_source(spec: SourceSpec) -> Source:
    """Open the source a spec describes."""
    return MirrorSource(spec.mirror, load_manifest(spec.manifest))
