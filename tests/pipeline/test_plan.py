"""The plan: written in batches of source shards, it is the plan of one pass, in order."""

from __future__ import annotations

import polars as pl
import pytest

from e6ingest import dataset
from e6ingest.captions import CaptionSpec
from e6ingest.captions.variants import posts_per_batch
from e6ingest.pipeline.plan import PlanRequest, _source_ranges, write_plan
from e6ingest.pipeline.planfile import plan_fingerprint, shard_sizes
from e6ingest.query import selection_query
from e6ingest.query.subset import Subset

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
        request = PlanRequest(selection, 50, SOURCE_SHARDS, spec, batch_rows=batch_rows)
        rows = write_plan(metadata, request, path, {"fingerprint": {"run": batch_rows}})
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


def test_posts_with_variants_are_planned_fewer_at_a_time_and_alike(demo_root, tmp_path):
    metadata = dataset.load_metadata("e621", mirror=demo_root)
    selection = selection_query("", ("e", "q", "s"))
    spec = CaptionSpec(variants="standard", max_tokens=75)  # the caption and 3 variants
    assert posts_per_batch(120, spec) == 30 and posts_per_batch(120, CaptionSpec()) == 120
    plans = []
    for batch_rows in (10**9, 120):
        path = tmp_path / str(batch_rows) / "plan.parquet"
        path.parent.mkdir()
        write_plan(metadata, PlanRequest(selection, 50, SOURCE_SHARDS, spec,
                                         batch_rows=batch_rows), path)  # fmt: skip
        plans.append(pl.read_parquet(path))
    one, batched = plans
    assert len(_source_ranges(one["id"], SOURCE_SHARDS, 30)) > 3
    assert batched.equals(one) and one["caption_variants"].struct.field("short").len() > 100


@pytest.mark.parametrize("query", ["", "solo"])
def test_a_sample_plans_the_rows_a_full_run_plans_for_its_posts(demo_root, tmp_path, query):
    """A sample reads only its posts' rows, yet each is planned as the full run plans it
    (quality tags from the whole selection's scores), and it is the sample Subset picks:
    read at once when it is planned in one part, streamed to disk when in several."""
    metadata = dataset.load_metadata("e621", mirror=demo_root)
    selection = selection_query(query, ("e", "q", "s"))
    spec = CaptionSpec(quality_tag=True, rating_tag=True)
    sample = Subset(sample=40, seed=5)
    plans = {}
    for name, subset, batch_rows in (("full", Subset(), 10**9), ("sample", sample, 10**9),
                                     ("batched", sample, 12)):  # fmt: skip
        path = tmp_path / f"{name}.parquet"
        request = PlanRequest(selection, 50, SOURCE_SHARDS, spec, subset=subset,
                              batch_rows=batch_rows)  # fmt: skip
        write_plan(metadata, request, path)
        plans[name] = pl.read_parquet(path).drop("shard", "position").sort("id")
    picked = sample.pick(selection.apply(metadata)).collect()["id"]
    assert plans["sample"].height == 40 and set(plans["sample"]["id"]) == set(picked)
    assert plans["sample"].equals(plans["full"].filter(pl.col("id").is_in(picked.implode())))
    assert plans["batched"].equals(plans["sample"])


def test_empty_selection_gives_an_empty_plan(small_demo, tmp_path):
    metadata = dataset.load_metadata("e621", mirror=small_demo)
    path = tmp_path / "plan.parquet"
    query = selection_query("no_such_tag_anywhere", ())
    assert write_plan(metadata, PlanRequest(query, 10), path) == 0
    assert shard_sizes(path) == {}
    assert {"id", "caption", "shard", "position"} <= set(pl.read_parquet(path).columns)


