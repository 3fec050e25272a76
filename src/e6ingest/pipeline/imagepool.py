"""``normalize`` on every core: a process pool fed with bytes, returning bytes.

The policy (and the machine's memory budget) is handed to each worker once; images go in and
WebP bytes come back in the order they were given, with at most ``in_flight`` images in the
pool at a time, so memory stays flat however long the stream. One image failing is a result,
never the end of the stream; a coding error is raised.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future

from e6ingest.core import PostFailure, available_cores
from e6ingest.imaging import (
    Budget,
    ImagePolicy,
    ImageRecord,
    normalize_or_failure,
    prepare_process,
)
from e6ingest.pipeline.budget import current_budget
from e6ingest.pipeline.context import WorkerContext
from e6ingest.pipeline.executor import process_pool, stop_pool

Normalized = tuple[bytes, ImageRecord]

_policy: ImagePolicy | None = None  # set in each worker by _start


def _start(policy: ImagePolicy, context: WorkerContext) -> None:
    global _policy
    _policy = policy
    context.enter()
    prepare_process(policy)


def normalize_here(data: bytes, policy: ImagePolicy) -> Normalized | PostFailure:
    """One image's result in this process, under its memory budget."""
    return normalize_or_failure(data, policy, current_budget())


def _work(data: bytes) -> Normalized | PostFailure:
    if _policy is None:
        raise RuntimeError("an image worker started without its policy")
    return normalize_here(data, _policy)


class ImagePool:
    """Normalises images in ``workers`` processes (default: every core)."""

    def __init__(
        self,
        policy: ImagePolicy,
        workers: int | None = None,
        in_flight: int = 0,
        budget: Budget | None = None,
    ):
        self.workers = max(1, workers or available_cores())
        self.in_flight = in_flight or self.workers * 4
        self._pool = process_pool(self.workers, _start, (policy, WorkerContext(budget)))

    def map(self, images: Iterable[bytes | None]) -> Iterator[Normalized | PostFailure | None]:
        """Each image's result in order; ``None`` in gives ``None`` out (nothing to do)."""
        pending: deque[Future[Normalized | PostFailure] | None] = deque()
        for data in images:
            pending.append(None if data is None else self._pool.submit(_work, data))
            if len(pending) >= self.in_flight:
                yield self._take(pending)
        while pending:
            yield self._take(pending)

    @staticmethod
    def _take(
        pending: deque[Future[Normalized | PostFailure] | None],
    ) -> Normalized | PostFailure | None:
        future = pending.popleft()
        return None if future is None else future.result()

    def close(self) -> None:
        """Stop the worker processes."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ImagePool:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is None:
            self.close()
        else:  # an error or Ctrl-C: do not wait for images nobody will read
            stop_pool(self._pool)


def normalize_all(
    images: Iterable[bytes | None], policy: ImagePolicy, pool: ImagePool | None = None
) -> Iterator[Normalized | PostFailure | None]:
    """Each image's result in order, through ``pool`` or in this process."""
    if pool is not None:
        yield from pool.map(images)
        return
    prepare_process(policy)
    for data in images:
        yield None if data is None else normalize_here(data, policy)
