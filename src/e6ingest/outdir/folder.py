"""An output folder: e6ingest only ever removes what it can prove it wrote there
(``scan_output``); one run at a time holds it (``lock.OutputLock``)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from e6ingest.core import is_our_temp, is_temp_name
from e6ingest.outdir.lock import LOCK_FILE
from e6ingest.shards.layout import (
    CARD_FILE,
    FAILURES_FILE,
    MANIFEST_FILE,
    PLAN_FILE,
    SHARD_FILE,
    SHARDS_DIR,
    CardState,
    OutputError,
    card_state,
)


@dataclass
class OutputContents:
    """What an output folder holds: files e6ingest wrote, and everything else."""

    out: Path
    ours: list[Path] = field(default_factory=list)  # a run's files and temporaries
    foreign: list[Path] = field(default_factory=list)  # files e6ingest did not write
    edited: list[Path] = field(default_factory=list)  # its card, edited since: kept as is

    @property
    def has_run(self) -> bool:
        """Whether a run's files (not only temporaries) are there."""
        return any(not is_temp_name(p.name) and p.name != LOCK_FILE for p in self.ours)


def _plan_is_ours(path: Path) -> bool:
    try:
        import pyarrow.parquet as pq

        return b"e6ingest.fingerprint" in (pq.read_metadata(path).metadata or {})
    except Exception:
        return False


def _manifest_is_ours(path: Path) -> bool:
    try:
        return "e6ingest_version" in json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


# What e6ingest writes through temporaries at the top of an output folder.
TOP_TEMP_TARGET = re.compile(
    r"^(?:manifest\.json|plan\.parquet|failures\.parquet|README\.md|\.e6ingest\.lock|"
    r"selection\.parquet|part\d+\.parquet)$"
)


def scan_output(out: str | os.PathLike[str]) -> OutputContents:
    """Sort what ``out`` holds into e6ingest's files and the rest, following no symlink.

    e6ingest's are its temporaries and lock, and, when the folder holds a run of its own
    (a plan or manifest carrying e6ingest's marks), the run's named files: manifest, plan,
    failures, dataset card (marked) and ``shards/NNNNN.*``. A run's card that a person
    edited since is neither: it is never removed nor overwritten, and blocks nothing.
    Anything else, symlinks and folders included, is foreign.
    """
    out = Path(out)
    contents = OutputContents(out)
    if not out.is_dir():
        return contents
    run = (out / PLAN_FILE).is_file() and _plan_is_ours(out / PLAN_FILE)
    run = run or ((out / MANIFEST_FILE).is_file() and _manifest_is_ours(out / MANIFEST_FILE))
    named = {MANIFEST_FILE, PLAN_FILE, FAILURES_FILE}

    def whose(entry: os.DirEntry[str]) -> list[Path]:
        if not entry.is_file(follow_symlinks=False):
            return contents.foreign
        if entry.name == LOCK_FILE or is_our_temp(entry, TOP_TEMP_TARGET.match):
            return contents.ours
        if run and entry.name == CARD_FILE:
            state = card_state(Path(entry.path))
            return {CardState.OURS: contents.ours, CardState.EDITED: contents.edited}.get(
                state, contents.foreign
            )
        return contents.ours if run and entry.name in named else contents.foreign

    for entry in sorted(os.scandir(out), key=lambda e: e.name):
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False) and entry.name == SHARDS_DIR:
            for item in sorted(os.scandir(path), key=lambda e: e.name):
                ours = item.is_file(follow_symlinks=False) and (
                    is_our_temp(item, SHARD_FILE.match) or (run and SHARD_FILE.match(item.name))
                )
                (contents.ours if ours else contents.foreign).append(Path(item.path))
        else:
            whose(entry).append(path)
    return contents


def remove_ours(contents: OutputContents, keep: tuple[str, ...] = (LOCK_FILE,)) -> int:
    """Delete e6ingest's files found by :func:`scan_output` (never a foreign one), and the
    shards folder when it is left empty; returns how many files went."""
    removed = 0
    for path in contents.ours:
        if path.name in keep:
            continue
        path.unlink(missing_ok=True)
        removed += 1
    shards = contents.out / SHARDS_DIR
    if shards.is_dir() and not shards.is_symlink() and not any(shards.iterdir()):
        shards.rmdir()
    return removed


def foreign_error(contents: OutputContents, what: str = "--out") -> OutputError:
    """The refusal for a folder holding files e6ingest did not write, naming one."""
    first = contents.foreign[0]
    more = len(contents.foreign) - 1
    others = f" and {more} more" if more else ""
    return OutputError(
        f"{what} {contents.out} holds files e6ingest did not write ({first}{others}); "
        "e6ingest writes only into an empty folder or one of its own runs, and never "
        "deletes what it did not write: choose another folder"
    )
