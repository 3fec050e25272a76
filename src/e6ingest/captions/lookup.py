"""Distinct strings numbered in the order they are met, found again by hash.

A batch of tags is hashed twice by polars (two 64-bit hashes with seeds drawn per
:class:`StringNumbers`, so no input can be made to collide on purpose) and each hash pair
is looked up in a table of slots with numpy: no string is compared or copied per
occurrence, only the strings met for the first time are. A string sits in one of two
slots (one chosen by each hash); the few that find both taken are kept apart, sorted.
Two different strings are taken for one only if both their 64-bit hashes are equal.
"""

from __future__ import annotations

import numpy as np
import polars as pl

EMPTY = -1
MIN_SLOTS = 1 << 16
LOAD = 4  # slots per string, at least


class StringNumbers:
    """Numbers for strings: 0, 1, ... in the order they are first met."""

    def __init__(self, seed: int | None = None):
        rng = np.random.default_rng(seed)
        self._seeds = [int(s) for s in rng.integers(0, 2**63, 2, dtype=np.int64)]
        # per number, its string's two hashes; then a sentinel (0, 0) read for EMPTY
        self._first = np.zeros(1, np.uint64)
        self._second = np.zeros(1, np.uint64)
        self._slots = np.full(MIN_SLOTS, EMPTY, np.int32)
        self._spilled = np.zeros(0, np.int32)  # numbers without a slot, by first hash

    def __len__(self) -> int:
        return len(self._first) - 1

    def hashes(self, strings: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        """The two hashes of each of ``strings`` (no lock needed: the seeds never change)."""
        return tuple(strings.hash(seed).to_numpy() for seed in self._seeds)

    def find(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """The number of each string by its hashes, ``EMPTY`` for those not met before."""
        numbers = self._slots[self._slot(first)]
        todo = np.flatnonzero(~self._same(numbers, first, second))
        if not len(todo):
            return numbers
        first, second = first[todo], second[todo]
        found = self._slots[self._slot(second)]
        if len(self._spilled):
            spilled = self._first[self._spilled]
            at = np.minimum(np.searchsorted(spilled, first), len(spilled) - 1)
            found = np.where(self._same(found, first, second), found, self._spilled[at])
        numbers[todo] = np.where(self._same(found, first, second), found, EMPTY)
        return numbers

    def add(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Numbers for new strings (by their hashes, each pair once, none met before)."""
        start, zero = len(self), np.zeros(1, np.uint64)
        self._first = np.concatenate([self._first[:-1], first, zero])
        self._second = np.concatenate([self._second[:-1], second, zero])
        if len(self) * LOAD > len(self._slots):
            size = len(self._slots)
            while len(self) * LOAD > size:
                size *= 2
            self._slots = np.full(size, EMPTY, np.int32)
            self._spilled = np.zeros(0, np.int32)
            start = 0
        self._place(np.arange(start, len(self), dtype=np.int32))
        return np.arange(len(self) - len(first), len(self), dtype=np.int32)

    def number(
        self, strings: pl.Series, hashes: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The number of each of ``strings``, and where each new string is first met
        (its index in ``strings``), in the order of the numbers given to them.
        ``hashes``: :meth:`hashes` of ``strings``, when already taken."""
        first, second = hashes or self.hashes(strings)
        numbers = self.find(first, second)
        missing = np.flatnonzero(numbers == EMPTY)
        if not len(missing):
            return numbers, missing
        keys, at, inverse = np.unique(first[missing], return_index=True, return_inverse=True)
        if not np.array_equal(second[missing][at][inverse], second[missing]):
            # different strings, one first hash: told apart by both (sorting pairs is slower)
            pairs = np.empty(len(missing), [("first", np.uint64), ("second", np.uint64)])
            pairs["first"], pairs["second"] = first[missing], second[missing]
            keys, at, inverse = np.unique(pairs, return_index=True, return_inverse=True)
        new = np.sort(at)  # new strings numbered in the order they appear
        added = np.empty(len(keys), np.int32)
        added[np.argsort(at, kind="stable")] = self.add(first[missing][new], second[missing][new])
        numbers[missing] = added[inverse.ravel()]
        return numbers, missing[new]

    def _slot(self, hashes: np.ndarray) -> np.ndarray:
        return (hashes & np.uint64(len(self._slots) - 1)).astype(np.intp)

    def _same(self, numbers: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Whether each of ``numbers`` is the string of these hashes (``EMPTY``, -1, reads
        the sentinel after the last string, whose hashes are 0: never equal but by a
        collision on 128 bits)."""
        return (self._first[numbers] == first) & (self._second[numbers] == second)

    def _place(self, numbers: np.ndarray) -> None:
        """Put each of ``numbers`` in a free slot of its two, or with the spilled ones."""
        for choice in (self._first, self._second):
            slots = self._slot(choice[numbers])
            free = self._slots[slots] == EMPTY
            taken, first = np.unique(slots[free], return_index=True)
            self._slots[taken] = numbers[free][first]
            placed = np.zeros(len(numbers), bool)
            placed[np.flatnonzero(free)[first]] = True
            numbers = numbers[~placed]
        if len(numbers):
            spilled = np.concatenate([self._spilled, numbers])
            self._spilled = spilled[np.argsort(self._first[spilled], kind="stable")]
