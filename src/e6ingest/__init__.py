"""e6ingest: public booru datasets (danbooru, e621) to training-ready webdataset shards.

The Python API (the same as the ``e6ingest`` command):

- ``e6ingest.pull(config, out, mirror=None, ...)``: select posts and write shards;
  ``e6ingest.make_config({...})`` builds the config from the flags' names
  (``{"rating": "e,q,s", "query": "solo", "sample": 1000}``).
- ``e6ingest.dataset``: a dataset's metadata in a notebook: ``load_metadata``, ``select``,
  ``count``, ``rating_counts``, ``top_tags``, ``captions``.
- ``e6ingest.open_shards(out)``: read a pull's output for training (a webdataset pipeline,
  split by rank and worker, bucketed batches, and the shard index as a polars frame).
- ``e6ingest.verify_output(out)``: check an output against its manifest.

Everything is imported on first use, so ``import e6ingest`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "pull": ("e6ingest.pipeline", "pull"),
    "make_config": ("e6ingest.config", "make_config"),
    "PullConfig": ("e6ingest.config", "PullConfig"),
    "PullSummary": ("e6ingest.pipeline", "PullSummary"),
    "dataset": ("e6ingest.dataset", None),
    "open_shards": ("e6ingest.readers.reader", "open_shards"),
    "verify_output": ("e6ingest.readers.verify", "verify_output"),
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'e6ingest' has no attribute {name!r}")
    module_name, attribute = _API[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
