"""Imaging: any real-world image to a clean WebP within a pixel budget.

``normalize(data, policy)`` is a pure bytes-in, bytes-out function. It decodes, applies the
EXIF orientation, converts colour (ICC to sRGB, every Pillow mode to RGB or RGBA), composites
alpha onto a background unless alpha is kept, fits the image to the pixel budget (never
upscaling, each side at most the WebP limit) and encodes WebP; or passes already-compliant
WebP through byte for byte. Refusals are :class:`PostFailure` with stage ``image``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import math
import os
import struct
import time
import warnings
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageColor, ImageOps, UnidentifiedImageError

from e6ingest.core import FailureKind, PostFailure

WEBP_MAX_SIDE = 16383
DEFAULT_MAX_PIXELS = 2048 * 2048
# Pillow's own decompression-bomb ceiling (2 x Image.MAX_IMAGE_PIXELS, about 13400 x 13400):
# far above real posts, and about 540 MB decoded as RGB.
DEFAULT_MAX_SOURCE_PIXELS = 178_956_970
LOSSLESS_FORMATS = frozenset({"PNG", "GIF", "BMP", "TIFF"})
# The formats images are read in (JPEG includes MPO, as cameras write it). Others (ICO, ICNS,
# PSD...) are refused before decoding: some hold images larger than their header says.
READ_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "BMP", "TIFF")
JPEG_FORMATS = frozenset({"JPEG", "MPO"})
_OTHER_FORMATS = {b"\0\0\1\0": "ICO", b"\0\0\2\0": "CUR", b"icns": "ICNS", b"8BPS": "PSD",
                  b"\0\0\0\x0cjP  ": "JPEG 2000", b"\xff\x4f\xff\x51": "JPEG 2000",
                  b"qoif": "QOI", b"DDS ": "DDS"}  # fmt: skip
_SRGB = ImageCms.createProfile("sRGB")
_SWAPPED_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112
# Peak memory of decoding, converting and resizing, in bytes per (drafted) source pixel,
# measured with Pillow 13 (benchmarks/decode_memory_bench.py): 4.6 for RGB, 8.5 for JPEG at
# draft size, 10.5 for 16-bit grey, 12.4 for RGBA, 15.3 for any WebP, still or animated
# (Pillow decodes every WebP through libwebp's animation decoder) and for animations of
# other formats; rounded up here.
_COST_PER_PIXEL = {"plain": 6, "jpeg": 10, "alpha": 14, "deep": 12, "frames": 18}
_COST_OVERHEAD = 16 << 20
# Decode costs from which freed memory is given back at once (a trim costs up to 0.2 s).
_TRIM_AFTER = 1 << 30


class _NoBudget:
    """No limit on the memory images may take while decoding."""

    @contextlib.contextmanager
    def hold(self, nbytes: int):
        yield


NO_BUDGET = _NoBudget()


@dataclass(frozen=True)
class ImagePolicy:
    """How images are normalised. Defaults suit SDXL-class training data."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_side: int = WEBP_MAX_SIDE
    quality: int = 90
    method: int = 4
    lossless: bool = False  # encode lossless when the source was lossless
    keep_alpha: bool = False
    background: tuple[int, int, int] | str = (255, 255, 255)  # also "#rrggbb" or a name
    max_source_pixels: int = DEFAULT_MAX_SOURCE_PIXELS
    allow_animation: bool = True  # animations give their first frame
    verify: str = "decode"  # how pass-through WebP is checked: "decode" or "header"

    def __post_init__(self) -> None:
        object.__setattr__(self, "background", parse_colour(self.background))
        if self.verify not in ("decode", "header"):
            raise ValueError(f"verify must be 'decode' or 'header', not {self.verify!r}")
        if not 0 <= self.quality <= 100:
            raise ValueError(f"quality must be within 0..100, not {self.quality}")
        if not 0 <= self.method <= 6:
            raise ValueError(f"method must be within 0..6, not {self.method}")
        if self.max_pixels < 1 or not 1 <= self.max_side <= WEBP_MAX_SIDE:
            raise ValueError("max_pixels must be positive and max_side within 1..16383")


def parse_colour(value: str | tuple[int, ...] | list[int]) -> tuple[int, int, int]:
    """``"#ffffff"``, ``"white"``, ``"255,255,255"`` or a 3-sequence as an RGB tuple."""
    try:
        if isinstance(value, str):
            parts = value.split(",")
            rgb = ImageColor.getrgb(value) if len(parts) == 1 else tuple(map(int, parts))
        else:
            rgb = tuple(int(v) for v in value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"background: cannot read colour {value!r}") from exc
    if len(rgb) == 4:
        rgb = rgb[:3]
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise ValueError(f"background: {value!r} is not an RGB colour (three values 0..255)")
    return rgb


