"""numpy to arrow and back without pandas: the same numbers, whatever the chunks."""

import numpy as np
import pyarrow as pa

from e6ingest.arrays import groups, repeat, running_count, stable_argsort, to_arrow, to_numpy


def test_numbers_go_to_arrow_and_back_unchanged():
    rng = np.random.default_rng(1)
    for dtype in (np.uint32, np.int64, np.uint64, np.float64):
        for n in (0, 1, 7, 1000):
            values = (rng.random(n) * 1000).astype(dtype)
            array = to_arrow(values)
            assert array.type == pa.from_numpy_dtype(dtype) and array.null_count == 0
            assert array.to_pylist() == values.tolist()
            assert np.array_equal(to_numpy(array), values)
            assert np.array_equal(to_numpy(array.slice(n // 3)), values[n // 3 :])
            chunked = pa.chunked_array([array.slice(0, n // 2), array.slice(n // 2)])
            assert np.array_equal(to_numpy(chunked), values)


def test_repeat_as_numpy_repeats():
    """``repeat`` and ``groups`` against numpy's ``repeat``: random counts with empty groups
    anywhere (first, last, all), values of several types."""
    rng = np.random.default_rng(2)
    cases = [np.zeros(0, np.int64), np.zeros(5, np.int64), np.array([0, 0, 3]), np.array([2, 0, 0])]
    cases += [rng.integers(0, 5, rng.integers(1, 60)) * (rng.random() < 0.9) for _ in range(300)]
    for counts in cases:
        expected = np.repeat(np.arange(len(counts)), counts)
        assert np.array_equal(groups(counts), expected) and groups(counts).dtype == np.int64
        for dtype in (np.int32, np.int64, np.float64, bool):
            values = (rng.random(len(counts)) * 100).astype(dtype)
            got = repeat(values, counts)
            assert got.dtype == values.dtype and np.array_equal(got, np.repeat(values, counts))


def test_running_count_counts_the_trues_before_each_item():
    """``running_count`` against a plain count: empty, all false, all true, random masks."""
    rng = np.random.default_rng(3)
    cases = [np.zeros(0, bool), np.zeros(4, bool), np.ones(6, bool)]
    cases += [rng.random(rng.integers(1, 200)) < rng.random() for _ in range(200)]
    for mask in cases:
        expected = [0]
        for value in mask.tolist():
            expected.append(expected[-1] + int(value))
        assert running_count(mask).tolist() == expected


def test_stable_argsort_orders_as_numpy_stable_argsort():
    """``stable_argsort`` against numpy's stable sort: empty, one value, many ties, values
    of every width up to 62 bits (the widest sorted the plain way), several types."""
    rng = np.random.default_rng(4)
    cases = [
        np.zeros(0, np.int64),
        np.array([5]),
        np.zeros(9, np.int64),
        np.array([2**62, 0, 2**62]),
    ]
    for _ in range(300):
        n = int(rng.integers(1, 3000))
        bits = int(rng.integers(1, 63))
        values = rng.integers(0, 2**bits, n, dtype=np.int64)
        ties = rng.random() < 0.5
        cases.append(values % max(1, n // 10) if ties else values)
    cases += [
        rng.integers(0, 2**15, 500).astype(np.int32),
        rng.integers(0, 200, 50).astype(np.uint8),
    ]
    for values in cases:
        got = stable_argsort(values)
        assert np.array_equal(got, np.argsort(values, kind="stable")), values
