"""An output folder: one run at a time holds it (``OutputLock``), and e6ingest only ever
removes what it can prove it wrote there (``scan_output``)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from e6ingest.core import is_temp_name
from e6ingest.shards.layout import (
    CARD_FILE,
    CARD_MARKER,
    FAILURES_FILE,
    MANIFEST_FILE,
    PLAN_FILE,
    SHARD_FILE,
    SHARDS_DIR,
    OutputError,
)

LOCK_FILE = ".e6ingest.lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None


class OutputLocked(OutputError):
    """Another run holds the output folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLock:
    """An exclusive lock on an output folder for the whole of a run.

    The lock file ``.e6ingest.lock`` holds the holder's pid, host and start time. It is
    locked with ``flock``, which the system releases when the holder dies, so the lock of
    a dead process (kill -9, the OOM killer) is taken over by the next run; where
    ``flock`` is not supported, a lock naming a dead pid of this host is taken over.
    """

    def __init__(self, out: str | os.PathLike):
        self.path = Path(out) / LOCK_FILE
        self._fd: int | None = None

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}

    def _refuse(self) -> OutputLocked:
        info = self._holder()
        who = f"pid {info.get('pid', '?')} on {info.get('host', '?')}"
        since = info.get("started")
        when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if since else ""
        return OutputLocked(
            f"{self.path.parent} is in use by another e6ingest run ({who}{when}; lock file "
            f"{self.path}); wait for it to end, or stop it and rerun"
        )

    def _try_lock(self, fd: int) -> bool:
        if fcntl is None:
            return self._pid_lock()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as exc:  # a filesystem without flock
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            return self._pid_lock()

    def _pid_lock(self) -> bool:
        info = self._holder()
        pid, host = info.get("pid"), info.get("host")
        if not pid or pid == os.getpid():
            return True
        return host == socket.gethostname() and not _alive(int(pid))

    def acquire(self) -> OutputLock:
        """Take the lock, or raise :class:`OutputLocked` naming its holder."""
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        for _ in range(10):
            try:
                fd = os.open(self.path, flags, 0o644)
            except OSError as exc:
                raise OutputError(f"{self.path}: cannot create the lock file: {exc}") from None
            if not self._try_lock(fd):
                os.close(fd)
                raise self._refuse()
            try:  # the file may have been removed and made anew by its last holder
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:  # pragma: no cover - ten lost races in a row
            raise self._refuse()
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and let go of it."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(self._fd).st_ino == os.stat(self.path).st_ino:
                self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@dataclass
class OutputContents:
    """What an output folder holds: files e6ingest wrote, and everything else."""

    out: Path
    ours: list[Path] = field(default_factory=list)  # a run's files and temporaries
    foreign: list[Path] = field(default_factory=list)  # files e6ingest did not write

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


def _card_is_ours(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as f:
            return CARD_MARKER in f.read(4096)
    except (OSError, UnicodeDecodeError):
        return False


def scan_output(out: str | os.PathLike) -> OutputContents:
    """Sort what ``out`` holds into e6ingest's files and the rest, following no symlink.

    e6ingest's are its temporaries and lock, and, when the folder holds a run of its own
    (a plan or manifest carrying e6ingest's marks), the run's named files: manifest, plan,
    failures, dataset card (marked) and ``shards/NNNNN.*``. Anything else, symlinks and
    folders included, is foreign.
    """
    out = Path(out)
    contents = OutputContents(out)
    if not out.is_dir():
        return contents
    run = (out / PLAN_FILE).is_file() and _plan_is_ours(out / PLAN_FILE)
    run = run or ((out / MANIFEST_FILE).is_file() and _manifest_is_ours(out / MANIFEST_FILE))
    named = {MANIFEST_FILE, PLAN_FILE, FAILURES_FILE}

    def is_ours(entry: os.DirEntry) -> bool:
        if not entry.is_file(follow_symlinks=False):
            return False
        if is_temp_name(entry.name) or entry.name == LOCK_FILE:
            return True
        if entry.name == CARD_FILE:
            return run and _card_is_ours(Path(entry.path))
        return run and entry.name in named

    for entry in sorted(os.scandir(out), key=lambda e: e.name):
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False) and entry.name == SHARDS_DIR:
            for item in sorted(os.scandir(path), key=lambda e: e.name):
                ours = item.is_file(follow_symlinks=False) and (
                    is_temp_name(item.name) or (run and SHARD_FILE.match(item.name))
                )
                (contents.ours if ours else contents.foreign).append(Path(item.path))
        else:
            (contents.ours if is_ours(entry) else contents.foreign).append(path)
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
