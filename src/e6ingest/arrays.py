"""numpy arrays of numbers to and from arrow arrays, sharing their memory.

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
