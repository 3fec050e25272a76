"""The plan: written in batches of source shards, it is the plan of one pass, in order."""

from __future__ import annotations

import polars as pl
import pytest

from e6ingest import dataset
from e6ingest.captions import CaptionSpec
from e6ingest.pipeline.plan import _source_ranges, plan_fingerprint, shard_sizes, write_plan
from e6ingest.query import selection_query

SOURCE_SHARDS = 1000


@pytest.mark.parametrize("query", ["", "solo"])  # without and with an anchor tag
def test_plan_in_batches_equals_plan_in_one_pass(demo_root, tmp_path, query):
    metadata = dataset.load_metadata("e621", mirror=demo_root)
    selection = selection_query(query, ("e", "q", "s"))
    spec = CaptionSpec(quality_tag=True, rating_tag=True)
    plans = {}
    for batch_rows in (10**9, 37):
        path = tmp_path / str(batch_rows) / "plan.parquet"
        path.parent.mkdir()
        rows = write_plan(metadata, selection, path, {"run": batch_rows}, 50, SOURCE_SHARDS,
                          spec, batch_rows=batch_rows)  # fmt: skip
        assert plan_fingerprint(path) == {"run": batch_rows}
        assert [p.name for p in path.parent.iterdir()] == ["plan.parquet"]  # no temporaries
        plans[batch_rows] = pl.read_parquet(path)
        assert plans[batch_rows].height == rows
    one, batched = plans.values()
    assert len(_source_ranges(one["id"], SOURCE_SHARDS, 37)) > 3  # planned in several batches
    assert batched.equals(one)
    # Ordered by source shard then id; shards of 50 numbered in that order.
    order = one.select((pl.col("id") % SOURCE_SHARDS).alias("s"), "id")
    assert order.equals(order.sort("s", "id"))
    assert one["shard"].to_list() == [i // 50 for i in range(one.height)]
    assert one["position"].to_list() == [i % 50 for i in range(one.height)]
    assert one["caption"].str.contains("quality|masterpiece").any()


def test_empty_selection_gives_an_empty_plan(small_demo, tmp_path):
    metadata = dataset.load_metadata("e621", mirror=small_demo)
    path = tmp_path / "plan.parquet"
    query = selection_query("no_such_tag_anywhere", ())
    assert write_plan(metadata, query, path, {}, 10) == 0
    assert shard_sizes(path) == {}
    assert {"id", "caption", "shard", "position"} <= set(pl.read_parquet(path).columns)
