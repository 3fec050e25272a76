"""The libvips backend: the same policy as Pillow's, through libvips (``pyvips``).

libvips decodes JPEG at 1/2, 1/4 or 1/8 scale while reading (the same scale Pillow's draft
picks, so the decode-memory estimate is the same), and streams an image that needs no turn
from the decoder through colour conversion and resizing, so the whole source bitmap is never
held. The result comes back as a Pillow image of the target size, encoded by the same
libwebp call as Pillow's backend (for the same pixels the bytes are the same).

Each worker process runs one image at a time, so libvips runs one thread per process and
keeps no operation cache; its threads share one malloc arena whose limits are fixed (blocks
of 8 MiB or more mapped apart, at most 32 MiB kept free), so a worker holds about a Pillow
worker's memory (else 1.2x to twice as much, benchmarks/RESULTS.md).
A WebP that passes through is checked by its header (and, with ``verify="decode"``, by
Pillow's decoder, which decodes WebP twice as fast as libvips here). BMP, YCbCr and
32-bit greyscale (modes I and F) go to Pillow: libvips has no BMP reader here, reads YCbCr
TIFF as RGB, and Pillow's scaling of 32-bit values is the policy.
"""

from __future__ import annotations

import contextlib
import functools
import io
from typing import Any

from PIL import Image

from e6ingest.core import FailureKind, PostFailure
from e6ingest.imaging.header import (
    JPEG_FORMATS,
    SWAPPED_ORIENTATIONS,
    configure_malloc,
    has_alpha,
    refuse,
)
from e6ingest.imaging.policy import ImagePolicy, fit_size, parse_colour

_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP", "AVIF", "TIFF"})
# The modes whose pixels libvips reads as Pillow does (YCbCr TIFF, for one, it does not).
_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I;16", "I;16B", "I;16L"})
_ICC_MODES = frozenset({"RGB", "RGBA", "CMYK", "L", "I;16", "I;16B", "I;16L", "I;16N"})
# EXIF orientation -> the libvips operations that show the image upright (as Pillow's
# ImageOps.exif_transpose does).
_TURNS: dict[int, tuple[tuple[str, tuple[str, ...]], ...]] = {
    2: (("flip", ("horizontal",)),),
    3: (("rot", ("d180",)),),
    4: (("flip", ("vertical",)),),
    5: (("rot", ("d90",)), ("flip", ("horizontal",))),
    6: (("rot", ("d90",)),),
    7: (("rot", ("d270",)), ("flip", ("horizontal",))),
    8: (("rot", ("d270",)),),
}


@functools.cache
def _library() -> Any:
    """The ``pyvips`` module, set up for one image at a time per process."""
    import pyvips

    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)
    configure_malloc()
    return pyvips


@functools.cache
def ready() -> None:
    """Prove the backend on a known-good image, once per process: a broken install or a
    misuse stops the run here, never as thousands of images recorded undecodable."""
    out = io.BytesIO()
    Image.new("RGBA", (40, 20), (200, 10, 10, 255)).save(out, "PNG")
    data = out.getvalue()
    policy = ImagePolicy(backend="pillow")
    try:
        pixels = _render(data, Image.open(io.BytesIO(data)), 6, (10, 20), policy)
    except PostFailure as exc:
        raise RuntimeError(f"libvips failed on a known-good image: {exc}") from exc
    pixel = pixels.getpixel((5, 10))
    if pixels.size != (10, 20) or not isinstance(pixel, tuple) or pixel[:3] != (200, 10, 10):
        raise RuntimeError(f"libvips rendered a known-good image wrong: {pixels.size}")


def handles(im: Image.Image) -> bool:
    """Whether libvips reads this image (else Pillow's backend does)."""
    return im.format in _FORMATS and im.mode in _MODES


def _load(data: bytes, **options: Any) -> Any:
    """A lazy libvips image of ``data`` (its header read; pixels when asked for)."""
    pyvips = _library()
    try:
        return pyvips.Image.new_from_buffer(data, "", fail_on="error", **options)
    except pyvips.Error as exc:
        raise _undecodable("cannot open image", exc) from exc


def _undecodable(doing: str, exc: Exception) -> PostFailure:
    detail = getattr(exc, "detail", "") or str(exc)
    lines = [line.strip() for line in str(detail).splitlines() if line.strip()]
    return refuse(FailureKind.UNDECODABLE, f"{doing}: {lines[-1] if lines else exc}")


