"""What an image's header says, read by Pillow before any pixel is decoded.

Both backends start here: the format (and the formats refused), the size and its limit,
animation, the EXIF orientation, alpha, whether a WebP may pass through as it is, the
output size, and what decoding will cost in memory, so a shared budget can hold it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import warnings
from collections.abc import Iterator
from typing import Any, Protocol

from PIL import Image, UnidentifiedImageError

from e6ingest.core import FailureKind, PostFailure
from e6ingest.imaging.policy import ImagePolicy, fit_size

# The formats images are read in (JPEG includes MPO, as cameras write it). Others (ICO, ICNS,
# PSD...) are refused before decoding: some hold images larger than their header says.
READ_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "BMP", "TIFF")
JPEG_FORMATS = frozenset({"JPEG", "MPO"})
LOSSLESS_FORMATS = frozenset({"PNG", "GIF", "BMP", "TIFF"})
_OTHER_FORMATS = {b"\0\0\1\0": "ICO", b"\0\0\2\0": "CUR", b"icns": "ICNS", b"8BPS": "PSD",
                  b"\0\0\0\x0cjP  ": "JPEG 2000", b"\xff\x4f\xff\x51": "JPEG 2000",
                  b"qoif": "QOI", b"DDS ": "DDS"}  # fmt: skip
SWAPPED_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112
# Peak memory of decoding, converting and resizing, in bytes per (drafted) source pixel,
# measured with Pillow 13 (benchmarks/decode_memory_bench.py): 4.6 for RGB, 8.5 for JPEG at
# draft size, 10.5 for 16-bit grey, 12.4 for RGBA, 15.3 for any WebP, still or animated
# (Pillow decodes every WebP through libwebp's animation decoder) and for animations of
# other formats; rounded up here. libvips streams and takes less; the same estimate holds.
_COST_PER_PIXEL = {"plain": 6, "jpeg": 10, "alpha": 14, "deep": 12, "frames": 18}
_COST_OVERHEAD = 16 << 20
# Decode costs from which freed memory is given back at once (a trim costs up to 0.2 s).
_TRIM_AFTER = 1 << 30


class Budget(Protocol):
    """Memory that images being decoded at once may take (pipeline.budget.MemoryBudget)."""

    def hold(self, nbytes: int) -> contextlib.AbstractContextManager[Any]: ...


class _NoBudget:
    """No limit on the memory images may take while decoding."""

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        yield


NO_BUDGET: Budget = _NoBudget()


def refuse(kind: FailureKind, message: str) -> PostFailure:
    """This image's typed failure at the ``image`` stage."""
    return PostFailure(kind, message, stage="image")


def open_image(data: bytes) -> Image.Image:
    """The image's header, opened lazily by Pillow (no pixel decoded yet)."""
    if not data:
        raise refuse(FailureKind.UNDECODABLE, "zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=READ_FORMATS)
    except Image.DecompressionBombError as exc:
        raise refuse(FailureKind.TOO_LARGE, str(exc)) from exc
    except UnidentifiedImageError as exc:
        _refuse_other_format(data)
        raise refuse(FailureKind.UNDECODABLE, "not an image Pillow can read") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise refuse(FailureKind.UNDECODABLE, f"cannot open image: {exc}") from exc


def _refuse_other_format(data: bytes) -> None:
    """Raise UNSUPPORTED for an image in a format that is not read, known by its first
    bytes (opening it with Pillow could decode it: ICO does at open)."""
    for magic, name in _OTHER_FORMATS.items():
        if data.startswith(magic):
            read = ", ".join(READ_FORMATS)
            raise refuse(FailureKind.UNSUPPORTED, f"{name} images are not read (only {read})")


def check_limits(im: Image.Image, policy: ImagePolicy) -> None:
    """Refuse, from the header, a source over the pixel limit or a forbidden animation."""
    width, height = im.size
    if width * height > policy.max_source_pixels:
        raise refuse(
            FailureKind.TOO_LARGE,
            f"{width}x{height} = {width * height} px is over the source limit "
            f"{policy.max_source_pixels}",
        )
    if getattr(im, "is_animated", False) and not policy.allow_animation:
        raise refuse(FailureKind.UNSUPPORTED, f"animated {im.format} refused by the policy")


def header_orientation(im: Image.Image) -> int | None:
    """The EXIF orientation when the header holds it; None for a PNG whose EXIF, if any,
    comes after its pixels (Pillow would decode the whole image to look)."""
    if im.format == "PNG" and "exif" not in im.info:
        return None
    return orientation(im)


def orientation(im: Image.Image) -> int:
    """The EXIF orientation, 1 (as stored) when there is none or it cannot be read."""
    try:
        value = int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block must not lose the image
        return 1
    return value if 1 <= value <= 8 else 1


def has_alpha(im: Image.Image) -> bool:
    """Whether the image carries transparency (an alpha band or a transparent colour)."""
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode == "P" and "transparency" in im.info
    )


