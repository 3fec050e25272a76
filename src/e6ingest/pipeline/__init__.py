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

from e6ingest.pipeline.executor import Executor, LocalExecutor
from e6ingest.pipeline.output import OutputConflict
from e6ingest.pipeline.plan import EmptySelection
from e6ingest.pipeline.pull import RunOptions, pull
from e6ingest.pipeline.results import PullSummary

__all__ = [
    "EmptySelection",
    "Executor",
    "LocalExecutor",
    "OutputConflict",
    "PullSummary",
    "RunOptions",
    "pull",
]
