"""Executors run tasks; they know nothing of what a task does."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
PARENT_POLL_SECONDS = 0.5


def die_with_parent(parent_pid: int) -> None:
    """End this process as soon as ``parent_pid`` is no longer its parent (the parent
    died: kill -9, the OOM killer), so no worker outlives its run or writes under the next."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="e6ingest-parent-watch", daemon=True).start()


def _start_worker(parent_pid: int, initializer: Callable | None, initargs: tuple) -> None:
    die_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


def process_pool(
    workers: int, initializer: Callable | None = None, initargs: tuple = ()
) -> ProcessPoolExecutor:
    """A pool of ``workers`` fresh (spawned) processes that die with this one."""
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(), initializer, initargs),
    )


def default_workers() -> int:
    """The number of cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class LocalExecutor:
    """Runs tasks in a local process pool (or inline with one worker), yielding results
    as tasks finish. At most ``workers`` tasks are in flight, so memory stays flat."""

    def __init__(
        self, workers: int | None = None, initializer: Callable | None = None, initargs=()
    ):
        self.workers = max(1, workers or default_workers())
        self.initializer, self.initargs = initializer, tuple(initargs)

    def run(self, fn: Callable[[T], dict], tasks: Sequence[T]) -> Iterator[dict]:
        """Run ``fn(task)`` for every task; a task's exception ends the run."""
        if self.workers == 1 or len(tasks) <= 1:
            if self.initializer is not None:
                self.initializer(*self.initargs)
            for task in tasks:
                yield fn(task)
            return
        pending = iter(tasks)
        with process_pool(self.workers, self.initializer, self.initargs) as pool:
            running: set[Future] = set()
            for task in pending:
                running.add(pool.submit(fn, task))
                if len(running) >= self.workers:
                    break
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()
                    for task in pending:
                        running.add(pool.submit(fn, task))
                        break
                    yield result
