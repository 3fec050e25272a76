"""Rows without an id and repeated ids: the footer's answer and the quick rising check
agree with reading every id."""

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from e6ingest.metadata import rows_without_id
from e6ingest.metadata.schemas import rows_left_out


def _write(path, ids, statistics=True, row_group_size=3):
    table = pa.table({"id": pa.array(ids, pa.int64()), "rating": ["e"] * len(ids)})
    pq.write_table(table, path, write_statistics=statistics, row_group_size=row_group_size)
    return path


@pytest.mark.parametrize("statistics", [True, False])
def test_rows_without_an_id_are_named_with_or_without_footer_statistics(tmp_path, statistics):
    path = _write(tmp_path / "m.parquet", [1, 2, 3, None, 5, 6, 7, None], statistics)
    assert rows_without_id(path, "m") == ["m row 3: no id", "m row 7: no id"]
    whole = _write(tmp_path / "whole.parquet", [1, 2, 3, 4], statistics)
    assert rows_without_id(whole) == []


@pytest.mark.parametrize(
    "ids",
    [
        pa.array([1.0, 2.0, 1.5, float("nan"), 5.0], pa.float64()),  # pandas' ids with NaN
        pa.array(["1", "2", "1.5", "abc", "5"]),  # a CSV converted by hand
    ],
)
def test_an_id_that_is_no_whole_number_is_a_row_without_id_never_another_post(tmp_path, ids):
    from e6ingest.metadata.schemas import post_id

    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"id": ids}), path)
    assert rows_without_id(path, "m") == ["m row 2: no id", "m row 3: no id"]
    frame = pl.scan_parquet(path)
    assert frame.select(post_id(frame.collect_schema())).collect()["id"].to_list() == [
        1, 2, None, None, 5,
    ]  # fmt: skip


def _plain_left_out(ids):
    """Every row without an id, or whose id comes again in a later row."""
    return [i for i, value in enumerate(ids) if value is None or value in ids[i + 1 :]]


def test_rows_left_out_match_a_plain_search_on_random_ids(tmp_path):
    rng = np.random.default_rng(7)
    for case in range(200):
        n = int(rng.integers(0, 12))
        if case % 3 == 0:  # rising, as exports are, sometimes with one step back or a tie
            ids = sorted(rng.choice(50, n, replace=False).tolist())
            if n > 1 and case % 2:
                i = int(rng.integers(1, n))
                ids[i] = ids[i - 1] - int(rng.integers(0, 2))
        else:
            ids = rng.integers(0, 8, n).tolist()
        if n and case % 5 == 0:  # rows without an id, once or more
            ids[int(rng.integers(0, n))] = None
            ids[int(rng.integers(0, n))] = None
        path = _write(tmp_path / f"{case}.parquet", ids)
        assert rows_left_out(path).tolist() == _plain_left_out(ids), ids
