"""The two image backends agree: the same sizes, the same refusals, and pixels within
40 dB PSNR of each other on ordinary and hostile images (their bytes are not equal)."""

from __future__ import annotations

import io
import math
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from e6ingest.core import PostFailure
from e6ingest.imaging import ImagePolicy, normalize
from tests.iccprofiles import rgb_profile

pytest.importorskip("pyvips", reason='the vips extra: pip install "e6ingest[vips]"')
pytestmark = pytest.mark.vips
MIN_PSNR = 40.0


def picture(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Illustration-like: soft gradients, flat shapes and lines."""
    x = np.linspace(0, 1, width)[None, :]
    y = np.linspace(0, 1, height)[:, None]
    rgb = np.stack(
        [255 * x * np.ones_like(y), 255 * y * np.ones_like(x), 128 + 100 * np.sin(6 * x + 4 * y)],
        axis=-1,
    )
    im = Image.fromarray(rgb.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    rng = np.random.default_rng(seed)
    for _ in range(12):
        x0, y0 = int(rng.integers(width)), int(rng.integers(height))
        size = int(rng.integers(4, max(5, min(width, height) // 3)))
        colour = tuple(int(c) for c in rng.integers(256, size=3))
        draw.ellipse((x0, y0, x0 + size, y0 + size), fill=colour)
        draw.line((x0, y0, int(rng.integers(width)), int(rng.integers(height))), (0, 0, 0), 3)
    if mode == "RGBA":
        alpha = Image.fromarray((255 * (x * np.ones_like(y))).astype(np.uint8), "L")
        im.putalpha(alpha)
    if mode == "P":  # flat palette art, as PNG and GIF hold it (not dithered noise)
        return im.quantize(64, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    if mode == "1":  # line art, thresholded
        return im.convert("L").point(lambda v: 255 if v > 128 else 0).convert("1")
    return im if mode in ("RGB", "RGBA") else im.convert(mode)


def encode(im: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **options)
    return out.getvalue()


def rotated_jpeg(turn: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = turn
    return encode(picture(2600, 1800, seed=turn), "JPEG", quality=92, exif=exif)


def png16(width: int, height: int) -> bytes:
    """A 16-bit RGB PNG (Pillow cannot write these)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    rows = b"".join(
        b"\0" + b"".join(struct.pack(">3H", 257 * x % 65536, 300 * y, 40000) for x in range(width))
        for y in range(height)
    )
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))  # fmt: skip


def animated(fmt: str) -> bytes:
    frames = [picture(300, 200, seed=s) for s in (1, 2)]
    options = {"lossless": True} if fmt == "WEBP" else {}
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], **options)


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


CASES = {
    "jpeg over budget": lambda: encode(picture(3000, 2200), "JPEG", quality=90),
    **{f"jpeg orientation {t}": (lambda t=t: rotated_jpeg(t)) for t in range(2, 9)},
    "png rgba composited": lambda: encode(picture(900, 700, "RGBA"), "PNG"),
    "png palette": lambda: encode(picture(640, 480, "P"), "PNG"),
    "png palette transparent": lambda: encode(picture(640, 480, "P"), "PNG", transparency=0),
    "png grey": lambda: encode(picture(640, 480, "L"), "PNG"),
    "png grey alpha": lambda: encode(picture(640, 480, "RGBA").convert("LA"), "PNG"),
    "png bilevel": lambda: encode(picture(640, 480, "1"), "PNG"),
    "png 16-bit rgb": lambda: png16(320, 200),
    "png 16-bit grey": lambda: encode(
        Image.fromarray((np.arange(480 * 640).reshape(480, 640) % 65536).astype(np.uint16)),
        "PNG",
    ),
    "png icc linear": lambda: encode(picture(400, 300), "PNG", icc_profile=rgb_profile(1.0)),
    "png strip comic": lambda: encode(picture(700, 17000, "L"), "PNG"),
    "png over budget": lambda: encode(picture(2500, 2500), "PNG"),
    "cmyk jpeg": lambda: encode(picture(800, 600, "CMYK"), "JPEG", quality=95),
    "webp over budget": lambda: encode(picture(2400, 2000), "WEBP", quality=95),
    "webp icc": lambda: encode(picture(400, 300), "WEBP", icc_profile=rgb_profile(1.0)),
    "webp rgba": lambda: encode(picture(600, 400, "RGBA"), "WEBP", lossless=True),
    "gif animated": lambda: animated("GIF"),
    "webp animated": lambda: animated("WEBP"),
    "avif": lambda: encode(picture(640, 480), "AVIF", quality=90),
    "tiff": lambda: encode(picture(640, 480), "TIFF"),
    "tiff ycbcr": lambda: encode(picture(640, 480).convert("YCbCr"), "TIFF"),
    "bmp": lambda: encode(picture(640, 480), "BMP"),
    "truncated jpeg": lambda: truncated(encode(picture(800, 600), "JPEG")),
    "truncated png": lambda: truncated(encode(picture(800, 600), "PNG")),
    "truncated webp": lambda: truncated(encode(picture(800, 600), "WEBP")),
    "zero bytes": lambda: b"",
    "not an image": lambda: b"<html>404</html>",
    "ico": lambda: b"\0\0\1\0" + bytes(40),
}
# The vips backend hands images kept at their size to Pillow; "halved" (a budget of half
# the source's pixels) has libvips scale, and so read, every case.
HALVED = -1
POLICIES = {
    "default": {},
    "alpha kept": {"keep_alpha": True, "background": "black"},
    "halved": {"max_pixels": HALVED},
    "halved, alpha kept": {"max_pixels": HALVED, "keep_alpha": True},
}


