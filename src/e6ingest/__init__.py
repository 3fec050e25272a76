"""e6ingest: public booru datasets (danbooru, e621) to training-ready webdataset shards."""

__version__ = "0.1.0"
