"""The image pool gives what normalize gives, in order, failures included."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from e6ingest.config import make_config
from e6ingest.imaging import ImagePolicy, normalize
from e6ingest.pipeline import pull
from e6ingest.pipeline.imagepool import ImagePool, normalize_all
from e6ingest.sources import FailureKind, PostFailure


def _png(width: int, height: int, colour) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


def test_pool_results_equal_normalize_in_order_with_failures():
    policy = ImagePolicy(max_pixels=64 * 64)
    images = [_png(200, 100, (n * 20, 0, 0)) for n in range(10)]
    images[3] = b"not an image"
    images[6] = None  # a post whose fetch failed: nothing to normalise
    with ImagePool(policy, workers=2, in_flight=3) as pool:
        results = list(pool.map(images))
    serial = list(normalize_all(images, policy))
    assert len(results) == len(serial) == 10
    assert results[6] is None and serial[6] is None
    for data, got, expected in zip(images, results, serial, strict=True):
        if isinstance(expected, PostFailure):
            assert isinstance(got, PostFailure) and got.kind is FailureKind.UNDECODABLE
            assert got.message == expected.message and got.stage == "image"
        elif expected is not None:
            assert got[0] == expected[0] == normalize(data, policy)[0]
            assert (got[1].width, got[1].height) == (90, 45)


@pytest.mark.slow
def test_pull_through_the_pool_writes_what_one_process_writes(small_demo, tmp_path):
    config = make_config({"ratings": "e,q,s", "shard_size": 1000})  # one shard: the pool runs
    pooled = pull(config, tmp_path / "pool", small_demo, workers=2)
    single = pull(config, tmp_path / "one", small_demo, workers=1)
    assert pooled.shards == single.shards == 1
    assert (tmp_path / "pool/shards/00000.tar").read_bytes() == (
        tmp_path / "one/shards/00000.tar"
    ).read_bytes()
    assert (pooled.written, pooled.failed) == (single.written, single.failed)
