"""``normalize``: one image's bytes in, WebP bytes within the policy out."""

from __future__ import annotations

import io
import os
import struct
import time
from types import ModuleType

from PIL import Image

from e6ingest.core import FailureKind, PostFailure
from e6ingest.imaging import pillow, vips
from e6ingest.imaging.header import (
    LOSSLESS_FORMATS,
    NO_BUDGET,
    Budget,
    can_pass_through,
    check_limits,
    decoding,
    header_orientation,
    open_image,
    target_size,
)
from e6ingest.imaging.policy import ImagePolicy, ImageRecord


def backend_for(im: Image.Image, policy: ImagePolicy, target: tuple[int, int]) -> ModuleType:
    """The backend that makes this image's pixels: libvips, with the vips backend, for an
    image it reads that must be scaled down (where it is faster: JPEG decoded at scale, a
    faster resize, streaming); Pillow for the rest (an image kept at its size costs the
    same to decode either way, and libvips' hand-over costs 5-10% more here)."""
    scaled = target[0] * target[1] < im.width * im.height
    if policy.backend == "vips" and scaled and vips.handles(im):
        return vips
    return pillow


def prepare_process(policy: ImagePolicy) -> None:
    """Set this process up for the policy's backend before its first image (at once is
    best: libvips loaded and proven once, its threads set to share one malloc arena)."""
    if policy.backend == "vips":
        vips.ready()


def encode(im: Image.Image, policy: ImagePolicy, lossless: bool) -> bytes:
    """RGB or RGBA pixels as WebP at the policy's quality and method (libwebp, through
    Pillow, whichever backend made the pixels)."""
    out = io.BytesIO()
    im.save(out, "WEBP", quality=policy.quality, method=policy.method, lossless=lossless)
    return out.getvalue()


def normalize(
    data: bytes, policy: ImagePolicy | None = None, budget: Budget = NO_BUDGET
) -> tuple[bytes, ImageRecord]:
    """One image as WebP bytes within the policy, and a record of what was done.

    Raises :class:`PostFailure` (stage ``image``) for zero bytes, non-images, truncated or
    corrupt data, sources over ``policy.max_source_pixels`` (refused before decoding) and
    animations when the policy forbids them. Pixels are decoded inside
    ``budget.hold(decode_cost(...))``, so a shared budget bounds the memory that images
    being decoded at once may take (the output does not depend on it).
    """
    policy = policy or ImagePolicy()
    start = time.perf_counter()
    im = open_image(data)
    src_format = im.format or "unknown"
    src_w, src_h = im.size
    check_limits(im, policy)
    turn = header_orientation(im)
    if turn is not None and can_pass_through(im, policy, turn):
        if policy.verify == "decode":  # by Pillow, whose WebP decoding is the faster
            with decoding(im, budget):
                pillow.decode(im)
        record = ImageRecord(
            src_format, src_w, src_h, src_w, src_h, False, time.perf_counter() - start
        )
        return data, record
    target = target_size(im, policy, turn or 1)
    with decoding(im, budget):
        pixels = backend_for(im, policy, target).render(data, im, turn, target, policy)
        lossless = policy.lossless and src_format in LOSSLESS_FORMATS
        encoded = encode(pixels, policy, lossless)
    width, height = pixels.size
    seconds = time.perf_counter() - start
    record = ImageRecord(src_format, src_w, src_h, width, height, True, seconds)
    return encoded, record


# What Pillow raises on bad image data (beyond the errors refused above): an image's own
# failure when raised inside Pillow; anywhere else, or of another type, a coding error.
_IMAGE_DATA_ERRORS = (
    OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError,
    ZeroDivisionError, OverflowError, MemoryError, Image.DecompressionBombError,
)  # fmt: skip
_PIL_DIR = os.path.dirname(Image.__file__) + os.sep


def _raised_in_pillow(exc: BaseException) -> bool:
    tb, last = exc.__traceback__, None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and last.tb_frame.f_code.co_filename.startswith(_PIL_DIR)


def normalize_or_failure(
    data: bytes, policy: ImagePolicy, budget: Budget = NO_BUDGET
) -> tuple[bytes, ImageRecord] | PostFailure:
    """:func:`normalize`, with this image's failure returned instead of raised.

    Only what means "this image is bad" becomes a failure: refusals (libvips' errors on
    an image become refusals where it reads it), and data errors raised inside Pillow. Any
    other exception is a coding error and propagates, so a bug stops the run instead of
    being recorded as thousands of bad images.
    """
    try:
        return normalize(data, policy, budget)
    except PostFailure as exc:
        return exc
    except _IMAGE_DATA_ERRORS as exc:
        if not _raised_in_pillow(exc):
            raise
        return PostFailure(FailureKind.UNDECODABLE, f"{type(exc).__name__}: {exc}", "image")
