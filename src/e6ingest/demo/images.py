"""Synthetic images for the demo mirror: every format and failure a real dataset has."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from typing import Any

from PIL import Image

# (kind, share of posts). Kinds with an image write a file into the post's shard.
KINDS = (
    ("webp", 0.58),
    ("jpg", 0.18),
    ("png_alpha", 0.07),
    ("gif", 0.04),
    ("avif", 0.03),
    ("webm", 0.03),  # a video post: metadata only, no image anywhere
    ("missing", 0.03),  # in metadata, absent from its shard
    ("truncated", 0.015),
    ("zero", 0.01),
    ("hash_mismatch", 0.005),  # bytes in the tar differ from what the index says
)
FILE_EXT = {
    "webp": "webp", "jpg": "jpg", "png_alpha": "png", "gif": "gif", "avif": "avif",
    "webm": "webm", "missing": "jpg", "truncated": "jpg", "zero": "png",
    "hash_mismatch": "webp",
}  # fmt: skip
NO_FILE = frozenset({"webm", "missing"})


@dataclass(frozen=True)
class DemoImage:
    """What the demo decided about one post's image."""

    kind: str
    width: int
    height: int

    @property
    def file_ext(self) -> str:
        return FILE_EXT[self.kind]


def choose_image(rng: random.Random) -> DemoImage:
    """A post's image kind and size: mostly under 1 MP, a few above 4 MP, rare strips."""
    kind = rng.choices([k for k, _ in KINDS], weights=[w for _, w in KINDS])[0]
    roll = rng.random()
    if roll < 0.05 and kind in ("jpg", "webp", "png_alpha"):
        width, height = rng.randint(2100, 2800), rng.randint(2100, 2600)  # above 4 MP
    elif roll < 0.06 and kind == "jpg":
        width, height = rng.randint(700, 900), rng.randint(16500, 18000)  # strip comic
    elif roll < 0.30:
        width, height = rng.randint(900, 1400), rng.randint(900, 1400)
    else:
        width, height = rng.randint(300, 900), rng.randint(300, 900)
    if kind in ("avif", "gif"):  # keep slow or palette formats small
        width, height = min(width, 800), min(height, 800)
    return DemoImage(kind, width, height)


def _picture(rng: random.Random, width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A smooth, compressible picture: a tiny random image scaled up (smoothly to an eighth
    of the size, then by repeating pixels: ten times faster to make and to encode)."""
    channels = len(mode)
    base = Image.frombytes(mode, (4, 4), bytes(rng.randrange(256) for _ in range(16 * channels)))
    smooth = base.resize((max(4, width // 8), max(4, height // 8)), Image.Resampling.BILINEAR)
    return smooth.resize((width, height), Image.Resampling.NEAREST)


def _encode(im: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **options)
    return out.getvalue()


def render(image: DemoImage, seed: str) -> bytes | None:
    """The bytes stored in the shard for ``image`` (None when the post has no file)."""
    if image.kind in NO_FILE:
        return None
    if image.kind == "zero":
        return b""
    rng = random.Random(seed)
    w, h = image.width, image.height
    if image.kind in ("webp", "hash_mismatch"):
        return _encode(_picture(rng, w, h), "WEBP", quality=50, method=0)
    if image.kind in ("jpg", "truncated"):
        data = _encode(_picture(rng, w, h), "JPEG", quality=88)
        return data[: len(data) // 2] if image.kind == "truncated" else data
    if image.kind == "png_alpha":
        return _encode(_picture(rng, w, h, "RGBA"), "PNG", compress_level=1)
    if image.kind == "avif":
        return _encode(_picture(rng, w, h), "AVIF", quality=60, speed=10)
    frames = [_picture(rng, w, h).quantize(64, method=Image.Quantize.FASTOCTREE) for _ in range(2)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
