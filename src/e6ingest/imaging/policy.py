"""What normalising an image must achieve: the policy, its output size and its record."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

from PIL import ImageColor

from e6ingest.core import check_plain_fields

WEBP_MAX_SIDE = 16383
DEFAULT_MAX_PIXELS = 2048 * 2048
# Pillow's own decompression-bomb ceiling (2 x Image.MAX_IMAGE_PIXELS, about 13400 x 13400):
# far above real posts, and about 540 MB decoded as RGB.
DEFAULT_MAX_SOURCE_PIXELS = 178_956_970
# Who decodes, orients, colour-manages and resizes the pixels; libwebp encodes either way.
BACKENDS = ("pillow", "vips")


def vips_installed() -> bool:
    """Whether the ``vips`` extra (pyvips) is installed, without importing it."""
    return importlib.util.find_spec("pyvips") is not None


def default_backend() -> str:
    """libvips when it is installed (``pip install "e6ingest[vips]"``), else Pillow."""
    return "vips" if vips_installed() else "pillow"


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
    # How a WebP kept as it is gets checked: "header" (its header and container read, so a
    # truncated file is refused; its bytes were already checked against the index's size
    # and sha256) or "decode" (every pixel decoded too: 1-2 ms per image).
    verify: str = "header"
    pass_through: bool = True  # keep already-compliant WebP as it is (False: re-encode all)
    backend: str = "auto"  # "pillow", "vips", or "auto": vips when installed

    def __post_init__(self) -> None:
        check_plain_fields(self)
        object.__setattr__(self, "background", parse_colour(self.background))
        if self.verify not in ("decode", "header"):
            raise ValueError(f"verify must be 'decode' or 'header', not {self.verify!r}")
        if not 0 <= self.quality <= 100:
            raise ValueError(f"quality must be within 0..100, not {self.quality}")
        if not 0 <= self.method <= 6:
            raise ValueError(f"method must be within 0..6, not {self.method}")
        if self.max_pixels < 1 or not 1 <= self.max_side <= WEBP_MAX_SIDE:
            raise ValueError("max_pixels must be positive and max_side within 1..16383")
        object.__setattr__(self, "backend", _backend(self.backend))


def _backend(name: str) -> str:
    if name == "auto":
        return default_backend()
    if name not in BACKENDS:
        raise ValueError(f"image backend must be 'pillow', 'vips' or 'auto', not {name!r}")
    if name == "vips" and not vips_installed():
        raise ValueError('image backend vips needs pyvips: pip install "e6ingest[vips]"')
    return name


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
    return (rgb[0], rgb[1], rgb[2])


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


def fit_size(
    width: int, height: int, max_pixels: int, max_side: int = WEBP_MAX_SIDE
) -> tuple[int, int]:
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
