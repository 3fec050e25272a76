"""Aspect-ratio buckets follow sd-scripts' make_bucket_resolutions and nearest-ratio choice."""

import itertools

import pytest

from e6ingest.buckets import BucketSpec, bucket_resolutions, choose_bucket


def test_sdxl_buckets():
    resos = bucket_resolutions(BucketSpec())
    assert (1024, 1024) in resos
    # Each bucket fits the 1024² area, sides are multiples of 64 within [512, 2048].
    for w, h in resos:
        assert w * h <= 1024 * 1024 and w % 64 == 0 and h % 64 == 0
        assert 512 <= w <= 2048 and 512 <= h <= 2048
        assert (h, w) in resos
    assert (512, 2048) in resos and (2048, 512) in resos
    assert (832, 1216) in resos and (1216, 832) in resos


def test_nearest_aspect_ratio():
    assert choose_bucket(1000, 1000) == (1024, 1024)
    assert choose_bucket(2000, 1000) == (1408, 704)
    assert choose_bucket(800, 20000) == (512, 2048)  # strip comics go to the tallest
    assert choose_bucket(832, 1216) == (832, 1216)


def test_other_parameters():
    spec = BucketSpec(resolution=512, min_side=256, max_side=1024, step=32)
    assert (512, 512) in bucket_resolutions(spec)
    assert all(w * h <= 512 * 512 for w, h in bucket_resolutions(spec))


def test_every_spec_allowed_has_buckets_with_pixels():
    """A spec the checks let through never makes a bucket with a side of 0 (the nearest
    bucket of any image would then divide by it)."""
    for resolution, min_side, max_side, step in itertools.product(
        (1, 8, 63, 64, 100, 1024), (1, 64, 512), (64, 512, 2048), (1, 8, 64)
    ):
        try:
            spec = BucketSpec(resolution, min_side, max_side, step)
        except ValueError as exc:
            lo, hi = min_side - min_side % step, -(-max_side // step) * step
            assert resolution < step or min_side < step or not lo <= resolution <= hi, exc
            continue
        assert all(w > 0 and h > 0 for w, h in bucket_resolutions(spec)), spec
        assert all(max(w, h) <= max_side for w, h in bucket_resolutions(spec)), spec
        assert choose_bucket(3, 1, spec)[0] > 0
    with pytest.raises(ValueError, match="square bucket would have no pixels"):
        BucketSpec(resolution=10)
    with pytest.raises(ValueError, match=r"resolution 4096 is outside --bucket-min 512 \.\. --buc"):
        BucketSpec(resolution=4096)  # sd-scripts asserts min_bucket_reso <= it <= max_bucket_reso
    with pytest.raises(ValueError, match="resolution 256 is outside --bucket-min 512"):
        BucketSpec(resolution=256)


def _sd_scripts_buckets(resolution: int, min_side: int, max_side: int, step: int) -> set:
    """sd-scripts' buckets, plainly: its dataset rounds min_bucket_reso down and
    max_bucket_reso up to multiples of bucket_reso_steps, then make_bucket_resolutions adds
    the square of the area and, for each width from the smallest side in steps, the
    height that keeps the area, both ways round."""
    if min_side % step:
        min_side -= min_side % step
    if max_side % step:
        max_side += step - max_side % step
    area = resolution * resolution
    size = int(area**0.5 // step) * step
    found = {(size, size)}
    for width in range(min_side, max_side + 1, step):
        height = min(max_side, int((area // width) // step) * step)
        if height >= min_side:
            found |= {(width, height), (height, width)}
    return found


@pytest.mark.parametrize(
    ("resolution", "min_side", "max_side", "step"),
    [(1024, 512, 2048, 64), (1024, 500, 2000, 64), (768, 300, 1500, 64), (512, 260, 1030, 32),
     (1024, 512, 2047, 64), (896, 513, 2048, 64)],
)  # fmt: skip
def test_sides_that_are_no_multiple_of_the_step_round_as_sd_scripts_rounds_them(
    resolution, min_side, max_side, step
):
    spec = BucketSpec(resolution, min_side, max_side, step)
    assert set(bucket_resolutions(spec)) == _sd_scripts_buckets(
        resolution, min_side, max_side, step
    )


def test_a_smallest_side_under_the_step_is_refused():
    with pytest.raises(ValueError, match="--bucket-min 32 is under --bucket-step 64"):
        BucketSpec(min_side=32)  # sd-scripts rounds it to 0 and divides by it


def test_a_step_sdxl_cannot_take_is_warned_of_as_sd_scripts_does():
    assert BucketSpec().warnings() == [] and BucketSpec(step=32).warnings() == []
    (warning,) = BucketSpec(step=8, min_side=512).warnings()
    assert "--bucket-step 8 is not a multiple of 32" in warning and "SDXL" in warning
