"""The indexed-tar JSON beside each output tar (``NNNNN.json``), in the hfutils format the
source datasets use, so hfutils, cheesechaser and webshart (SimpleTuner) can read an output
as they read its sources: ``filesize``, ``hash`` (git blob sha1), ``hash_lfs`` (sha256) and
``files: {member: {offset, size, sha256}}`` for every member; each image also carries
``width``, ``height``, ``aspect`` and ``captions`` (what webshart buckets and captions by).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from e6ingest.core import write_atomic


@dataclass(frozen=True)
class Member:
    """One file of a tar: where its data lies, its sha256, and what webshart reads of it."""

    name: str
    offset: int
    size: int
    sha256: str
    extra: dict[str, object] = field(default_factory=dict)


def git_blob_sha1(path: Path) -> str:
    """The git blob id of a file (what the Hub's ``hash`` of a file is)."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def image_fields(width: int, height: int, caption: str) -> dict[str, object]:
    """The per-image fields webshart reads: size, aspect and the caption (a list when the
    caption holds several lines, one of which a trainer picks)."""
    lines = caption.split("\n")
    return {
        "width": width,
        "height": height,
        "aspect": round(width / height, 6),
        "captions": lines if len(lines) > 1 else caption,
    }


def tar_index(tar: Path, sha256: str, members: list[Member]) -> dict[str, object]:
    """The index document of a finished tar."""
    return {
        "filesize": tar.stat().st_size,
        "hash": git_blob_sha1(tar),
        "hash_lfs": sha256,
        "files": {
            m.name: {"offset": m.offset, "size": m.size, "sha256": m.sha256, **m.extra}
            for m in members
        },
    }


def write_tar_index(path: Path, document: Mapping[str, object]) -> None:
    """Write the index atomically (compact JSON, keys in a fixed order)."""
    write_atomic(path, json.dumps(document, separators=(",", ":")).encode())
