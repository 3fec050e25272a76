"""e6ingest's cache of Hub files: ``ROOT/owner/name/COMMIT/path``, immutable per commit.

Metadata files, shard indexes and whole shards downloaded from the Hub are kept here (the
root is ``--cache-dir``, else ``$E6INGEST_CACHE/hub``), with ``ROOT/owner/name/refs/REV``
holding the commit a branch pointed at when last seen, for runs without network. The root
carries a marker file; e6ingest only removes files under a marked root.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from e6ingest.cache import CacheError
from e6ingest.core import write_atomic

CACHE_MARKER = ".e6ingest-cache"
COMMIT = re.compile(r"^[0-9a-f]{40}$")


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


class HubCache:
    """Files of Hub repositories at pinned commits, on local disk."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def ensure(self) -> HubCache:
        """Create the root with its marker; refuse a non-empty folder that is not ours."""
        marker = self.root / CACHE_MARKER
        if marker.is_file():
            return self
        if self.root.is_dir():
            stray = next(iter(sorted(self.root.iterdir())), None)
            if stray is not None:
                raise CacheError(
                    f"cache folder {self.root} holds files e6ingest did not write ({stray}); "
                    "give --cache-dir an empty or new folder"
                )
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            marker.write_text("e6ingest Hub cache: files of Hub repositories by commit\n")
        except OSError as exc:
            raise CacheError(f"cache folder {self.root}: {exc.strerror or exc}") from None
        return self

    def file(self, repo: str, commit: str, path: str) -> Path:
        """Where ``repo``'s ``path`` at ``commit`` is kept."""
        if not COMMIT.match(commit):
            raise ValueError(f"{commit!r} is not a commit id")
        return self.root / repo / commit / path

    def _ref_path(self, repo: str, revision: str) -> Path:
        """Where the commit of ``revision`` is kept: inside the root, or ValueError."""
        path = self.root / repo / "refs" / revision
        if ".." in Path(repo, revision).parts or not path.resolve().is_relative_to(
            self.root.resolve()
        ):  # fmt: skip
            raise ValueError(f"{repo}@{revision} would leave the cache folder")
        return path

    def ref(self, repo: str, revision: str) -> str | None:
        """The commit ``revision`` of ``repo`` pointed at when last resolved, if known."""
        try:
            commit = self._ref_path(repo, revision).read_text().strip()
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        return commit if COMMIT.match(commit) else None

    def set_ref(self, repo: str, revision: str, commit: str) -> None:
        """Remember that ``revision`` of ``repo`` points at ``commit``."""
        path = self._ref_path(repo, revision)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, commit.encode(), durable=False)

    def keep_checked(self, path: Path, data: bytes) -> None:
        """Keep ``data`` at ``path`` with its sha256 beside it (``path.sha256``), so a copy
        changed on disk since is never taken for it (:meth:`read_checked`)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, durable=False)
        write_atomic(_digest_path(path), hashlib.sha256(data).hexdigest().encode(), durable=False)

    def read_checked(self, path: Path) -> bytes | None:
        """The bytes kept at ``path`` when they still have the sha256 kept beside them; a
        copy without it, or changed since, is removed and None returned."""
        try:
            data = path.read_bytes()
            expected = _digest_path(path).read_text().strip()
        except (OSError, UnicodeDecodeError):
            data, expected = None, ""
        if data is not None and hashlib.sha256(data).hexdigest() == expected:
            return data
        self.remove(path)
        self.remove(_digest_path(path))
        return None

    def remove(self, path: Path) -> bool:
        """Delete a cached file (only under this marked root); True when it was there."""
        if not (self.root / CACHE_MARKER).is_file():
            return False
        if not path.absolute().is_relative_to(self.root.absolute()) or path.is_symlink():
            return False
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True
