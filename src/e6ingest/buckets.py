"""Aspect-ratio buckets, computed with the rule of kohya-ss/sd-scripts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class BucketSpec:
    """sd-scripts bucket parameters: target area of ``resolution``², sides in ``step``s."""

    resolution: int = 1024
    min_side: int = 512
    max_side: int = 2048
    step: int = 64

    def __post_init__(self) -> None:
        if self.step <= 0 or self.min_side <= 0 or self.min_side > self.max_side:
            raise ValueError(f"invalid bucket parameters: {self}")


@lru_cache(maxsize=16)
def bucket_resolutions(spec: BucketSpec) -> tuple[tuple[int, int], ...]:
    """Every (width, height) bucket, sorted, as sd-scripts' ``make_bucket_resolutions``."""
    area = spec.resolution * spec.resolution
    resos = {(int(math.sqrt(area) // spec.step) * spec.step,) * 2}
    width = spec.min_side
    while width <= spec.max_side:
        height = min(spec.max_side, int((area // width) // spec.step) * spec.step)
        if height >= spec.min_side:
            resos.add((width, height))
            resos.add((height, width))
        width += spec.step
    return tuple(sorted(resos))


def choose_bucket(width: int, height: int, spec: BucketSpec = BucketSpec()) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest to ``width / height`` (first on a tie)."""
    ratio = width / height
    return min(bucket_resolutions(spec), key=lambda r: abs(r[0] / r[1] - ratio))
