"""What a worker process loads: run in a worker spawned as the executors spawn them."""

from __future__ import annotations

import sys


def loaded_after_task_import() -> list[str]:
    """The modules a shard-task worker holds once it can run ``run_task``."""
    import e6ingest.pipeline.task  # noqa: F401 - what unpickling a task's function imports

    return sorted(sys.modules)


def task_worker_rss() -> float:
    """The resident memory (MB) of a worker once it can run ``run_task``."""
    import e6ingest.pipeline.task  # noqa: F401

    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0
