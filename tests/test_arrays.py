"""numpy to arrow and back without pandas: the same numbers, whatever the chunks."""

import numpy as np
import pyarrow as pa

from e6ingest.arrays import to_arrow, to_numpy


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