@dataclass(frozen=True)
class ImageRecord:
    """What ``normalize`` did to one image."""

    source_format: str
    source_width: int
    source_height: int
    width: int
    height: int
    reencoded: bool
    seconds: float


def fit_size(width: int, height: int, max_pixels: int, max_side: int = WEBP_MAX_SIDE):
    """The largest size with the same aspect ratio within ``max_pixels`` and ``max_side``.

    Never upscales; each side is at least 1 px.
    """
    scale = min(1.0, math.sqrt(max_pixels / (width * height)), max_side / max(width, height))
    if scale >= 1.0:
        return width, height
    new_w = max(1, min(max_side, math.floor(width * scale)))
    new_h = max(1, min(max_side, math.floor(height * scale)))
    while new_w * new_h > max_pixels:  # floor rounding can leave one row too many
        if new_w >= new_h:
            new_w -= 1
        else:
            new_h -= 1
    return new_w, new_h


def _refuse(kind: FailureKind, message: str) -> PostFailure:
    return PostFailure(kind, message, stage="image")


def _open(data: bytes) -> Image.Image:
    if not data:
        raise _refuse(FailureKind.UNDECODABLE, "zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=READ_FORMATS)
    except Image.DecompressionBombError as exc:
        raise _refuse(FailureKind.TOO_LARGE, str(exc)) from exc
    except UnidentifiedImageError as exc:
        _refuse_other_format(data)
        raise _refuse(FailureKind.UNDECODABLE, "not an image Pillow can read") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise _refuse(FailureKind.UNDECODABLE, f"cannot open image: {exc}") from exc


def _refuse_other_format(data: bytes) -> None:
    """Raise UNSUPPORTED for an image in a format that is not read, known by its first
    bytes (opening it with Pillow could decode it: ICO does at open)."""
    for magic, name in _OTHER_FORMATS.items():
        if data.startswith(magic):
            read = ", ".join(READ_FORMATS)
            raise _refuse(FailureKind.UNSUPPORTED, f"{name} images are not read (only {read})")


@contextlib.contextmanager
def _decoding(im: Image.Image, budget):
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
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Give the memory this process freed back to the system (glibc's ``malloc_trim``;
    nothing elsewhere)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _header_orientation(im: Image.Image) -> int | None:
    """The EXIF orientation when the header holds it; None for a PNG whose EXIF, if any,
    comes after its pixels (Pillow would decode the whole image to look)."""
    if im.format == "PNG" and "exif" not in im.info:
        return None
    return _orientation(im)


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block must not lose the image
        return 1


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode == "P" and "transparency" in im.info
    )


def _can_pass_through(im: Image.Image, policy: ImagePolicy, orientation: int) -> bool:
    w, h = im.size
    return (
        im.format == "WEBP"
        and not getattr(im, "is_animated", False)
        and (im.mode == "RGB" or (im.mode == "RGBA" and policy.keep_alpha))
        and w * h <= policy.max_pixels
        and max(w, h) <= policy.max_side
        and orientation == 1
        and not im.info.get("icc_profile")
    )


