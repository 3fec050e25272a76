"""The pipeline: plan a run, run one task per output shard, write the run's results."""

from e6ingest.pipeline.pull import OutputConflict, PullSummary, pull

__all__ = ["OutputConflict", "PullSummary", "pull"]
