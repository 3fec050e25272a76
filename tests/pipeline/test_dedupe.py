"""``--drop-duplicates``: a selected post whose file (md5) a selected post of lower id has
is left out and recorded as a ``duplicate`` failure naming the kept post; without the flag
both are written."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from e6ingest.config import make_config
from e6ingest.pipeline import pull
from e6ingest.pipeline.plan import duplicates


def test_the_lowest_id_of_each_file_is_kept():
    keys = pl.DataFrame({"id": [5, 3, 9, 7, 4, 8], "md5": ["a", "a", "a", "b", None, ""]})
    dropped = duplicates(keys, pl.Series("id", [3, 5, 9, 7, 4, 8]))
    assert sorted(dropped.iter_rows()) == [(5, 3), (9, 3)]
    only_some = duplicates(keys, pl.Series("id", [5, 9, 7]))  # 3 not in the selection
    assert sorted(only_some.iter_rows()) == [(9, 5)]


def _written_ids(out) -> list[int]:
    planned = pl.read_parquet(out / "plan.parquet", columns=["id"])["id"]
    failed = set(pl.read_parquet(out / "failures.parquet")["id"].to_list())
    return sorted(i for i in planned.to_list() if i not in failed)


def _give_md5(mirror, source: int, target: int) -> None:
    """Post ``target`` gets the md5 of post ``source`` in the mirror's metadata."""
    paths = sorted(mirror.glob("**/*.parquet"))
    tables = {p: pq.read_table(p) for p in paths if "md5" in pq.read_schema(p).names}
    md5 = {}
    for table in tables.values():
        md5.update(
            zip(table.column("id").to_pylist(), table.column("md5").to_pylist(), strict=True)
        )
    for path, table in tables.items():
        ids = table.column("id").to_pylist()
        if target in ids:
            old = table.column("md5").to_pylist()
            values = [md5[source] if i == target else m for i, m in zip(ids, old, strict=True)]
            column = pa.array(values, table.schema.field("md5").type)
            pq.write_table(table.set_column(table.schema.get_field_index("md5"), "md5", column),
                           path)  # fmt: skip


@pytest.mark.slow
def test_a_repeated_file_is_written_once_and_the_other_post_is_a_duplicate(small_demo, tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(small_demo, mirror, ignore=shutil.ignore_patterns("E621_dataset_1M"))
    first = pull(make_config({"ratings": "e,q,s", "limit": 12, "query": "order:id"}),
                 tmp_path / "first", mirror, workers=1)  # fmt: skip
    kept, dropped = _written_ids(tmp_path / "first")[:2]
    assert first.written >= 2
    _give_md5(mirror, kept, dropped)
    config = {"ratings": "e,q,s", "query": f"~id:{kept} ~id:{dropped}", "shard_size": 20}
    plain = pull(make_config(config), tmp_path / "plain", mirror, workers=1)
    assert plain.written == 2
    out = tmp_path / "out"
    summary = pull(make_config({**config, "drop_duplicates": True}), out, mirror, workers=1)
    assert summary.written == 1 and summary.failed == {"duplicate": 1}
    failure = pl.read_parquet(out / "failures.parquet").row(0, named=True)
    assert failure["id"] == dropped and failure["kind"] == "duplicate"
    assert failure["stage"] == "select" and f"post {kept}," in failure["message"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["drop_duplicates"] is True
    assert manifest["totals"]["failed"] == {"duplicate": 1}