def _to_srgb(im: Image.Image) -> Image.Image:
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK", "L"):
        return im
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
        return ImageCms.profileToProfile(im, source, _SRGB, outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return im  # an unusable profile: fall back to a plain conversion


def _high_bit_depth_to_l(im: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale (I;16*, I, F) scaled into 8-bit L."""
    if im.mode == "F":
        lo, hi = im.getextrema()
        scale = 255.0 / (hi - lo) if hi > lo else 1.0
        return im.point(lambda v: (v - lo) * scale).convert("L")
    im = im.convert("I") if im.mode != "I" else im
    _, hi = im.getextrema()
    return im.point(lambda v: v / 256).convert("L") if hi > 255 else im.convert("L")


def _to_rgb(im: Image.Image, policy: ImagePolicy) -> Image.Image:
    """Every Pillow mode to RGB, or RGBA when alpha is present and kept."""
    if im.mode.startswith("I") or im.mode == "F":
        im = _high_bit_depth_to_l(im)
    im = _to_srgb(im)
    if _has_alpha(im):
        im = im.convert("RGBA")
        if policy.keep_alpha:
            return im
        canvas = Image.new("RGB", im.size, policy.background)
        canvas.paste(im, mask=im.getchannel("A"))
        return canvas
    return im if im.mode == "RGB" else im.convert("RGB")


def decode_cost(im: Image.Image) -> int:
    """Bytes that decoding, converting and resizing an opened image may take at peak,
    estimated from its header (and JPEG draft size) before any pixel is decoded."""
    if im.format == "WEBP" or getattr(im, "is_animated", False):
        kind = "frames"
    elif im.mode.startswith("I") or im.mode == "F":
        kind = "deep"
    elif _has_alpha(im):
        kind = "alpha"
    else:
        kind = "jpeg" if im.format in JPEG_FORMATS else "plain"
    return im.width * im.height * _COST_PER_PIXEL[kind] + _COST_OVERHEAD


def _target(im: Image.Image, policy: ImagePolicy, orientation: int) -> tuple[int, int]:
    """The output size of an image to re-encode; JPEG decoding is drafted towards it."""
    swapped = orientation in _SWAPPED_ORIENTATIONS
    oriented = (im.height, im.width) if swapped else im.size
    target = fit_size(*oriented, policy.max_pixels, policy.max_side)
    _draft(im, target, swapped)
    return target


def estimate_cost(data: bytes, policy: ImagePolicy = ImagePolicy()) -> int:
    """:func:`decode_cost` of an image as :func:`normalize` would decode it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = _open(data)
        orientation = _header_orientation(im)
        if orientation is None or not _can_pass_through(im, policy, orientation):
            _target(im, policy, orientation or 1)
        return decode_cost(im)


def _draft(im: Image.Image, target: tuple[int, int], swapped: bool) -> None:
    if im.format in JPEG_FORMATS:
        # Draft decoding scales by 1/2, 1/4 or 1/8 while staying at or above the target.
        draft_size = (target[1], target[0]) if swapped else target
        im.draft(im.mode if im.mode in ("RGB", "L", "CMYK") else None, draft_size)


def _decode_frame(im: Image.Image) -> Image.Image:
    try:
        im.load()
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise _refuse(FailureKind.UNDECODABLE, f"cannot decode image: {exc}") from exc
    return im


def _encode(im: Image.Image, policy: ImagePolicy, lossless: bool) -> bytes:
    out = io.BytesIO()
    im.save(out, "WEBP", quality=policy.quality, method=policy.method, lossless=lossless)
    return out.getvalue()


def normalize(
    data: bytes, policy: ImagePolicy = ImagePolicy(), budget=NO_BUDGET
) -> tuple[bytes, ImageRecord]:
    """One image as WebP bytes within the policy, and a record of what was done.

    Raises :class:`PostFailure` (stage ``image``) for zero bytes, non-images, truncated or
    corrupt data, sources over ``policy.max_source_pixels`` (refused before decoding) and
    animations when the policy forbids them. Pixels are decoded inside
    ``budget.hold(decode_cost(...))``, so a shared budget bounds the memory that images
    being decoded at once may take (the output does not depend on it).
    """
    start = time.perf_counter()
    im = _open(data)
    src_format = im.format or "unknown"
    src_w, src_h = im.size
    if src_w * src_h > policy.max_source_pixels:
        raise _refuse(
            FailureKind.TOO_LARGE,
            f"{src_w}x{src_h} = {src_w * src_h} px is over the source limit "
            f"{policy.max_source_pixels}",
        )
    animated = getattr(im, "is_animated", False)
    if animated and not policy.allow_animation:
        raise _refuse(FailureKind.UNSUPPORTED, f"animated {src_format} refused by the policy")
    orientation = _header_orientation(im)
    if orientation is not None and _can_pass_through(im, policy, orientation):
        if policy.verify == "decode":
            with _decoding(im, budget):
                _decode_frame(im)
        record = ImageRecord(
            src_format, src_w, src_h, src_w, src_h, False, time.perf_counter() - start
        )
        return data, record
    target = _target(im, policy, orientation or 1)
    with _decoding(im, budget):
        im = _decode_frame(im)
        if orientation is None:  # its EXIF could follow the pixels: known once decoded
            orientation = _orientation(im)
            target = _target(im, policy, orientation)
        try:
            im = ImageOps.exif_transpose(im) if orientation != 1 else im
            im = _to_rgb(im, policy)
            if im.size != target:
                im = im.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        except (OSError, ValueError) as exc:
            raise _refuse(FailureKind.UNDECODABLE, f"cannot convert image: {exc}") from exc
        lossless = policy.lossless and src_format in LOSSLESS_FORMATS
        encoded = _encode(im, policy, lossless)
    record = ImageRecord(
        src_format, src_w, src_h, im.width, im.height, True, time.perf_counter() - start
    )
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
    data: bytes, policy: ImagePolicy, budget=NO_BUDGET
) -> tuple[bytes, ImageRecord] | PostFailure:
    """:func:`normalize`, with this image's failure returned instead of raised.

    Only what means "this image is bad" becomes a failure: refusals, and data errors
    raised inside Pillow. Any other exception is a coding error and propagates, so a
    bug stops the run instead of being recorded as thousands of bad images.
    """
    try:
        return normalize(data, policy, budget)
    except PostFailure as exc:
        return exc
    except _IMAGE_DATA_ERRORS as exc:
        if not _raised_in_pillow(exc):
            raise
        return PostFailure(FailureKind.UNDECODABLE, f"{type(exc).__name__}: {exc}", "image")
