"""A worker process imports what a shard task needs and nothing of the driver: not pull, the
planner, the captions' code tables or the tag index (each costs start time and memory in
every worker)."""

from __future__ import annotations

from e6ingest.pipeline.executor import process_pool
from tests.pipeline.worker_probe import loaded_after_task_import

DRIVER_ONLY = (
    "e6ingest.pipeline.driver", "e6ingest.pipeline.plan", "e6ingest.captions",
    "e6ingest.captions.codes", "e6ingest.captions.lookup", "e6ingest.query.index",
    "e6ingest.query.index_build", "e6ingest.dataset", "e6ingest.config", "pandas",
)  # fmt: skip


def test_a_spawned_worker_imports_no_driver_module():
    with process_pool(1) as pool:
        loaded = set(pool.submit(loaded_after_task_import).result(timeout=120))
    assert "e6ingest.pipeline.task" in loaded
    assert sorted(m for m in DRIVER_ONLY if m in loaded) == []


def test_pull_is_the_function_whatever_was_imported_first():
    """The package's names are imported on first use; a module of the package imported
    before (the driver's, to read its options) never shadows the function."""
    import subprocess
    import sys

    code = ("import e6ingest.pipeline.driver\nfrom e6ingest.pipeline import pull, RunOptions\n"
            "assert callable(pull) and pull.__name__ == 'pull', pull\nprint('ok')")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr
