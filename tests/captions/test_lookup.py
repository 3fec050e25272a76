"""Strings numbered as they are met: by hash (``StringNumbers``) and by a polars categories
mapping (``Numbering``); one number per distinct string, in the order first met."""

from __future__ import annotations

import gc
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl
import pytest

from e6ingest.captions import lookup
from e6ingest.captions.lookup import Numbering, StringNumbers


def _number(numbers: StringNumbers, strings: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """As a caller numbers strings: find, then number those not found."""
    got = numbers.find(strings)
    missing = np.flatnonzero(got < 0)
    found, new, table = numbers.number(strings.gather(missing))
    got[missing] = found
    numbers.publish(table)
    return got, missing[new]


def _check(numbers: StringNumbers, batches: list[list[str]]) -> dict[str, int]:
    seen: dict[str, int] = {}
    for words in batches:
        before = len(numbers)
        got, new = _number(numbers, pl.Series(words, dtype=pl.String))
        fresh = [w for w in dict.fromkeys(words) if w not in seen]
        assert [words[i] for i in new] == fresh  # each new string once, where first met
        assert got[new].tolist() == list(range(before, before + len(fresh)))
        for word, number in zip(words, got.tolist(), strict=True):
            assert seen.setdefault(word, number) == number
    assert len(set(seen.values())) == len(seen) == len(numbers)
    return seen


def test_numbers_survive_growth_and_full_slots(monkeypatch):
    """A tiny table grows many times and strings find both their slots taken: every string
    keeps its number across batches and two strings never share one."""
    monkeypatch.setattr(lookup, "MIN_SLOTS", 8)
    rng = np.random.default_rng(0)
    for seed in range(5):
        numbers = StringNumbers(seed)
        batches = [[f"tag_{i}" for i in rng.integers(0, 3000, rng.integers(0, 2000))]
                   for _ in range(8)]  # fmt: skip
        _check(numbers, batches)
        assert len(numbers.table.spilled)  # some strings found both slots taken


def test_same_first_hash_told_apart_by_the_second(monkeypatch):
    """Different strings whose first hashes are equal still get their own numbers."""
    numbers = StringNumbers(1)
    real = numbers.hashes

    def clashing(strings: pl.Series):
        first, second = real(strings)
        return np.zeros_like(first), second  # every first hash the same

    monkeypatch.setattr(numbers, "hashes", clashing)
    seen = _check(numbers, [["a", "b", "a", "c"], ["c", "d", "b", "e", "a"]])
    assert seen == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4}


def test_empty_and_repeated():
    numbers = StringNumbers()
    got, new = _number(numbers, pl.Series([], dtype=pl.String))
    assert got.tolist() == [] and new.tolist() == []
    _check(numbers, [["", "x", "", "x"], ["x", ""]])


@pytest.mark.parametrize("seed", [0, 1])
def test_numbers_do_not_depend_on_the_seeds(seed):
    words = ["fox", "red_panda", "fox", "^_^", "long hair", "long_hair"]
    got, _ = _number(StringNumbers(seed), pl.Series(words))
    assert got.tolist() == [0, 1, 0, 2, 3, 4]


def test_strings_numbered_meanwhile_keep_their_numbers():
    """Two threads look up the same new strings in one table; the second to number them
    finds the numbers the first gave, and the table in use changes only when published."""
    numbers = StringNumbers(3)
    one, two = pl.Series(["fox", "cat"]), pl.Series(["dog", "cat", "fox"])
    assert numbers.find(one).tolist() == [-1, -1] and numbers.find(two).tolist() == [-1] * 3
    got, new, table = numbers.number(one)
    assert got.tolist() == [0, 1] and new.tolist() == [0, 1]
    assert numbers.find(one).tolist() == [-1, -1]  # not yet published
    numbers.publish(table)
    got, new, table = numbers.number(two)
    assert got.tolist() == [2, 1, 0] and new.tolist() == [0]
    numbers.publish(table)
    assert numbers.find(two).tolist() == [2, 1, 0]


def test_lookups_in_chunks(monkeypatch):
    monkeypatch.setattr(lookup, "CHUNK", 3)
    words = [f"t{i % 5}" for i in range(20)]
    seen = _check(StringNumbers(4), [words, words[::-1]])
    assert seen == {f"t{i}": i for i in range(5)}


def test_an_old_table_still_answers_for_its_own_strings(monkeypatch):
    """A lookup holding the table of before keeps finding that table's strings and misses
    the new ones, while new tables fill its free slots in place (and grow past it)."""
    monkeypatch.setattr(lookup, "MIN_SLOTS", 8)
    numbers = StringNumbers(5)
    old_words = pl.Series([f"old_{i}" for i in range(3)])
    _number(numbers, old_words)
    old = numbers.table
    for batch in range(6):
        _number(numbers, pl.Series([f"new_{batch}_{i}" for i in range(5)]))
        assert old.find(*numbers.hashes(old_words)).tolist() == [0, 1, 2]
        new = pl.Series([f"new_{batch}_{i}" for i in range(5)])
        assert old.find(*numbers.hashes(new)).tolist() == [-1] * 5


def test_numbers_in_the_order_met_kept_across_batches():
    """Each new string gets the next number where first met; a string met again, in a
    later batch whose earlier columns are gone, keeps its number."""
    numbering = Numbering()
    first = numbering.numbers(pl.Series(["fox", "cat", "fox", ""]))
    assert first.tolist() == [0, 1, 0, 2]
    del first
    gc.collect()
    again = numbering.numbers(pl.Series(["owl", "", "cat", "owl", "Pokémon"]))
    assert again.tolist() == [3, 2, 1, 3, 4]
    assert numbering.numbers(pl.Series([], dtype=pl.String)).tolist() == []
    assert Numbering().numbers(pl.Series(["cat"])).tolist() == [0]  # each its own


def test_numbers_from_threads_are_one_per_string():
    """Batches numbered by four threads at once: every string one number, no two strings
    the same, and the same numbers when asked again."""
    rng = random.Random(2)
    words = [f"tag_{i}" for i in range(5000)]
    batches = [rng.choices(words, k=3000) for _ in range(24)]
    numbering = Numbering()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda b: numbering.numbers(pl.Series(b)), batches))
    seen: dict[str, int] = {}
    for batch, numbers in zip(batches, results, strict=True):
        for word, number in zip(batch, numbers.tolist(), strict=True):
            assert seen.setdefault(word, number) == number
    assert len(set(seen.values())) == len(seen)
    assert sorted(seen.values()) == list(range(len(seen)))
    for batch, numbers in zip(batches, results, strict=True):
        assert numbering.numbers(pl.Series(batch)).tolist() == numbers.tolist()
