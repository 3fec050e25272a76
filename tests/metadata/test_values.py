"""Values a metadata file gives that e6ingest reads as unknown are said, naming the file,
the column, a row and its value; the real exports' rows raise no such warning."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from e6ingest import dataset
from e6ingest.cli import main
from e6ingest.metadata.values import file_warnings, unreadable_values
from tests.conftest import E621_2024_ROWS


def _rows_with(path, **changed):
    rows = [{**row, **changed} for row in E621_2024_ROWS]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_the_real_exports_rows_raise_no_warning(danbooru_sample, e621_2024_sample,
                                                e621_newest_sample):  # fmt: skip
    for path in (danbooru_sample, e621_2024_sample, e621_newest_sample):
        assert file_warnings(path) == []


@pytest.mark.parametrize(
    ("changed", "said"),
    [
        ({"score": "12x"}, "column 'score' row 0: '12x' is not a whole number (2 of the first 2"),
        ({"image_width": 581.5}, "column 'image_width' row 0: 581.5 is not a whole number"),
        ({"created_at": "04/07/2024"}, "'04/07/2024' is not a date in a format e6ingest reads"),
        ({"is_deleted": "maybe"}, "column 'is_deleted' row 0: 'maybe' is not true or false"),
        ({"rating": "E"}, "column 'rating' row 0: 'E' is not a rating of e621 (s, q, e)"),
    ],
)
def test_a_value_read_as_unknown_is_said(tmp_path, changed, said):
    path = _rows_with(tmp_path / "converted.parquet", **changed)
    (message,) = unreadable_values(path)
    assert message.startswith(f"{path}: ") and said in message


def test_numbers_written_as_text_that_read_raise_no_warning(tmp_path):
    path = _rows_with(tmp_path / "converted.parquet", score="12", fav_count="3",
                      created_at="2024-04-07 10:00:00", is_deleted="false")  # fmt: skip
    assert unreadable_values(path) == []


def test_a_date_query_on_dates_in_no_known_format_warns(tmp_path, capsys):
    """``date:2007`` answers 0 here, as the dates are unknown: the user is told why."""
    path = _rows_with(tmp_path / "converted.parquet", created_at="10.02.2007")
    assert main(["inspect", "--metadata", str(path), "--query", "date:2007", "--count"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "0"
    assert f"{path}: column 'created_at' row 0: '10.02.2007' is not a date" in err
    assert "date: queries, order:date and date tags skip such posts" in err


def test_rows_without_an_id_are_said_to_be_left_out(tmp_path):
    rows = [{**E621_2024_ROWS[0], "id": None}, *E621_2024_ROWS]
    path = tmp_path / "holes.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    heard: list[str] = []
    for index in (False, True):  # the scan and the tag index alike
        data = dataset.open_dataset(files=[path], warn=heard.append, index=index)
        assert data.count() == 1  # post 14 (15 is deleted); the row without an id is no post
        assert data.count("rating:e") == 1 and data.select("").collect()["id"].to_list() == [14]
    assert f"{path}: 1 rows have no id (the first: row 0); they are no posts" in "\n".join(heard)
