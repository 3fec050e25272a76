"""Reading a run's output, as its consumers do: for training (``reader``: samples and
bucketed batches, ``training``, ``augment``), for checking (``verify``) and for other
trainers' layouts (``kohya``). The format they read is ``e6ingest.shards``'."""
