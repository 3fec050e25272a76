"""``normalize`` on every core: a process pool fed with bytes, returning bytes.

The policy is handed to each worker once; images go in and WebP bytes come back in the order
they were given, with at most ``in_flight`` images in the pool at a time, so memory stays flat
however long the stream. One image failing is a result, never the end of the stream.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from e6ingest.imaging import ImagePolicy, ImageRecord, normalize
from e6ingest.pipeline.executor import default_workers
from e6ingest.sources.base import FailureKind, PostFailure

Normalized = tuple[bytes, ImageRecord]

_policy: ImagePolicy | None = None  # set in each worker by _start


def _start(policy: ImagePolicy) -> None:
    global _policy
    _policy = policy


def normalize_safely(data: bytes, policy: ImagePolicy) -> Normalized | PostFailure:
    """``normalize``, with any failure returned instead of raised."""
    try:
        return normalize(data, policy)
    except PostFailure as exc:
        return exc
    except Exception as exc:  # one bad image must never end the run
        return PostFailure(FailureKind.UNDECODABLE, f"{type(exc).__name__}: {exc}", "image")


def _work(data: bytes) -> Normalized | tuple[str, str, str]:
    result = normalize_safely(data, _policy)
    if isinstance(result, PostFailure):  # sent back as plain values
        return (result.kind.value, result.message, result.stage)
    return result


def _result(value: Normalized | tuple[str, str, str]) -> Normalized | PostFailure:
    if isinstance(value[0], str):
        return PostFailure(FailureKind(value[0]), value[1], value[2])
    return value


class ImagePool:
    """Normalises images in ``workers`` processes (default: every core)."""

    def __init__(self, policy: ImagePolicy, workers: int | None = None, in_flight: int = 0):
        self.workers = max(1, workers or default_workers())
        self.in_flight = in_flight or self.workers * 4
        context = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_start, initargs=(policy,)
        )

    def map(self, images: Iterable[bytes | None]) -> Iterator[Normalized | PostFailure | None]:
        """Each image's result in order; ``None`` in gives ``None`` out (nothing to do)."""
        pending: deque[Future | None] = deque()
        for data in images:
            pending.append(None if data is None else self._pool.submit(_work, data))
            if len(pending) >= self.in_flight:
                yield self._take(pending)
        while pending:
            yield self._take(pending)

    @staticmethod
    def _take(pending: deque) -> Normalized | PostFailure | None:
        future = pending.popleft()
        return None if future is None else _result(future.result())

    def close(self) -> None:
        """Stop the worker processes."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ImagePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def normalize_all(
    images: Iterable[bytes | None], policy: ImagePolicy, pool: ImagePool | None = None
) -> Iterator[Normalized | PostFailure | None]:
    """Each image's result in order, through ``pool`` or in this process."""
    if pool is not None:
        yield from pool.map(images)
        return
    for data in images:
        yield None if data is None else normalize_safely(data, policy)
