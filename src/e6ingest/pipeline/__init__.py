"""The pipeline: plan a run, run one task per output shard on an executor, write the
run's results."""

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
