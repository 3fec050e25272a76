"""The pipeline: plan a run, run one task per output shard on an executor, write the
run's results.

The flow goes one way: ``pull`` (the driver) loads the manifest, holds the output folder
(``output``), pins commits and reads the metadata (``sourcing``), writes the plan
(``plan``: query -> selection -> one file per range of source shards -> captions -> rows),
hands one :class:`~e6ingest.pipeline.task.ShardTask` per output shard to an executor
(``executor``: local processes; ``ray_executor``: a Ray cluster), each task fetching
(sources), normalising (imaging, under the machine's ``budget``) and writing (shards) its
shard and returning its typed stats, and finally streams the stats into the failures, the
manifest and the dataset card (``results``). Tasks carry what they need by value;
executors know nothing of what a task does.
"""

import importlib
from typing import Any

# Imported on first use: a worker process imports ``pipeline.task`` (and this package with
# it) and must not load the driver's planner, pull, captions or tag index on the way.
_API = {
    "ClusterUnavailable": "e6ingest.pipeline.executor",
    "EmptySelection": "e6ingest.pipeline.plan",
    "Executor": "e6ingest.pipeline.executor",
    "LocalExecutor": "e6ingest.pipeline.executor",
    "OutputConflict": "e6ingest.pipeline.output",
    "PullSummary": "e6ingest.pipeline.results",
    "RunOptions": "e6ingest.pipeline.driver",
    "pull": "e6ingest.pipeline.driver",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'e6ingest.pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value
