"""e6ingest: public booru datasets (danbooru, e621) to training-ready webdataset shards."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``e6ingest.open_shards`` without importing webdataset and polars with the package.
    if name == "open_shards":
        from e6ingest.shards.reader import open_shards

        return open_shards
    raise AttributeError(f"module 'e6ingest' has no attribute {name!r}")
