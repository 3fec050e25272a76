"""Aspect-ratio buckets, computed with the rule of kohya-ss/sd-scripts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from e6ingest.core import check_plain_fields

MOST_SIDE = 16_384  # the largest bucket side: WebP images are at most 16,383 pixels a side
SDXL_STEP = 32  # bucket sides SDXL's VAE and UNet take: multiples of this


@dataclass(frozen=True)
class BucketSpec:
    """sd-scripts bucket parameters: target area of ``resolution``², sides in ``step``s."""

    resolution: int = 1024
    min_side: int = 512
    max_side: int = 2048
    step: int = 64

    def __post_init__(self) -> None:
        check_plain_fields(self)
        if self.step <= 0 or self.min_side <= 0 or self.resolution <= 0:
            raise ValueError(
                f"--bucket-step, --bucket-min and --bucket-resolution must be positive (step "
                f"{self.step}, min {self.min_side}, resolution {self.resolution})"
            )
        largest = max(self.resolution, self.max_side, self.step)
        if largest > MOST_SIDE:
            raise ValueError(f"bucket sides are at most {MOST_SIDE:,} pixels (WebP's largest "
                             f"side is 16,383), not {largest:,}")  # fmt: skip
        if self.min_side > self.max_side:
            raise ValueError(f"--bucket-min {self.min_side} is over --bucket-max {self.max_side}")
        if self.resolution < self.step:  # the square bucket's side, in steps, would be 0
            raise ValueError(f"--bucket-resolution {self.resolution} is under --bucket-step "
                             f"{self.step}: its square bucket would have no pixels")  # fmt: skip
        if self.min_side < self.step:  # sd-scripts rounds it down to 0 and divides by it
            raise ValueError(f"--bucket-min {self.min_side} is under --bucket-step "
                             f"{self.step}: sd-scripts cannot make buckets from it")  # fmt: skip
        lowest, highest = self.bounds
        if not lowest <= self.resolution <= highest:  # sd-scripts asserts it
            raise ValueError(f"--bucket-resolution {self.resolution} is outside --bucket-min "
                             f"{lowest} .. --bucket-max {highest}: sd-scripts refuses such "
                             "buckets (the square one would exceed the largest side)")  # fmt: skip

    def warnings(self) -> list[str]:
        """What to say of these buckets before a run, as sd-scripts says it."""
        if self.step % SDXL_STEP:
            return [f"--bucket-step {self.step} is not a multiple of {SDXL_STEP}: bucket sides "
                    f"of such steps do not work with SDXL (sd-scripts warns the same); the "
                    f"default is 64"]  # fmt: skip
        return []

    @property
    def bounds(self) -> tuple[int, int]:
        """The smallest and largest side as sd-scripts uses them: ``min_side`` rounded down
        and ``max_side`` up to multiples of ``step``."""
        return self.min_side - self.min_side % self.step, -(-self.max_side // self.step) * self.step


@lru_cache(maxsize=16)
def bucket_resolutions(spec: BucketSpec) -> tuple[tuple[int, int], ...]:
    """Every (width, height) bucket, sorted, as sd-scripts' ``make_bucket_resolutions``
    makes them (from the sides as it rounds them, :attr:`BucketSpec.bounds`)."""
    area = spec.resolution * spec.resolution
    resos = {(int(math.sqrt(area) // spec.step) * spec.step,) * 2}
    min_side, max_side = spec.bounds
    width = min_side
    while width <= max_side:
        height = min(max_side, int((area // width) // spec.step) * spec.step)
        if height >= min_side:
            resos.add((width, height))
            resos.add((height, width))
        width += spec.step
    return tuple(sorted(resos))


def choose_bucket(width: int, height: int, spec: BucketSpec = BucketSpec()) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest to ``width / height`` (first on a tie)."""
    ratio = width / height
    return min(bucket_resolutions(spec), key=lambda r: abs(r[0] / r[1] - ratio))


@dataclass(frozen=True)
class Fit:
    """How sd-scripts fits an image into its bucket: the size it is resized to (then
    center-cropped to the bucket) and the ``crop_ltrb`` its latent files record."""

    resized: tuple[int, int]
    crop_ltrb: tuple[float, float, float, float]


def fit_to_bucket(width: int, height: int, bucket: tuple[int, int]) -> Fit:
    """sd-scripts' rule (``BucketManager.select_bucket`` and ``get_crop_ltrb``): scale so the
    image covers the bucket (the side that is relatively shorter matches, rounded half up),
    crop the excess equally from both ends; ``crop_ltrb`` is where an image of the original
    aspect would lie inside the bucket, as SDXL conditioning takes it."""
    bucket_w, bucket_h = bucket
    ratio = width / height
    scale = bucket_h / height if ratio > bucket_w / bucket_h else bucket_w / width
    resized = (int(width * scale + 0.5), int(height * scale + 0.5))
    placed_w: float
    placed_h: float
    if bucket_w / bucket_h > ratio:
        placed_w, placed_h = bucket_h * ratio, bucket_h
    else:
        placed_w, placed_h = bucket_w, bucket_w / ratio
    left, top = (bucket_w - placed_w) // 2, (bucket_h - placed_h) // 2
    return Fit(resized, (left, top, left + placed_w, top + placed_h))
