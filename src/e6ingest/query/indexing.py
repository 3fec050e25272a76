"""When a question is answered from the tag index, and when by scanning the metadata.

An index takes one long pass to build and then answers every question in under a second; a
scan answers one question in a few seconds. So the first question about some metadata is
answered by the scan at once, and the index is built when it pays: when asked for
(``e6ingest index``, ``--index``, ``index=True``), or at the second question about the same
files (a small record of the questions asked lives beside the indexes). ``--no-index``
(``index=False``) always scans.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from e6ingest.core import write_atomic
from e6ingest.metadata.identity import identify_all
from e6ingest.query.index import Report, TagIndex, built_index, open_index
from e6ingest.query.index_build import metadata_rows

QUESTIONS_FILE = "questions.json"  # beside the indexes: metadata key -> questions asked
BUILD_ROWS_PER_SECOND = 200_000  # how fast a build goes on 2 cores (benchmarks/RESULTS.md)


def _files_key(files: Sequence[str | os.PathLike[str]], schemas: Sequence[str | None]) -> str:
    document = json.dumps([f.key for f in identify_all(files, schemas)], sort_keys=True)
    return hashlib.sha256(document.encode()).hexdigest()[:32]


def _asked(root: Path) -> dict[str, int]:
    try:
        asked = json.loads((root / QUESTIONS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return asked if isinstance(asked, dict) else {}


def asked_before(
    files: Sequence[str | os.PathLike[str]], schemas: Sequence[str | None], root: Path
) -> bool:
    """Whether a question about these files (as they are now) was answered before; the
    question asked now is recorded."""
    key = _files_key(files, schemas)
    asked = _asked(root)
    before = bool(asked.get(key))
    asked[key] = int(asked.get(key, 0) or 0) + 1
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(root / QUESTIONS_FILE, json.dumps(asked).encode(), durable=False)
    return before


def _scan_without_record(root: Path, exc: OSError, notice: Callable[[str], None] | None) -> None:
    """Say once that a cache folder e6ingest may not write keeps no index: every question
    is then answered by the scan."""
    if notice is not None:
        notice(f"the tag index cannot be kept in {root} ({exc.strerror or exc}): questions "
               "are answered by scanning the metadata (set E6INGEST_CACHE to a writable "
               "folder to have them answered in under a second)")  # fmt: skip


def build_notice(files: Sequence[str | os.PathLike[str]]) -> str:
    """The line said when an index is built on its own account."""
    seconds = max(1, round(metadata_rows([Path(f) for f in files]) / BUILD_ROWS_PER_SECOND))
    return (f"building the tag index (once, about {seconds} s) so the next questions take "
            "under a second")  # fmt: skip


def index_for_question(
    files: Sequence[str | os.PathLike[str]],
    schemas: Sequence[str | None],
    root: Path,
    index: bool | None,
    report: Report | None = None,
    notice: Callable[[str], None] | None = None,
) -> TagIndex | None:
    """The index a question is answered from, or None to scan: ``index`` True builds it
    when needed, False never uses one, None (the default) uses a built one, builds it at
    the second question about the same files (saying so through ``notice``), and scans
    the first."""
    if index is False:
        return None
    if index is True:
        return open_index(files, schemas, root, report)
    found = built_index(files, schemas, root)
    if found is not None:
        return found
    try:
        if not asked_before(files, schemas, root):
            return None
    except OSError as exc:  # a read-only cache: the answer does not need it
        _scan_without_record(root, exc, notice)
        return None
    if notice is not None:
        notice(build_notice(files))
    return open_index(files, schemas, root, report)