def can_pass_through(im: Image.Image, policy: ImagePolicy, orientation: int) -> bool:
    """Whether the source is a WebP the policy would keep byte for byte."""
    w, h = im.size
    return (
        policy.pass_through
        and im.format == "WEBP"
        and not getattr(im, "is_animated", False)
        and (im.mode == "RGB" or (im.mode == "RGBA" and policy.keep_alpha))
        and w * h <= policy.max_pixels
        and max(w, h) <= policy.max_side
        and orientation == 1
        and not im.info.get("icc_profile")
    )


def decode_cost(im: Image.Image) -> int:
    """Bytes that decoding, converting and resizing an opened image may take at peak,
    estimated from its header (and JPEG draft size) before any pixel is decoded."""
    if im.format == "WEBP" or getattr(im, "is_animated", False):
        kind = "frames"
    elif im.mode.startswith("I") or im.mode == "F":
        kind = "deep"
    elif has_alpha(im):
        kind = "alpha"
    else:
        kind = "jpeg" if im.format in JPEG_FORMATS else "plain"
    return im.width * im.height * _COST_PER_PIXEL[kind] + _COST_OVERHEAD


def target_size(im: Image.Image, policy: ImagePolicy, orientation: int) -> tuple[int, int]:
    """The output size of an image to re-encode; JPEG decoding is drafted towards it."""
    swapped = orientation in SWAPPED_ORIENTATIONS
    oriented = (im.height, im.width) if swapped else im.size
    target = fit_size(*oriented, policy.max_pixels, policy.max_side)
    if im.format in JPEG_FORMATS:
        # Draft decoding scales by 1/2, 1/4 or 1/8 while staying at or above the target.
        draft_size = (target[1], target[0]) if swapped else target
        im.draft(im.mode if im.mode in ("RGB", "L", "CMYK") else None, draft_size)
    return target


def estimate_cost(data: bytes, policy: ImagePolicy | None = None) -> int:
    """:func:`decode_cost` of an image as :func:`normalize` would decode it."""
    policy = policy or ImagePolicy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = open_image(data)
        turn = header_orientation(im)
        if turn is None or not can_pass_through(im, policy, turn):
            target_size(im, policy, turn or 1)
        return decode_cost(im)


@contextlib.contextmanager
def decoding(im: Image.Image, budget: Budget) -> Iterator[None]:
    """Hold the image's decode cost in ``budget`` while its pixels are decoded; after a
    large image, the memory it freed goes back to the system before the cost is released
    (else the process keeps its pages, and the budget would not bound the machine's)."""
    cost = decode_cost(im)
    with budget.hold(cost):
        try:
            yield
        finally:
            if cost >= _TRIM_AFTER:
                release_free_memory()


@functools.cache
def _libc_function(name: str) -> Any:
    try:
        return getattr(ctypes.CDLL(None), name)  # glibc
    except (OSError, AttributeError):
        return None


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters
_MAPPED_FROM = 8 << 20  # a block this large (a bitmap, an encoder's buffer) is mapped apart
_KEPT_FREE = 32 << 20  # free memory the heap may keep at its top for the next image


def configure_malloc() -> None:
    """Have every thread of this process allocate from one malloc arena, with fixed limits
    (:func:`release_free_memory` then gives back what any thread freed):
    a block of 8 MiB or more is mapped apart and goes back to the system when freed, and
    the heap keeps up to 32 MiB free for the next image (nothing elsewhere).

    glibc otherwise keeps one arena per thread, each holding its peak, and raises its
    mapping threshold after each large free, so that later bitmaps stay in the heap: a
    libvips worker then held 1.2x Pillow's memory. A lower threshold, or a heap that keeps
    less, costs a page fault per page of every image (3-12% slower, benchmarks/RESULTS.md);
    a heap that keeps more holds more memory for little gain.
    """
    mallopt = _libc_function("mallopt")
    if mallopt is not None:
        mallopt(_M_ARENA_MAX, 1)
        mallopt(_M_MMAP_THRESHOLD, _MAPPED_FROM)
        mallopt(_M_TRIM_THRESHOLD, _KEPT_FREE)


def release_free_memory() -> None:
    """Give the memory this process freed back to the system (glibc's ``malloc_trim``;
    nothing elsewhere)."""
    trim = _libc_function("malloc_trim")
    if trim is not None:
        trim(0)
