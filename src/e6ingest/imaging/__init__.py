"""Imaging: any real-world image to a clean WebP within a pixel budget.

``normalize(data, policy)`` is a pure bytes-in, bytes-out function. It reads the header
(:mod:`.header`: refusals, size limits, orientation, pass-through, the decode cost), then a
backend (:mod:`.pillow`, or :mod:`.vips` when libvips is installed) decodes, applies the
EXIF orientation, converts colour (ICC to sRGB, every mode to RGB or RGBA), composites alpha
onto a background unless alpha is kept and fits the image to the pixel budget (never
upscaling, each side at most the WebP limit); libwebp encodes. Already-compliant WebP passes
through byte for byte. Refusals are :class:`PostFailure` with stage ``image``.
"""

from e6ingest.imaging.header import (
    LOSSLESS_FORMATS,
    NO_BUDGET,
    READ_FORMATS,
    Budget,
    decode_cost,
    estimate_cost,
    release_free_memory,
)
from e6ingest.imaging.normalize import normalize, normalize_or_failure, prepare_process
from e6ingest.imaging.policy import (
    BACKENDS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SOURCE_PIXELS,
    WEBP_MAX_SIDE,
    ImagePolicy,
    ImageRecord,
    default_backend,
    fit_size,
    parse_colour,
)

__all__ = [
    "BACKENDS", "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_SOURCE_PIXELS", "LOSSLESS_FORMATS",
    "NO_BUDGET", "READ_FORMATS", "WEBP_MAX_SIDE", "Budget", "ImagePolicy", "ImageRecord",
    "decode_cost", "default_backend", "estimate_cost", "fit_size", "normalize",
    "normalize_or_failure", "parse_colour", "prepare_process", "release_free_memory",
]  # fmt: skip
