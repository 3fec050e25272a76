"""A memory budget for image decoding, shared by every worker process of one machine.

Each image holds its estimated decode cost (``imaging.decode_cost``, from the header) while
its pixels are decoded; an image waits until the budget has room, and one larger than the
whole budget runs alone. So a run's image memory stays within the budget however many
workers it has and whatever hostile sizes its images claim, and the output never depends
on it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Iterator

from e6ingest.imaging import NO_BUDGET, Budget


def default_budget_bytes() -> int:
    """Half of this machine's memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not on Linux
        return 4 << 30


class MemoryBudget:
    """``total`` bytes of decoding at once, across the processes it is handed to (at their
    start: pass it to a pool's initializer)."""

    def __init__(self, total: int):
        if total < 1:
            raise ValueError(f"memory budget must be positive, not {total}")
        context = multiprocessing.get_context("spawn")
        self.total = total
        self._free = context.Value("q", total, lock=False)
        self._peak = context.Value("q", 0, lock=False)  # most bytes held at once
        self._changed = context.Condition()

    @property
    def peak(self) -> int:
        """The most bytes held at once so far."""
        with self._changed:
            peak: int = self._peak.value
            return peak

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        """Wait until ``nbytes`` (at most the whole budget) are free, and hold them."""
        n = max(0, min(nbytes, self.total))
        with self._changed:
            self._changed.wait_for(lambda: self._free.value >= n)
            self._free.value -= n
            self._peak.value = max(self._peak.value, self.total - self._free.value)
        try:
            yield
        finally:
            with self._changed:
                self._free.value += n
                self._changed.notify_all()


_current: Budget = NO_BUDGET


def use_budget(budget: Budget | None) -> None:
    """Make ``budget`` the one this process decodes under (a pool initializer)."""
    global _current
    _current = budget if budget is not None else NO_BUDGET


def current_budget() -> Budget:
    """The budget this process decodes under (no limit unless one was set)."""
    return _current
