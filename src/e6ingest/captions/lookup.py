"""Distinct strings numbered in the order they are met, found again by hash
(:class:`StringNumbers`) or by a polars categories mapping (:class:`Numbering`).

A batch of tags is hashed twice by polars (two 64-bit hashes with seeds drawn per
:class:`StringNumbers`, so no input can be made to collide on purpose) and each hash pair
is looked up in a table of slots with numpy: no string is compared or copied per
occurrence, only the strings met for the first time are. A string sits in one of two
slots (one chosen by each hash); the few that find both taken are kept apart, sorted.
Two different strings are taken for one only if both their 64-bit hashes are equal.

Lookups read a :class:`Table` whose numbers and hashes never change: new strings make a new
table, put in place once it is complete, so threads look up without waiting for one
another. The new table fills free slots of the old one's slot array in place (copying it
for every batch with a new tag would cost more than the lookups as the vocabulary grows):
a lookup in the old table that meets a number it does not hold reads its sentinel, and
misses, as if the slot were still free.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import polars as pl

EMPTY = -1  # a string not found
FREE = np.iinfo(np.int32).max  # a free slot: past every number, so it reads the sentinel
MIN_SLOTS = 1 << 16
LOAD = 4  # slots per string, at least
CHUNK = 1 << 16  # hashes looked up at once: their temporaries stay in the CPU cache


@dataclass(frozen=True)
class Table:
    """Each number's two hashes (then a sentinel ``(0, 0)``, read for a free slot or a number
    past the last), the slots holding numbers, and the numbers without a slot, sorted by
    first hash."""

    first: np.ndarray
    second: np.ndarray
    slots: np.ndarray
    spilled: np.ndarray

    def __len__(self) -> int:
        return len(self.first) - 1

    def find(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """The number of each string by its hashes, ``EMPTY`` for those not in the table."""
        numbers: np.ndarray = self.slots[self.slot(first)].astype(np.intp)
        todo = np.flatnonzero(~self.same(numbers, first, second))
        if not len(todo):
            return numbers
        first, second = first[todo], second[todo]
        found = self.slots[self.slot(second)].astype(np.intp)
        if len(self.spilled):
            spilled = self.first[self.spilled]
            at = np.minimum(np.searchsorted(spilled, first), len(spilled) - 1)
            found = np.where(self.same(found, first, second), found, self.spilled[at])
        numbers[todo] = np.where(self.same(found, first, second), found, EMPTY)
        return numbers

    def slot(self, hashes: np.ndarray) -> np.ndarray:
        """The slot each hash chooses."""
        slots: np.ndarray = (hashes & np.uint64(len(self.slots) - 1)).astype(np.intp)
        return slots

    def same(self, numbers: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Whether each of ``numbers`` (none negative) is the string of these hashes: ``FREE``
        or a number past this table's last reads the sentinel, never equal but by a
        collision on 128 bits."""
        same: np.ndarray = self.first.take(numbers, mode="clip") == first
        same &= self.second.take(numbers, mode="clip") == second
        return same

    def with_added(self, first: np.ndarray, second: np.ndarray) -> Table:
        """A new table with these strings (by their hashes, none in this one) numbered
        after the last."""
        zero = np.zeros(1, np.uint64)
        grown = Table(
            np.concatenate([self.first[:-1], first, zero]),
            np.concatenate([self.second[:-1], second, zero]),
            self.slots,  # free slots filled in place: see the module's docstring
            self.spilled,
        )
        if len(grown) * LOAD <= len(self.slots):
            return grown._placed(np.arange(len(self), len(grown), dtype=np.int32))
        size = len(self.slots)
        while len(grown) * LOAD > size:
            size *= 2
        empty = np.full(size, FREE, np.int32)
        fresh = Table(grown.first, grown.second, empty, np.zeros(0, np.int32))
        return fresh._placed(np.arange(len(grown), dtype=np.int32))

    def _placed(self, numbers: np.ndarray) -> Table:
        """Each of ``numbers`` put in a free slot of its two, or with the spilled ones (the
        slots are this table's own: only a table not yet in use is changed)."""
        for choice in (self.first, self.second):
            slots = self.slot(choice[numbers])
            free = self.slots[slots] == FREE
            taken, first = np.unique(slots[free], return_index=True)
            self.slots[taken] = numbers[free][first]
            placed = np.zeros(len(numbers), bool)
            placed[np.flatnonzero(free)[first]] = True
            numbers = numbers[~placed]
        if not len(numbers):
            return self
        spilled = np.concatenate([self.spilled, numbers])
        spilled = spilled[np.argsort(self.first[spilled], kind="stable")]
        return Table(self.first, self.second, self.slots, spilled)


