"""Which samples and batches each rank and DataLoader worker reads (readers/epoch.py),
against a deliberately plain restatement over Python lists, on random indexes; and the
property a DDP loop needs: with several ranks, every part as many batches as the others."""

from __future__ import annotations

import random
from collections import Counter

import polars as pl
import pytest

from e6ingest.readers.epoch import Part, batch_plan, current_part, epoch_steps, sample_rows

BUCKETS = [(1024, 1024), (832, 1216), (1216, 832), (768, 1344)]


def _index(n: int, rng: random.Random) -> pl.DataFrame:
    buckets = [rng.choice(BUCKETS[: rng.randint(1, len(BUCKETS))]) for _ in range(n)]
    return pl.DataFrame({
        "key": [f"e621/{i}" for i in range(n)],
        "bucket_width": [b[0] for b in buckets],
        "bucket_height": [b[1] for b in buckets],
    }, schema={"key": pl.String, "bucket_width": pl.Int64, "bucket_height": pl.Int64})  # fmt: skip


def _plain_share(keys: list, buckets: list, parts: int, p: int, shuffle: bool, seed: int,
                 epoch: int) -> list[tuple]:  # fmt: skip
    """Part ``p``'s (key, bucket) pairs, in the order it reads them."""
    n = len(keys)
    rows = list(zip(keys, buckets, strict=True))[p * n // parts : (p + 1) * n // parts]
    if shuffle:
        order = list(range(len(rows)))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        rows = [rows[i] for i in order]
    return rows


def _plain_batches(rows: list[tuple], size: int, shuffle: bool, seed: int, epoch: int,
                   drop_last: bool) -> list[tuple]:  # fmt: skip
    """(bucket, keys) batches of ``rows``: each bucket's rows in order, cut every ``size``."""
    by_bucket: dict = {}
    for key, bucket in rows:
        by_bucket.setdefault(bucket, []).append(key)
    batches = []
    for bucket, keys in by_bucket.items():
        for start in range(0, len(keys), size):
            if len(keys[start : start + size]) == size or not drop_last:
                batches.append((bucket, keys[start : start + size]))
    if shuffle:
        random.Random(f"{seed}:{epoch}:batches").shuffle(batches)
    return batches


def _plain_plan(index: pl.DataFrame, part: Part, size: int, shuffle: bool, seed: int,
                epoch: int, drop_last: bool) -> list[tuple]:  # fmt: skip
    keys = index["key"].to_list()
    buckets = list(zip(index["bucket_width"], index["bucket_height"], strict=True))
    every = [_plain_batches(_plain_share(keys, buckets, part.total, p, shuffle, seed, epoch),
                            size, shuffle, seed, epoch, drop_last)
             for p in range(part.total)]  # fmt: skip
    own = every[part.index]
    if part.world_size == 1:
        return own
    wanted = min(map(len, every)) if drop_last else max(map(len, every))
    if not own and wanted:
        rows = _plain_share(keys, buckets, 1, 0, shuffle, seed, epoch)
        own = _plain_batches(rows, size, shuffle, seed, epoch, drop_last)
        start = part.index % len(own)
        own = own[start:] + own[:start]
    return [own[i % len(own)] for i in range(wanted)]


def _as_pairs(plan: list) -> list[tuple]:
    return [(bucket, chunk["key"].to_list()) for bucket, chunk in plan]


def test_batch_plans_equal_the_plain_restatement_on_random_indexes():
    rng = random.Random(7)
    for _ in range(300):
        index = _index(rng.choice([0, 1, 2, 5, 17, 64, 203]), rng)
        ranks, workers = rng.randint(1, 4), rng.randint(1, 3)
        size, shuffle, drop_last = rng.randint(1, 9), rng.random() < 0.5, rng.random() < 0.5
        seed, epoch = rng.randint(0, 3), rng.randint(0, 3)
        for rank in range(ranks):
            for worker in range(workers):
                part = Part(rank, ranks, worker, workers)
                got = batch_plan(index, part, size, shuffle, seed, epoch, drop_last)
                want = _plain_plan(index, part, size, shuffle, seed, epoch, drop_last)
                assert _as_pairs(got) == want, (index.height, part, size, shuffle, drop_last)
            plans = [_plain_plan(index, Part(rank, ranks, w, workers), size, shuffle, seed,
                                 epoch, drop_last) for w in range(workers)]  # fmt: skip
            steps = sum(map(len, plans))
            assert epoch_steps(index, ranks, workers, size, drop_last) == steps


@pytest.mark.parametrize("drop_last", [False, True])
def test_every_rank_gets_as_many_batches_as_the_others(drop_last):
    """Unequal bucket mixes per rank: a DDP loop must not wait forever on a rank that
    has run out."""
    index = pl.concat([_index(40, random.Random(1)), _index(40, random.Random(2))])
    counts = Counter()
    seen = Counter()
    for rank in range(3):
        for worker in range(2):
            plan = batch_plan(index, Part(rank, 3, worker, 2), 4, True, 0, 1, drop_last)
            counts[rank] += len(plan)
            for _, chunk in plan:
                assert chunk.height == 4 or not drop_last
                assert chunk.select("bucket_width", "bucket_height").unique().height == 1
                seen.update(chunk["key"].to_list())
    assert len(set(counts.values())) == 1
    if not drop_last:  # every sample at least once; the repeats are few
        assert set(seen) == set(index["key"])
        assert sum(seen.values()) - index.height < 3 * 2 * 4 * len(BUCKETS)


def test_one_rank_reads_every_sample_once_and_batches_them_all():
    index = _index(50, random.Random(3))
    for workers in (1, 3):
        plans = [batch_plan(index, Part(0, 1, w, workers), 4) for w in range(workers)]
        keys = [k for plan in plans for _, chunk in plan for k in chunk["key"]]
        assert sorted(keys) == sorted(index["key"])


def test_samples_of_ranks_are_as_many_each_and_cover_every_sample():
    for n in (0, 1, 3, 10, 11):
        index = _index(n, random.Random(n))
        shares = [sample_rows(index, Part(r, 2, w, 2), shuffle=True, seed=1)["key"].to_list()
                  for r in range(2) for w in range(2)]  # fmt: skip
        assert len({len(share) for share in shares}) == 1
        assert {k for share in shares for k in share} == set(index["key"])
        single = [sample_rows(index, Part(0, 1, w, 2))["key"].to_list() for w in range(2)]
        assert sorted(single[0] + single[1]) == sorted(index["key"])  # one rank: no repeat


@pytest.mark.parametrize("size", [0, -2, 2.5, True, "16"])
def test_a_batch_size_that_is_no_whole_number_over_zero_is_refused(size):
    with pytest.raises(ValueError, match="batch_size must be a whole number, at least 1"):
        batch_plan(_index(3, random.Random(0)), Part(), size)
    with pytest.raises(ValueError, match="batch_size must be a whole number, at least 1"):
        epoch_steps(_index(3, random.Random(0)), 2, 1, size, False)


def test_the_part_is_read_from_the_environment_torchrun_sets(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert current_part() == Part(1, 4, 0, 1)
    assert current_part(worker=0, num_workers=0) == Part(1, 4, 0, 1)  # a DataLoader's own
    monkeypatch.setenv("WORLD_SIZE", "four")
    with pytest.raises(ValueError, match=r"\$WORLD_SIZE is 'four', not a whole number"):
        current_part()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="no such part"):
        current_part()
