"""Quality tiers' score thresholds, counted by distinct score, against the plain sort."""

from __future__ import annotations

import random

import polars as pl
import pytest

from e6ingest.captions import CaptionSpec, score_thresholds
from tests.captions.reference import quality_thresholds


def _posts(rng: random.Random) -> list[dict]:
    ratings = rng.sample(["g", "s", "q", "e"], rng.randint(1, 4))
    spread = rng.choice([3, 50, 100_000])
    return [
        {
            "rating": rng.choice(ratings),
            "score": None if rng.random() < 0.1 else rng.randint(-spread // 3, spread),
        }
        for _ in range(rng.randint(1, 400))
    ]


@pytest.mark.parametrize("seed", range(200))
def test_thresholds_equal_the_sorted_scores_percentiles(seed: int) -> None:
    rng = random.Random(seed)
    posts = _posts(rng)
    tiers = {
        f"tier{i}": rng.choice([0.0, 1.0, 0.5, rng.random()]) for i in range(rng.randint(1, 5))
    }
    spec = CaptionSpec(quality_tag=True, quality_tiers=tiers)
    frame = pl.DataFrame(posts, schema={"rating": pl.String, "score": pl.Int64})
    got = score_thresholds(frame, spec)
    expected = quality_thresholds(posts, spec)
    assert {r: got[r] for r in expected} == expected
    for rating in set(got) - set(expected):  # every score of the rating null
        assert got[rating] == [None] * len(tiers)
    assert set(got) == {p["rating"] for p in posts}