def _newest_rows(rows: list[dict], path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.conftest import E621_NEWEST_ROWS

    base = E621_NEWEST_ROWS[0]
    pq.write_table(pa.Table.from_pylist([{**base, **row} for row in rows]), path)
    return dataset.load_metadata(files=[path])


def test_a_repeated_id_is_planned_once_from_its_last_row(tmp_path):
    metadata = _newest_rows(
        [{"id": 7, "tags": ["old", "solo"]}, {"id": 8, "tags": ["solo"]},
         {"id": 7, "tags": ["new", "solo"]}],
        tmp_path / "table.parquet",
    )  # fmt: skip
    path = tmp_path / "plan.parquet"
    assert write_plan(metadata, PlanRequest(selection_query("solo", ()), 10), path) == 2
    plan = pl.read_parquet(path)
    assert sorted(plan["id"]) == [7, 8]
    assert plan.filter(pl.col("id") == 7)["caption"][0] == "new, solo"


def test_a_repeated_id_is_its_last_row_for_every_question(tmp_path):
    """Not a blend of its rows: a query matching only an earlier row selects nothing."""
    rows = [{"id": 7, "tags": [f"r{i}_{j}" for j in range(40)] + ["common"]} for i in range(5)]
    path = tmp_path / "table.parquet"
    metadata = _newest_rows([*rows, {"id": 8, "tags": ["common"]}], path)
    for index in (True, False):
        data = dataset.open_dataset(files=[path], index=index)
        assert data.count(data.query("common")) == 2
        assert data.count(data.query("r0_1")) == 0 and data.count(data.query("r4_1")) == 1
    plan_path = tmp_path / "plan.parquet"
    write_plan(metadata, PlanRequest(selection_query("common", ()), 10), plan_path)
    planned = pl.read_parquet(plan_path).filter(pl.col("id") == 7)
    assert planned.height == 1
    assert planned["tags_general"][0].to_list() == [f"r4_{j}" for j in range(40)] + ["common"]


def test_tags_holding_line_breaks_give_one_line_captions(tmp_path):
    tags = ["solo\nfocus", "red\r\nhair", "tab\tbed", "nul\x00esc\x1b[31mred", "bel\x07del\x7f",
            "next\u0085line\u2028para\u2029end"]  # fmt: skip
    metadata = _newest_rows([{"id": 9, "tags": tags}], tmp_path / "t.parquet")
    path = tmp_path / "plan.parquet"
    write_plan(metadata, PlanRequest(selection_query("focus", ()), 10), path)
    caption = pl.read_parquet(path)["caption"][0]
    assert caption.isprintable() and caption.splitlines() == [caption]
    assert caption == ("solo, focus, red, hair, tab, bed, nul, esc, [31mred, bel, del, next, "
                       "line, para, end")  # fmt: skip


@pytest.mark.slow
def test_a_row_without_an_id_is_recorded(small_demo, tmp_path):
    import shutil

    import pyarrow.parquet as pq

    from e6ingest.config import make_config
    from e6ingest.pipeline import pull

    mirror = tmp_path / "mirror"
    shutil.copytree(small_demo, mirror)
    table_path = mirror / "deepghs/e621_newest/table.parquet"
    table = pq.read_table(table_path)
    ids = table.column("id").to_pylist()
    ids[1] = None
    table = table.set_column(table.schema.get_field_index("id"), "id", [ids])
    pq.write_table(table, table_path)
    out = tmp_path / "out"
    summary = pull(make_config({"shard_size": 20}), out, mirror, workers=1)
    failures = pl.read_parquet(out / "failures.parquet").filter(pl.col("kind") == "invalid")
    assert failures.height == 1 == summary.failed["invalid"]
    assert failures["message"][0] == "deepghs/e621_newest/table.parquet row 1: no id"
    assert failures["id"][0] is None


def test_a_small_pull_makes_enough_shards_without_a_shard_size(tmp_path):
    from e6ingest.pipeline.plan import auto_shard_size

    sizes = [auto_shard_size(n) for n in (1, 31, 100, 1000, 32_000, 10**7)]
    assert sizes == [1, 1, 4, 32, 1000, 1000]
    metadata = _newest_rows([{"id": i, "tags": ["solo"]} for i in range(1, 101)],
                            tmp_path / "t.parquet")  # fmt: skip
    write_plan(metadata, PlanRequest(selection_query("solo", ())), tmp_path / "plan.parquet")
    shards = pl.read_parquet(tmp_path / "plan.parquet")["shard"]
    assert shards.n_unique() == 25 and shards.value_counts()["count"].max() == 4


def test_rows_without_an_id_are_never_planned(tmp_path):
    """A metadata row without an id can be no post: the plan of a file holding such rows
    is the plan of the file without them, in one batch or in several."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from e6ingest.metadata import scan_files
    from tests.conftest import E621_2024_ROWS

    rows = [dict(E621_2024_ROWS[0], id=i, is_deleted="f") for i in range(1, 121)]
    holed = [dict(r, id=None) if r["id"] % 7 == 0 else r for r in rows]
    clean = [r for r in holed if r["id"] is not None]
    selection = selection_query("", ("e", "q", "s"))
    plans = []
    for name, table in (("holed", holed), ("clean", clean)):
        metadata_file = tmp_path / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(table), metadata_file)
        for batch_rows in (10**9, 25):
            path = tmp_path / f"{name}-{batch_rows}.parquet"
            request = PlanRequest(
                selection, 50, SOURCE_SHARDS, CaptionSpec(), batch_rows=batch_rows
            )
            write_plan(scan_files([metadata_file]), request, path)
            plans.append(pl.read_parquet(path))
    assert plans[0]["id"].null_count() == 0 and plans[0].height == len(clean)
    assert all(plan.equals(plans[0]) for plan in plans[1:])


@pytest.mark.slow
def test_a_continued_run_says_its_metadata_changed_since_it_was_planned(small_demo, tmp_path):
    """A mirror updated in place between two runs of one output: the second goes on with the
    posts planned then, and says so, naming the file; another output is planned afresh."""
    import shutil

    import pyarrow.parquet as pq

    from e6ingest.config import make_config
    from e6ingest.pipeline import pull
    from e6ingest.pipeline.events import Warned

    mirror = tmp_path / "mirror"
    shutil.copytree(small_demo, mirror, ignore=shutil.ignore_patterns("E621_dataset_1M"))
    config = make_config({"limit": 4, "query": "order:id", "shard_size": 2})
    out = tmp_path / "out"

    def warnings() -> list[str]:
        heard: list[str] = []
        pull(config, out, mirror, workers=1, progress=lambda e: heard.extend(
            [e.message] if isinstance(e, Warned) else []))  # fmt: skip
        return [w for w in heard if "changed since" in w]

    first = warnings()
    assert first == [] and warnings() == []  # continued, nothing changed
    table_path = mirror / "deepghs/e621_newest/table.parquet"
    table = pq.read_table(table_path)
    pq.write_table(table.slice(1), table_path)  # its first post gone
    again = warnings()
    assert len(again) == 1
    assert again[0].startswith("deepghs/e621_newest/table.parquet changed since this output")
    assert "another --out" in again[0]
    out = tmp_path / "other"
    assert warnings() == []
