"""Executors run tasks and yield their results; they know nothing of what a task does.

An executor gets a picklable function, the tasks (plain descriptions) and the run's worker
context (handed to every worker process once, at its start), and yields each task's result
as it finishes. ``LocalExecutor`` is a process pool on this machine; ``RayExecutor`` (in
``ray_executor``) runs the same tasks on a Ray cluster. Worker processes never outlive the
run: they die with their parent, and an interrupted run stops them at once.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import multiprocessing
import os
import signal
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import TYPE_CHECKING, Any, TypeVar

from e6ingest.core import available_cores

if TYPE_CHECKING:
    from e6ingest.pipeline.budget import MemoryBudget
    from e6ingest.pipeline.progress import Send

T = TypeVar("T")
R = TypeVar("R")
Initializer = Callable[[Any, int], None]  # (context, cores), once in each process
PARENT_POLL_SECONDS = 0.5


def die_with_parent(parent_pid: int) -> None:
    """End this process as soon as ``parent_pid`` is no longer its parent (the parent
    died: kill -9, the OOM killer), so no worker outlives its run or writes under the next."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="e6ingest-parent-watch", daemon=True).start()


def _start_worker(
    parent_pid: int, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]
) -> None:
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    if initializer is not None:
        initializer(*initargs)


@contextlib.contextmanager
def _spawned_main() -> Iterator[None]:
    """While workers start, the program's main module says it is ``spawned``'s: a worker
    then runs that empty module instead of the program again (``pipeline/spawned.py``)."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = main.__dict__.get("__spec__")
    main.__spec__ = importlib.machinery.ModuleSpec("e6ingest.pipeline.spawned", None)
    try:
        yield
    finally:
        main.__spec__ = saved


class _WorkerPool(ProcessPoolExecutor):
    """A process pool whose workers never run the program's main module again."""

    def _spawn_process(self) -> None:  # called whenever the pool starts a worker
        with _spawned_main():
            super()._spawn_process()  # type: ignore[misc]


def process_pool(
    workers: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()
) -> ProcessPoolExecutor:
    """A pool of ``workers`` fresh (spawned) processes that die with this one and never run
    the program's main module again (a script need not guard its call to ``pull``)."""
    return _WorkerPool(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(), initializer, initargs),
    )


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a pool at once: queued work dropped, running workers killed (an interrupted
    run; their unfinished shards are temporary files the next run removes)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(ProcessLookupError, AttributeError):
            process.kill()
    for process in processes:
        process.join(5)


class ClusterUnavailable(Exception):
    """The cluster an executor was told to run on cannot be reached or joined."""


class Executor(ABC):
    """Runs ``fn(task)`` for every task, yielding results as tasks finish, and offers what
    the processes running them may share: a decode-memory budget and a progress channel
    (none on a cluster, whose machines share nothing)."""

    @abstractmethod
    def run(
        self,
        fn: Callable[[T], R],
        tasks: Sequence[T],
        initializer: Initializer | None = None,
        context: Any = None,
    ) -> Iterator[R]:
        """Each task's result, as it finishes; ``initializer(context, cores)`` runs once in
        every process that runs tasks, ``cores`` being how many cores each of its tasks may
        use. A task's exception ends the run."""

    def parallel_tasks(self) -> int:
        """How many tasks run at once (the run's end is ordered for this many)."""
        return available_cores()

    def memory_budget(self, total: int) -> MemoryBudget | None:
        """A budget of ``total`` bytes that every process running tasks decodes under, or
        None when they cannot share one."""
        return None

    def progress_channel(self, receive: Send) -> contextlib.AbstractContextManager[Any]:
        """A queue tasks put their finished posts in as they go, read by ``receive`` on
        this side while the context is open; None when tasks report only by their result."""
        return contextlib.nullcontext(None)

    def on_every_node(self, fn: Callable[..., R], *args: Any) -> list[R]:
        """``fn(*args)`` once on every machine that runs tasks (here: this one)."""
        return [fn(*args)]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the executor holds (a cluster connection)."""


class LocalExecutor(Executor):
    """Runs tasks in a process pool of ``workers`` processes, yielding results as tasks
    finish, at most ``workers`` in flight so memory stays flat. With fewer tasks than
    workers, the tasks run one after the other in this process, each offered every core."""

    def __init__(self, workers: int | None = None):
        self.workers = max(1, workers or available_cores())

    def parallel_tasks(self) -> int:
        """The worker processes."""
        return self.workers

    def memory_budget(self, total: int) -> MemoryBudget:
        from e6ingest.pipeline.budget import MemoryBudget

        return MemoryBudget(total)

    @contextlib.contextmanager
    def progress_channel(self, receive: Send) -> Iterator[Any]:
        from e6ingest.pipeline.progress import ProgressChannel

        with ProgressChannel(receive) as channel:
            yield channel.queue

    def run(
        self,
        fn: Callable[[T], R],
        tasks: Sequence[T],
        initializer: Initializer | None = None,
        context: Any = None,
    ) -> Iterator[R]:
        if self.workers == 1 or len(tasks) < self.workers:
            if initializer is not None:
                initializer(context, self.workers)
            for task in tasks:
                yield fn(task)
            return
        init_args = (initializer, (context, 1)) if initializer is not None else (None, ())
        pool = process_pool(self.workers, *init_args)
        pending = iter(tasks)
        try:
            running: set[Future[R]] = set()
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
        except BaseException:
            stop_pool(pool)
            raise
        pool.shutdown(wait=True)
