"""Progress as posts are done, from whichever process does them.

A task counts each post it finishes (``count_post``); the counts reach the run's driver in
batches (a few per second) through a channel: a queue from worker processes, a direct call
when the task runs in the driver. The driver turns them into ``posts`` events.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from collections.abc import Callable

Send = Callable[[int, int], None]  # (written, failed) since the last send
SEND_EVERY_SECONDS = 0.2
READ_POLL_SECONDS = 0.1  # how soon the driver's reading thread sees a stop


class PostCounter:
    """Counts finished posts and sends them on at most every ``SEND_EVERY_SECONDS``."""

    def __init__(self, send: Send):
        self._send = send
        self._written = self._failed = 0
        self._last = time.monotonic()

    def __call__(self, written: bool) -> None:
        if written:
            self._written += 1
        else:
            self._failed += 1
        if time.monotonic() - self._last >= SEND_EVERY_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Send what was counted and not sent yet."""
        if self._written or self._failed:
            self._send(self._written, self._failed)
            self._written = self._failed = 0
        self._last = time.monotonic()


_counter: PostCounter | None = None


def use_channel(send: Send | None) -> None:
    """Make the posts finished in this process go to ``send`` (None: nowhere)."""
    global _counter
    _counter = PostCounter(send) if send is not None else None


def count_post(written: bool) -> None:
    """Count one post finished by this process (written, or failed)."""
    if _counter is not None:
        _counter(written)


def flush_posts() -> None:
    """Send the posts counted so far (the end of a task)."""
    if _counter is not None:
        _counter.flush()


class ProgressChannel:
    """The driver's end: a queue that worker processes send counts to (handed to them at
    their start), read by a thread calling ``receive(written, failed)``.

    Left normally (every worker ended), it reads every count sent before it closes. Left by
    an exception (an interrupted or failed run, whose workers were killed), it stops at
    once: a worker killed while sending holds the queue's write lock for good, so nothing
    more is sent on the queue or waited for; the reading thread sees the stop within
    ``READ_POLL_SECONDS`` and counts still arriving are dropped."""

    def __init__(self, receive: Send):
        self.receive = receive
        self.queue = multiprocessing.get_context("spawn").Queue()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._read, name="e6ingest-progress", daemon=True)

    def _read(self) -> None:
        while not self._stopped.is_set():
            try:
                item = self.queue.get(timeout=READ_POLL_SECONDS)
            except queue.Empty:
                continue
            if item is None:
                return
            self.receive(*item)

    def __enter__(self) -> ProgressChannel:
        self._thread.start()
        return self

    def __exit__(self, failure: type[BaseException] | None, *exc: object) -> None:
        if failure is not None:
            self._stopped.set()
            self._thread.join(READ_POLL_SECONDS * 5)
            return
        self.queue.put(None)  # after every count sent before it
        self._thread.join()
        self.queue.close()
