"""What a worker process loads: run in a worker spawned as the executors spawn them."""

from __future__ import annotations

import sys


def loaded_after_task_import() -> list[str]:
    """The modules a shard-task worker holds once it can run ``run_task``."""
    import e6ingest.pipeline.task  # noqa: F401 - what unpickling a task's function imports

    return sorted(sys.modules)
