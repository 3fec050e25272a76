"""Executors run tasks; they know nothing of what a task does."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")


def default_workers() -> int:
    """The number of cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class LocalExecutor:
    """Runs tasks in a local process pool (or inline with one worker), yielding results
    as tasks finish. At most ``workers`` tasks are in flight, so memory stays flat."""

    def __init__(self, workers: int | None = None):
        self.workers = max(1, workers or default_workers())

    def run(self, fn: Callable[[T], dict], tasks: Sequence[T]) -> Iterator[dict]:
        """Run ``fn(task)`` for every task; a task's exception ends the run."""
        if self.workers == 1 or len(tasks) <= 1:
            for task in tasks:
                yield fn(task)
            return
        context = multiprocessing.get_context("spawn")
        pending = iter(tasks)
        with ProcessPoolExecutor(self.workers, mp_context=context) as pool:
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
