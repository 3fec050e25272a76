"""What every process running tasks of one run shares: the machine's decode memory budget
and the channel for progress. Handed to each worker once, at its start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from e6ingest.pipeline.budget import MemoryBudget, use_budget
from e6ingest.pipeline.progress import Send, use_channel


@dataclass(frozen=True)
class WorkerContext:
    """The run's shared resources (picklable at process start)."""

    budget: MemoryBudget | None = None
    posts: Any = None  # a queue of (written, failed) counts, or None

    def enter(self, send: Send | None = None) -> None:
        """Use these resources in this process; ``send`` instead of the queue when the
        process is the driver itself."""
        use_budget(self.budget)
        if send is None and self.posts is not None:
            queue = self.posts

            def send(written: int, failed: int) -> None:
                queue.put((written, failed))

        use_channel(send)


def enter_context(context: WorkerContext) -> None:
    """A pool initializer: use ``context`` in the new worker."""
    context.enter()
