"""What every process running tasks of one run shares: the machine's decode memory budget
and the channel for progress. Handed to each worker once, at its start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from e6ingest.imaging import Budget
from e6ingest.pipeline.budget import use_budget
from e6ingest.pipeline.progress import Send, use_channel


@dataclass(frozen=True)
class WorkerContext:
    """The run's shared resources (picklable at process start)."""

    budget: Budget | None = None  # a MemoryBudget, shared by the machine's processes
    posts: Any = None  # a queue of (written, failed) counts, or None

    def enter(self) -> None:
        """Use these resources in this process."""
        use_budget(self.budget)
        send: Send | None = None
        if self.posts is not None:
            queue = self.posts

            def send(written: int, failed: int) -> None:
                queue.put((written, failed))

        use_channel(send)


_task_cores = 1


def enter_context(context: WorkerContext, cores: int = 1) -> None:
    """An executor's initializer: use ``context`` in this process, whose tasks may each use
    ``cores`` cores."""
    global _task_cores
    context.enter()
    _task_cores = max(1, cores)


def task_cores() -> int:
    """The cores each task of this process may use (more than one when a run has fewer
    tasks than the machine has cores: the task normalises its images on all of them)."""
    return _task_cores
