"""numpy arrays of numbers to and from arrow arrays, sharing their memory, numpy's
``repeat`` for work shared by threads, and running counts of a mask.

pyarrow's own conversions (``pa.array``, ``np.asarray`` of an arrow array) import pandas on
their first call: a quarter of a second and tens of MB of a run that never uses it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def to_arrow(values: np.ndarray) -> pa.Array:
    """A numpy array of numbers as an arrow array without nulls, sharing its memory."""
    values = np.ascontiguousarray(values)
    kind = pa.from_numpy_dtype(values.dtype)
    return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(values)])


def to_numpy(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An arrow array of numbers without nulls as numpy, sharing its memory (a chunked one
    joined first)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    dtype = array.type.to_pandas_dtype()
    if not len(array):
        return np.zeros(0, dtype)
    values = np.frombuffer(array.buffers()[1], dtype)
    return values[array.offset : array.offset + len(array)]


def groups(counts: np.ndarray) -> np.ndarray:
    """For groups of ``counts`` items, one group after the other: each item's group, as
    ``np.repeat(np.arange(len(counts)), counts)`` gives it, but made by running sums, which
    let other threads run meanwhile (numpy's ``repeat`` holds the interpreter lock for its
    whole run, stopping every other captioning thread)."""
    ends = np.cumsum(counts, dtype=np.int64)
    total = int(ends[-1]) if len(ends) else 0
    starts = np.bincount(ends[:-1], minlength=total + 1)[:total]  # groups begun at each item
    return np.cumsum(starts, dtype=np.int64)


def repeat(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``np.repeat(values, counts)``, by :func:`groups`."""
    repeated: np.ndarray = values[groups(counts)]
    return repeated


def running_count(mask: np.ndarray) -> np.ndarray:
    """How many items of ``mask`` (booleans) are true before each item, and in all: ``len(mask)
    + 1`` counts, the first 0. Counted in 32 bits when they fit, over the mask made numbers
    of that type first: numpy's running sum that casts on the way (booleans to 64 bits)
    takes several times as long, and one that only casts booleans holds the interpreter
    lock, stopping every other captioning thread."""
    kind = np.int32 if len(mask) < 2**31 else np.int64
    running = np.zeros(len(mask) + 1, kind)
    np.cumsum(mask.astype(kind), out=running[1:])
    return running


def stable_argsort(values: np.ndarray) -> np.ndarray:
    """``np.argsort(values, kind="stable")`` for non-negative whole numbers. When each value
    and its index fit 63 bits together, they are sorted as one number (the value above, the
    index below: equal values keep their order) and the indices read back: a plain sort of
    numbers, which numpy does several times faster than an indirect stable one."""
    n = len(values)
    index_bits = max(n - 1, 0).bit_length()
    if not n or int(values.max()).bit_length() + index_bits > 63:
        order: np.ndarray = np.argsort(values, kind="stable")
        return order
    packed = (values.astype(np.int64) << index_bits) | np.arange(n, dtype=np.int64)
    packed.sort()
    packed &= (1 << index_bits) - 1
    return packed
