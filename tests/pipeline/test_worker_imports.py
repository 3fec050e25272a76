"""A worker process imports what a shard task needs and nothing of the driver: not pull, the
planner, the captions' code tables or the tag index (each costs start time and memory in
every worker)."""

from __future__ import annotations

from e6ingest.pipeline.executor import process_pool
from tests.pipeline.worker_probe import loaded_after_task_import

DRIVER_ONLY = (
    "e6ingest.pipeline.pull", "e6ingest.pipeline.plan", "e6ingest.captions",
    "e6ingest.captions.codes", "e6ingest.captions.lookup", "e6ingest.query.index",
    "e6ingest.query.index_build", "e6ingest.dataset", "e6ingest.config", "pandas",
)  # fmt: skip


def test_a_spawned_worker_imports_no_driver_module():
    with process_pool(1) as pool:
        loaded = set(pool.submit(loaded_after_task_import).result(timeout=120))
    assert "e6ingest.pipeline.task" in loaded
    assert sorted(m for m in DRIVER_ONLY if m in loaded) == []
