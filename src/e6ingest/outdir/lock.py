"""One run at a time on an output folder: ``OutputLock``.

The lock is the output folder itself, locked with ``flock`` on a descriptor of the folder:
the system releases it when the holder dies (kill -9, the OOM killer), and no file that can
be deleted or replaced carries it. ``.e6ingest.lock`` beside it names the holder (pid, host,
start time) for the message a second run gets; it is always made new (written whole under a
temporary name, then linked into place), never written through, so a file planted under its
name is refused, never overwritten.

Where the filesystem has no working ``flock``, the lock file itself is the lock: whoever
links it into place first holds it; the lock of a dead pid of this host is taken over; and
the holder checks between shards (:meth:`OutputLock.check`) that its lock file is still its
own, stopping the run when it was removed or replaced.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import socket
import stat
import time
from pathlib import Path
from typing import Any

from e6ingest.core import temp_path
from e6ingest.shards.layout import OutputError

LOCK_FILE = ".e6ingest.lock"
NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]


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


def _flock(fd: int) -> bool | None:
    """Lock ``fd`` exclusively: True when taken, False when another holds it, None when
    the filesystem has no working ``flock``."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno not in NO_FLOCK:
            raise
        return None


class OutputLock:
    """An exclusive lock on an output folder for the whole of a run (see the module doc)."""

    def __init__(self, out: str | os.PathLike[str]):
        self.out = Path(out)
        self.path = self.out / LOCK_FILE
        self._dir_fd: int | None = None
        self._held = False  # whether this run made the lock file (its token in _info)
        self._info: dict[str, Any] = {}

    def _holder(self) -> dict[str, Any]:
        """What the lock file says of its holder ({} when unreadable or not a file)."""
        try:
            if not stat.S_ISREG(os.lstat(self.path).st_mode):
                return {}
            info = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError, UnicodeDecodeError):
            return {}
        return info if isinstance(info, dict) else {}

    def _refuse(self) -> OutputLocked:
        info = self._holder()
        who = f"pid {info.get('pid', '?')} on {info.get('host', '?')}"
        since = info.get("started")
        try:
            when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(float(since)))  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError, OSError):
            when = ""
        return OutputLocked(
            f"{self.out} is in use by another e6ingest run ({who}{when}; lock file "
            f"{self.path}); wait for it to end, or stop it and rerun"
        )

    def _check_leftover(self) -> None:
        """A lock file left where this run is about to make its own: refused unless it is
        a plain file of e6ingest's (one link, holder JSON); e6ingest's is removed."""
        try:
            found = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISREG(found.st_mode) or found.st_nlink != 1 or "pid" not in self._holder():
            raise OutputError(
                f"{self.path} is not a lock file e6ingest made (a link, a folder or another "
                "file under its name); e6ingest never writes through it: remove it and rerun"
            )
        self.path.unlink()

    def _write(self) -> bool:
        """Make the lock file: written whole under a temporary name, linked into place;
        False when a lock file appeared there first."""
        self._info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                      "run": secrets.token_hex(8)}  # fmt: skip
        tmp = temp_path(self.path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0))
        try:
            os.write(fd, json.dumps(self._info).encode())
        finally:
            os.close(fd)
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
        self._held = True
        return True

    def _still_ours(self) -> bool:
        """Whether the lock file is the one this run made (its run token; inodes of a
        removed file are reused)."""
        return self._held and self._holder().get("run") == self._info.get("run")

    def _take_over_stale(self) -> bool:
        """Without flock: remove a lock file naming a dead pid of this host; True when it
        went (renamed aside first, and removed only when it is the one judged stale)."""
        info = self._holder()
        pid, host = info.get("pid"), info.get("host")
        if not isinstance(pid, int) or host != socket.gethostname() or _alive(pid):
            return False
        aside = temp_path(self.path)
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True  # another run removed it: try to take the lock again
        try:
            moved = json.loads(aside.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            moved = None
        if moved != info:  # another run's new lock was moved: put it back
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
            aside.unlink()
            return False
        aside.unlink()
        return True

    def acquire(self) -> OutputLock:
        """Take the lock, or raise :class:`OutputLocked` naming its holder."""
        try:
            self._dir_fd = os.open(self.out, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as exc:
            raise OutputError(f"{self.out}: cannot open the folder to lock it: {exc}") from None
        try:
            locked = _flock(self._dir_fd)
            if locked is False:
                raise self._refuse()
            if locked:  # the folder is ours: any lock file is a dead run's (or not ours)
                self._check_leftover()
                if not self._write():
                    raise self._refuse()
                return self
            for _ in range(3):  # no flock: the lock file is the lock
                if self._write():
                    return self
                if not self._take_over_stale():
                    break
            raise self._refuse()
        except BaseException:
            os.close(self._dir_fd)
            self._dir_fd = None
            raise

    def check(self) -> None:
        """Raise :class:`OutputLocked` when this run's lock file was removed or replaced
        (where there is no ``flock``, another run may then hold the folder)."""
        if self._held and not self._still_ours():
            raise OutputLocked(
                f"{self.path} was removed or replaced while this run held it; stopped so "
                "that two runs never write one folder: rerun once no other run uses it"
            )

    def release(self) -> None:
        """Remove this run's lock file and let go of the folder."""
        if self._dir_fd is None:
            return
        if self._still_ours():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        os.close(self._dir_fd)
        self._dir_fd = None
        self._held = False

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
