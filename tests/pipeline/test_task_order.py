"""The order shards are run in: the plan's, except the run's last shards, heaviest first,
so that no worker waits long for the last one. The order never changes what is written
(the shards of any order are the same bytes: ``test_demo_digest``)."""

from __future__ import annotations

import random

import polars as pl

from e6ingest.pipeline.planfile import heaviest_last_first, shard_costs

MP4 = 2048 * 2048


def write_plan(path, rows):
    pl.DataFrame(rows, schema=["shard", "width", "height", "file_ext"], orient="row").write_parquet(
        path
    )


def test_a_shard_to_re_encode_costs_more_than_one_passed_through(tmp_path):
    plan = tmp_path / "plan.parquet"
    write_plan(plan, [
        (0, 1000, 1000, "webp"), (0, 1000, 1000, "WEBP"),  # kept as they are
        (1, 1000, 1000, "jpg"), (1, 1000, 1000, "png"),  # re-encoded
        (2, 3000, 3000, "webp"), (2, None, None, "webp"),  # over the budget; size unknown
    ])  # fmt: skip
    kept = shard_costs(plan, MP4, True, [0, 1, 2])
    assert kept[1] > kept[0] and kept[2] > kept[1]
    assert kept[1] == kept[0] + 2 * 1000 * 1000
    every = shard_costs(plan, MP4, False, [0, 1, 2])
    assert shard_costs(plan, MP4, True, [1]) == {1: kept[1]}
    assert every[0] == every[1] and every[2] == kept[2]


def test_the_last_shards_run_heaviest_first_and_the_rest_in_plan_order():
    numbers = list(range(20))
    costs = {n: (n * 7) % 11 for n in numbers}
    order = heaviest_last_first(numbers, costs, workers=2)
    assert order[:12] == numbers[:12]
    assert [costs[n] for n in order[12:]] == sorted((costs[n] for n in numbers[12:]), reverse=True)
    assert sorted(order) == numbers


def test_any_shards_are_each_run_once():
    rng = random.Random(0)
    for _ in range(200):
        numbers = sorted(rng.sample(range(100), rng.randint(0, 30)))
        costs = {n: rng.randint(0, 5) for n in numbers if rng.random() < 0.9}
        workers = rng.randint(1, 8)
        order = heaviest_last_first(numbers, costs, workers)
        assert sorted(order) == numbers
        if len(numbers) <= 4 * workers:  # all of them are the run's end
            assert order == sorted(numbers, key=lambda n: (-costs.get(n, 0), n))