def _empty_table() -> Table:
    zero = np.zeros(1, np.uint64)
    return Table(zero, zero, np.full(MIN_SLOTS, FREE, np.int32), np.zeros(0, np.int32))


class StringNumbers:
    """Numbers for strings: 0, 1, ... in the order they are first met. :meth:`find` may be
    called from any thread; :meth:`number` makes a new table and is called by one thread
    at a time (the caller's lock), which puts it in place with :meth:`publish`."""

    def __init__(self, seed: int | None = None):
        draw = random.Random(seed)  # without a seed, from the system's randomness
        self._seeds = [draw.getrandbits(63) for _ in range(2)]
        self.table = _empty_table()

    def __len__(self) -> int:
        return len(self.table)

    def hashes(self, strings: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        """The two hashes of each of ``strings`` (no lock needed: the seeds never change)."""
        first, second = (strings.hash(seed).to_numpy() for seed in self._seeds)
        return first, second

    def find(self, strings: pl.Series) -> np.ndarray:
        """The number of each of ``strings``, ``EMPTY`` for those not met before (any
        thread; a chunk at a time, so the hashes and what is made of them stay small)."""
        table, numbers = self.table, np.empty(len(strings), np.intp)
        for start in range(0, len(strings), CHUNK):
            chunk = strings.slice(start, CHUNK)
            numbers[start : start + len(chunk)] = table.find(*self.hashes(chunk))
        return numbers

    def number(self, strings: pl.Series) -> tuple[np.ndarray, np.ndarray, Table]:
        """Numbers for ``strings`` that :meth:`find` did not find: those numbered since,
        and new ones for the rest (one caller at a time). Returns the numbers, where each
        new string is first met (in the order of the numbers given) and the table to
        :meth:`publish` once what depends on the new numbers is ready."""
        table = self.table
        first, second = self.hashes(strings)
        numbers = table.find(first, second)  # some may have been numbered meanwhile
        missing = np.flatnonzero(numbers == EMPTY)
        if not len(missing):
            return numbers, missing, table
        strings, first, second = strings.gather(missing), first[missing], second[missing]
        new = np.flatnonzero(strings.is_first_distinct().to_numpy())  # in order met
        table = table.with_added(first[new], second[new])
        numbers[missing] = table.find(first, second)
        return numbers, missing[new], table

    def publish(self, table: Table) -> None:
        """Put ``table`` (from :meth:`number`) in place for every later lookup."""
        self.table = table


class Numbering:
    """Distinct strings numbered 0, 1, ... as they are met, by a polars categories mapping of
    the object's own that grows as new strings come: a batch is numbered by one cast, from
    any thread, and no table is hashed again for each batch. A number never changes. (For
    the tags, whose numbers the rules are kept by, :class:`StringNumbers` measured faster
    with two threads: ``benchmarks/RESULTS.md``.)"""

    def __init__(self) -> None:
        self._kind = pl.Categorical(pl.Categories.random())
        # polars keeps a mapping only while a column of its kind lives (else the next cast
        # numbers from 0 again): an empty one lives as long as this object
        self._anchor = pl.Series([], dtype=self._kind)

    def numbers(self, strings: pl.Series) -> np.ndarray:
        """The number of each of ``strings`` (none missing), new ones numbered now."""
        numbers: np.ndarray = strings.cast(self._kind).to_physical().cast(pl.Int64).to_numpy()
        return numbers


class SortedTable:
    """A table of ``key`` -> ``value`` strings or numbers (one row per key), sorted once and
    searched by bisection: a batch's few keys are found without hashing a table of millions
    again for every batch, as a join or ``replace`` would."""

    def __init__(self, keys: pl.Series, values: pl.Series) -> None:
        table = pl.DataFrame({"key": keys, "value": values}).drop_nulls("key").sort("key")
        self.keys, self.values = table["key"], table["value"]

    def find(self, wanted: pl.Series) -> tuple[pl.Series, np.ndarray]:
        """For each of ``wanted``: its row's value (any row's where absent) and whether
        the table holds it."""
        if not len(self.keys):
            return self.values.clear(len(wanted)), np.zeros(len(wanted), bool)
        at = self.keys.search_sorted(wanted).clip(0, len(self.keys) - 1)
        found = (self.keys.gather(at) == wanted).fill_null(False).to_numpy()
        return self.values.gather(at), found