def render(
    data: bytes, im: Image.Image, turn: int | None, target: tuple[int, int], policy: ImagePolicy
) -> Image.Image:
    """The opened image as RGB pixels (mode RGBX) or RGBA, when kept, of the target size."""
    ready()
    return _render(data, im, turn, target, policy)


def _render(
    data: bytes, im: Image.Image, turn: int | None, target: tuple[int, int], policy: ImagePolicy
) -> Image.Image:
    image = _open(data, im, turn)
    if turn is None:  # a PNG: libvips has read all its chunks
        field = image.get_typeof("orientation") and image.get("orientation")
        turn = field if isinstance(field, int) and 1 <= field <= 8 else 1
        swapped = turn in SWAPPED_ORIENTATIONS
        size = (image.height, image.width) if swapped else (image.width, image.height)
        target = fit_size(*size, policy.max_pixels, policy.max_side)
    for name, args in _TURNS.get(turn, ()):
        image = getattr(image, name)(*args)
    image = _to_srgb(image, im)
    keep = policy.keep_alpha and has_alpha(im)
    image = _alpha(image, keep, parse_colour(policy.background))
    image = _resize(image, target)
    return _to_pillow(image)


def _open(data: bytes, im: Image.Image, turn: int | None) -> Any:
    """The source, streamed when no turn needs it whole, at the JPEG draft scale."""
    access = "sequential" if turn in (1, 2) else "random"
    image = _load(data, access=access)
    if im.format in JPEG_FORMATS:
        shrink = _draft_shrink((image.width, image.height), im.size)
        if shrink > 1:
            image = _load(data, access=access, shrink=shrink)
    return image


def _draft_shrink(source: tuple[int, int], drafted: tuple[int, int]) -> int:
    """The JPEG scale (1, 2, 4 or 8) at which ``source`` decodes to Pillow's draft size."""
    for shrink in (8, 4, 2):
        if all(-(-side // shrink) == want for side, want in zip(source, drafted, strict=True)):
            return shrink
    return 1


def _to_srgb(image: Any, im: Image.Image) -> Any:
    """Colour into 8-bit sRGB: an embedded profile converted (as Pillow would convert it),
    CMYK without one by Pillow's plain formula, grey and 16-bit by libvips."""
    pyvips = _library()
    if im.info.get("icc_profile") and im.mode in _ICC_MODES:
        # An unusable profile: a plain conversion, as with Pillow.
        with contextlib.suppress(pyvips.Error):
            image = image.icc_transform("srgb", embedded=True, intent="perceptual")
    if image.interpretation == "cmyk":
        ink = 255 - image.extract_band(0, n=3)
        image = (ink * (255 - image.extract_band(3)) / 255 + 0.5).cast("uchar")
        image = image.copy(interpretation="srgb")
    elif image.interpretation != "srgb" or image.format != "uchar":
        image = image.colourspace("srgb")
    return image if image.format == "uchar" else image.cast("uchar")


def _alpha(image: Any, keep: bool, background: tuple[int, int, int]) -> Any:
    """RGBA kept, or alpha composited onto the background; always 3 or 4 bands."""
    if image.bands in (2, 4):
        if keep:
            return image
        return image.flatten(background=list(background))
    return image.extract_band(0, n=3) if image.bands > 3 else image


def _resize(image: Any, target: tuple[int, int]) -> Any:
    """Lanczos to exactly ``target`` (alpha premultiplied while resampling)."""
    if (image.width, image.height) == target:
        return image
    scale = {"vscale": target[1] / image.height, "kernel": "lanczos3"}
    if image.bands == 4:
        resized = image.premultiply().resize(target[0] / image.width, **scale)
        return resized.unpremultiply().cast("uchar")
    return image.resize(target[0] / image.width, **scale)


def _to_pillow(image: Any) -> Image.Image:
    """The pixels computed (here the source is decoded) as a Pillow image that shares
    libvips' buffer: RGBA, or RGB padded to RGBX (Pillow's own layout for RGB, which the
    WebP encoder takes as RGB; an RGB buffer would be copied into it)."""
    pyvips = _library()
    mode = "RGBA" if image.bands == 4 else "RGBX"
    try:
        pixels = (image if image.bands == 4 else image.bandjoin(255)).write_to_memory()
    except pyvips.Error as exc:
        raise _undecodable("cannot decode image", exc) from exc
    return Image.frombuffer(mode, (image.width, image.height), pixels, "raw", mode, 0, 1)