def options_for(data: bytes, policy: str) -> dict:
    """The policy's options, the budget of "halved" made from the source's size."""
    options = dict(POLICIES[policy])
    if options.get("max_pixels") == HALVED:
        try:
            width, height = Image.open(io.BytesIO(data)).size
        except Exception:  # not an image: refused whatever the budget
            width, height = 2, 2
        options["max_pixels"] = max(1, width * height // 2)
    return options


def result(data: bytes, backend: str, **options) -> tuple[Image.Image, bytes] | PostFailure:
    try:
        out, record = normalize(data, ImagePolicy(backend=backend, **options))
    except PostFailure as exc:
        return exc
    im = Image.open(io.BytesIO(out))
    im.load()
    assert im.size == (record.width, record.height)
    return im, out


def seen(im: Image.Image) -> np.ndarray:
    """What a viewer sees: RGBA composited onto grey (the colour under transparency is not
    defined, and the backends differ there), then the alpha itself beside it."""
    if im.mode != "RGBA":
        return np.asarray(im, dtype=np.float64)
    pixels = np.asarray(im, dtype=np.float64)
    alpha = pixels[..., 3:] / 255
    return np.concatenate([pixels[..., :3] * alpha + 128 * (1 - alpha), pixels[..., 3:]], -1)


def psnr(a: Image.Image, b: Image.Image) -> float:
    x, y = seen(a), seen(b)
    mse = float(((x - y) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("case", CASES)
def test_both_backends_agree(case, policy):
    data = CASES[case]()
    options = options_for(data, policy)
    pillow, vips = (result(data, b, **options) for b in ("pillow", "vips"))
    if isinstance(pillow, PostFailure) or isinstance(vips, PostFailure):
        assert isinstance(pillow, PostFailure) and isinstance(vips, PostFailure), (pillow, vips)
        assert pillow.kind is vips.kind
        return
    (a, _), (b, _) = pillow, vips
    assert (a.size, a.mode) == (b.size, b.mode)
    assert psnr(a, b) >= MIN_PSNR, f"{case}: {psnr(a, b):.1f} dB"


def test_the_vips_backend_decodes_with_libvips(monkeypatch):
    from e6ingest.imaging import vips

    opened = []
    real = vips._load
    monkeypatch.setattr(vips, "_load", lambda *a, **k: opened.append(1) or real(*a, **k))
    normalize(CASES["jpeg over budget"](), ImagePolicy(backend="vips"))
    assert opened
    opened.clear()
    normalize(CASES["bmp"](), ImagePolicy(backend="vips", max_pixels=100))  # read by Pillow
    normalize(CASES["png grey"](), ImagePolicy(backend="vips"))  # kept at its size: Pillow
    assert not opened


def test_jpeg_is_decoded_at_the_draft_scale(monkeypatch):
    from e6ingest.imaging import vips

    shrinks = []
    real = vips._load
    monkeypatch.setattr(
        vips, "_load", lambda data, **k: shrinks.append(k.get("shrink", 1)) or real(data, **k)
    )
    data = encode(picture(4400, 4400), "JPEG")  # drafted to 2200 x 2200, then resized
    _, record = normalize(data, ImagePolicy(backend="vips"))
    assert shrinks[-1] == 2 and (record.width, record.height) == (2048, 2048)
