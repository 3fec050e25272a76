"""One run at a time on an output folder, whatever the filesystem or a user does to the
lock file: concurrent runs without flock, a lock file deleted mid-run, a planted link."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap

import pytest

from e6ingest.outdir.lock import LOCK_FILE, OutputLock, OutputLocked
from e6ingest.shards.layout import OutputError

NO_FLOCK = textwrap.dedent(
    """
    import errno, fcntl, os, sys, time
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    fcntl.flock = no_flock
    from e6ingest.outdir.lock import OutputLock, OutputLocked
    start = float(sys.argv[2])
    while time.time() < start:
        time.sleep(0.001)
    try:
        lock = OutputLock(sys.argv[1]).acquire()
    except OutputLocked:
        print("refused", flush=True)
        sys.exit(0)
    print("locked", flush=True)
    time.sleep(2)
    lock.release()
    """
)


@pytest.fixture()
def no_flock(monkeypatch):
    _no_flock(monkeypatch)


def _no_flock(monkeypatch) -> None:
    import fcntl

    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)


def test_without_flock_only_one_of_eight_simultaneous_runs_takes_the_lock(tmp_path):
    import time

    start = time.time() + 1.5  # every process is ready by then, and starts at once
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", NO_FLOCK, str(tmp_path), str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    answers = sorted(run.communicate(timeout=60)[0].strip() for run in runs)
    assert answers == ["locked"] + ["refused"] * 7


def test_a_deleted_lock_file_does_not_let_a_second_run_in(tmp_path):
    with OutputLock(tmp_path):
        (tmp_path / LOCK_FILE).unlink()  # the folder itself is locked
        with pytest.raises(OutputLocked):
            OutputLock(tmp_path).acquire()


def test_without_flock_a_deleted_lock_file_stops_the_holder(tmp_path, no_flock):
    first = OutputLock(tmp_path).acquire()
    (tmp_path / LOCK_FILE).unlink()
    second = OutputLock(tmp_path).acquire()  # nothing left to stop it
    with pytest.raises(OutputLocked, match="removed or replaced"):
        first.check()  # ... but the first run stops before it writes on
    second.check()
    first.release()
    assert (tmp_path / LOCK_FILE).exists()  # the second run's, left alone
    second.release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_without_flock_the_lock_of_a_dead_pid_is_taken_over(tmp_path, no_flock):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    holder = {"pid": int(dead.stdout), "host": os.uname().nodename, "started": 0}
    (tmp_path / LOCK_FILE).write_text(json.dumps(holder))
    with OutputLock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    (tmp_path / LOCK_FILE).write_text(json.dumps({**holder, "pid": os.getppid()}))  # alive
    with pytest.raises(OutputLocked, match=f"pid {os.getppid()}"):
        OutputLock(tmp_path).acquire()


@pytest.mark.parametrize("flock", [True, False])
def test_a_hard_link_planted_as_the_lock_file_is_never_written_through(
    tmp_path, monkeypatch, flock
):
    if not flock:
        _no_flock(monkeypatch)
    outside = tmp_path / "precious.txt"
    outside.write_text("a user's file")
    out = tmp_path / "out"
    out.mkdir()
    os.link(outside, out / LOCK_FILE)
    with pytest.raises(OutputError, match=LOCK_FILE.replace(".", r"\.")):
        OutputLock(out).acquire()
    assert outside.read_text() == "a user's file" and (out / LOCK_FILE).exists()


def test_a_symlink_planted_as_the_lock_file_is_refused(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("a user's file")
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).symlink_to(outside)
    with pytest.raises(OutputError):
        OutputLock(out).acquire()
    assert outside.read_text() == "a user's file"
