"""A selection read a batch of metadata rows at a time equals the selection read at once:
the same posts, columns and order, whatever the files, repeated or missing ids, deleted
posts, batch size, query or tag index."""

from __future__ import annotations

import random

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from e6ingest import dataset
from e6ingest.metadata import row_ranges
from tests.conftest import E621_NEWEST_ROWS

TAGS = ["solo", "duo", "fox", "red_panda", "hi_res", "2024"]
QUERIES = ["", "rating:e", "rating:s,q score:>3", "solo", "-solo fox", "fox*", "tagcount:>2",
           "id:<40"]  # fmt: skip


def _files(tmp_path, rng: random.Random, case: int) -> list:
    """One to three e621 files of random posts: ids repeated within and across files,
    some missing, some deleted, small row groups."""
    paths = []
    for number in range(rng.randint(1, 3)):
        rows = []
        for _ in range(rng.randint(0, 30)):
            post_id = None if rng.random() < 0.05 else rng.randint(1, 60)
            rows.append(dict(E621_NEWEST_ROWS[0], id=post_id, rating=rng.choice("sqe"),
                             score=rng.randint(-5, 10), is_deleted=rng.random() < 0.2,
                             tags=rng.sample(TAGS, rng.randint(0, 4))))  # fmt: skip
        path = tmp_path / f"{case}-{number}.parquet"
        schema = pa.Table.from_pylist(E621_NEWEST_ROWS).schema
        pq.write_table(pa.Table.from_pylist(rows, schema), path, row_group_size=4)
        paths.append(path)
    return paths


def _batched(data, query: str, rows: int, first: int = 0) -> pl.DataFrame:
    columns = data.select(query).collect_schema().names()
    batches = [batch.lazy() for batch in data.select_in_batches(query, columns, rows, first)]
    return pl.concat([data.select(query).clear(), *batches]).collect()


def _tag_table(tmp_path) -> str:
    """An e621 tags table putting some of the tags in other categories."""
    path = tmp_path / "tags.csv"
    path.write_text("id,name,category,post_count\n1,fox,5,9\n2,red_panda,5,3\n"
                    "3,hi_res,7,4\n4,solo,0,8\n")  # fmt: skip
    return str(path)


@pytest.mark.parametrize("index", [False, True])
def test_batches_give_the_posts_of_the_selection_in_its_order(tmp_path, index):
    rng, species = random.Random(11 + index), 0
    for case in range(15):
        files = _files(tmp_path, rng, case)
        tag_table = _tag_table(tmp_path) if case % 2 else ""
        data = dataset.open_dataset(files=files, index=index, tag_table=tag_table,
                                    include_deleted=rng.random() < 0.3)  # fmt: skip
        for query in QUERIES:
            whole = data.select(query).collect()
            got = _batched(data, query, rng.randint(1, 9), rng.choice([0, 1, 2, 5]))
            assert got.equals(whole), (case, query)
            species += int(whole["tags_species"].list.len().sum())
    assert species  # the tags table moved tags out of general


def test_row_ranges_cut_every_row_once_in_order_the_first_range_short_when_asked():
    rng = random.Random(3)
    for _ in range(300):
        total, rows, first = rng.randint(1, 40), rng.randint(1, 9), rng.randint(0, 12)
        ranges = row_ranges(total, rows, first)
        assert [r for start, end in ranges for r in range(start, end)] == list(range(total))
        assert all(0 < end - start <= rows for start, end in ranges)
        assert ranges[0][1] == min(total, first or rows, rows)
    assert row_ranges(0, 5, 2) == []


def test_a_query_that_reads_tags_is_copied_once_instead(tmp_path):
    files = _files(tmp_path, random.Random(5), 0)
    data = dataset.open_dataset(files=files, index=False)
    assert data.reads_in_batches("rating:e score:>2") and data.reads_in_batches("")
    assert not data.reads_in_batches("solo") and not data.reads_in_batches("tagcount:>2")
    assert not data.reads_in_batches("", dataset.Subset(sample=3))
    indexed = dataset.open_dataset(files=files, index=True)
    assert indexed.reads_in_batches("solo")  # the index answers: an id list


def test_captions_written_from_batches_are_those_of_the_copied_selection(tmp_path):
    """``captions --out`` reads a selection that reads no tags batch by batch: the file is
    byte for byte the one written from a copy of the selection, variants, quality tiers
    over the whole selection and the preview's rows included."""
    files = _files(tmp_path, random.Random(8), 0) + _files(tmp_path, random.Random(9), 1)
    spec = dataset.CaptionSpec(quality_tag=True, rating_tag=True, variants=("short", "full"))
    data = dataset.open_dataset(files=files)
    for query in ("", "rating:s,q"):
        posts = data.select(query)
        written, previews = [], []
        for batches in (None, data.select_in_batches(query, dataset.caption_inputs(posts), 5)):
            out = tmp_path / f"captions-{len(written)}.jsonl"
            preview = dataset.CaptionPreview(3)
            count = dataset.write_captions_of(posts, out, spec, data.tables, batch_rows=4,
                                              preview=preview, batches=batches)  # fmt: skip
            assert count == posts.select(pl.len()).collect().item() > 0
            written.append(out.read_bytes())
            previews.append(preview.frames())
        assert written[0] == written[1]
        assert all(a.equals(b) for a, b in zip(*previews, strict=True))
