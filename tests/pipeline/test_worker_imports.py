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


def test_an_index_build_and_a_pull_import_no_pandas(small_demo, tmp_path):
    """pandas is for notebooks that ask for it: building the tag index and a pull, its
    failures file included, run without importing it (about 0.2 s and 50 MB otherwise)."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom e6ingest.cli import main\n"
        f"assert main(['index', '--mirror', {str(small_demo)!r}]) == 0\n"
        f"code = main(['pull', '--mirror', {str(small_demo)!r}, '--rating', 'e,q,s', "
        f"'--out', {str(tmp_path / 'out')!r}, '--workers', '1', '--quiet'])\n"
        "print(code, 'pandas' in sys.modules)"
    )
    env = {**__import__("os").environ, "E6INGEST_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.stdout.split()[-2:] == ["0", "False"], done.stdout + done.stderr
    import polars as pl

    assert pl.read_parquet(tmp_path / "out" / "failures.parquet").height > 0  # written
