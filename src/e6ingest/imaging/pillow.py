"""The Pillow backend: decode, orient, colour-manage, composite and resize with Pillow."""

from __future__ import annotations

import io
from typing import cast

from PIL import Image, ImageCms, ImageOps

from e6ingest.core import FailureKind
from e6ingest.imaging.header import has_alpha, orientation, refuse, target_size
from e6ingest.imaging.policy import ImagePolicy

_SRGB = ImageCms.createProfile("sRGB")


def handles(im: Image.Image) -> bool:
    """Pillow reads every format the header step accepts."""
    return True


def decode(im: Image.Image) -> Image.Image:
    """The opened image's pixels, or an UNDECODABLE refusal."""
    try:
        im.load()
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise refuse(FailureKind.UNDECODABLE, f"cannot decode image: {exc}") from exc
    return im


def render(
    data: bytes, im: Image.Image, turn: int | None, target: tuple[int, int], policy: ImagePolicy
) -> Image.Image:
    """The opened image as RGB (or RGBA when kept) pixels of the target size.

    ``turn`` is the EXIF orientation, None when only decoding can tell (a PNG's EXIF may
    follow its pixels); ``target`` the output size for the orientation known so far.
    """
    im = decode(im)
    if turn is None:
        turn = orientation(im)
        target = target_size(im, policy, turn)
    try:
        im = ImageOps.exif_transpose(im) if turn != 1 else im
        im = _to_rgb(im, policy)
        if im.size != target:
            im = im.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    except (OSError, ValueError) as exc:
        raise refuse(FailureKind.UNDECODABLE, f"cannot convert image: {exc}") from exc
    return im


def _to_srgb(im: Image.Image) -> Image.Image:
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK", "L"):
        return im
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(im, source, _SRGB, outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return im  # an unusable profile: fall back to a plain conversion
    return converted if converted is not None else im


def _high_bit_depth_to_l(im: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale (I;16*, I, F) scaled into 8-bit L."""
    if im.mode == "F":
        lo, hi = cast(tuple[float, float], im.getextrema())
        scale = 255.0 / (hi - lo) if hi > lo else 1.0
        return im.point(lambda v: (v - lo) * scale).convert("L")
    im = im.convert("I") if im.mode != "I" else im
    _, hi = cast(tuple[int, int], im.getextrema())
    return im.point(lambda v: v / 256).convert("L") if hi > 255 else im.convert("L")


def _to_rgb(im: Image.Image, policy: ImagePolicy) -> Image.Image:
    """Every Pillow mode to RGB, or RGBA when alpha is present and kept."""
    if im.mode.startswith("I") or im.mode == "F":
        im = _high_bit_depth_to_l(im)
    im = _to_srgb(im)
    if has_alpha(im):
        im = im.convert("RGBA")
        if policy.keep_alpha:
            return im
        canvas = Image.new("RGB", im.size, policy.background)
        canvas.paste(im, mask=im.getchannel("A"))
        return canvas
    return im if im.mode == "RGB" else im.convert("RGB")
