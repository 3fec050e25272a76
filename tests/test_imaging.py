"""normalize(): every image to an RGB WebP within budget, or a typed refusal."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from e6ingest.imaging import ImagePolicy, fit_size, normalize
from e6ingest.sources import FailureKind, PostFailure


def encode(im: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **options)
    return out.getvalue()


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


@pytest.mark.parametrize(
    ("size", "expected_max"),
    [((1000, 800), (1000, 800)), ((4000, 3000), None), ((300, 60000), None), ((20000, 800), None)],
)
def test_fit_size(size, expected_max):
    w, h = fit_size(*size, 2048 * 2048)
    assert w * h <= 2048 * 2048 and max(w, h) <= 16383
    assert w <= size[0] and h <= size[1]
    if expected_max:
        assert (w, h) == expected_max
    assert abs(w / h - size[0] / size[1]) / (size[0] / size[1]) < 0.02


def test_compliant_webp_passes_through_byte_for_byte():
    data = encode(Image.new("RGB", (640, 480), (10, 200, 30)), "WEBP", quality=80)
    out, record = normalize(data)
    assert out == data and not record.reencoded and record.source_format == "WEBP"


def test_large_jpeg_is_scaled_into_the_budget():
    data = encode(Image.new("RGB", (3000, 2000), (200, 10, 10)), "JPEG")
    out, record = normalize(data)
    im = decode(out)
    assert im.format == "WEBP" and im.mode == "RGB"
    assert im.width * im.height <= 2048 * 2048
    assert (record.source_width, record.source_height) == (3000, 2000)
    assert record.reencoded and im.size == (record.width, record.height)


def test_strip_comic_respects_webp_side_limit():
    data = encode(Image.new("L", (300, 17000), 128), "PNG")
    im = decode(normalize(data, ImagePolicy(max_pixels=16_000_000))[0])
    assert max(im.size) <= 16383 and im.mode == "RGB"


def test_never_upscales():
    data = encode(Image.new("RGB", (320, 200)), "PNG")
    assert decode(normalize(data)[0]).size == (320, 200)


def test_alpha_is_composited_on_white_or_kept():
    im = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    data = encode(im, "PNG")
    assert decode(normalize(data)[0]).getpixel((5, 5)) == (255, 255, 255)
    kept = decode(normalize(data, ImagePolicy(keep_alpha=True, lossless=True))[0])
    assert kept.mode == "RGBA" and kept.getpixel((5, 5))[3] == 0


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (200, 100), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))  # a red corner at top-left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    out = decode(normalize(encode(im, "JPEG", exif=exif, quality=95))[0])
    assert out.size == (100, 200)
    r, _g, b = out.getpixel((95, 5))  # top-left moved to top-right
    assert r > 200 and b < 60


@pytest.mark.parametrize("mode", ["P", "LA", "L", "I;16", "1", "CMYK"])
def test_every_mode_ends_rgb(mode):
    im = Image.new("RGB", (50, 40), (30, 60, 90)).convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        im = Image.new("I;16", (50, 40), 40000)
    fmt = "JPEG" if mode == "CMYK" else "TIFF" if mode == "I;16" else "PNG"
    assert decode(normalize(encode(im, fmt))[0]).mode == "RGB"


def test_animated_gif_gives_first_frame_or_is_refused():
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    r, g, _ = decode(normalize(data)[0]).getpixel((20, 20))
    assert r > 200 and g < 50
    with pytest.raises(PostFailure) as info:
        normalize(data, ImagePolicy(allow_animation=False))
    assert info.value.kind is FailureKind.UNSUPPORTED


def test_avif_is_read():
    data = encode(Image.new("RGB", (64, 48), (0, 128, 0)), "AVIF")
    assert decode(normalize(data)[0]).size == (64, 48)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", FailureKind.UNDECODABLE),
        (b"definitely not an image", FailureKind.UNDECODABLE),
    ],
)
def test_refusals(data, kind):
    with pytest.raises(PostFailure) as info:
        normalize(data)
    assert info.value.kind is kind and info.value.stage == "image"


def test_truncated_jpeg_is_undecodable():
    data = encode(Image.effect_noise((400, 400), 60).convert("RGB"), "JPEG")
    with pytest.raises(PostFailure) as info:
        normalize(data[: len(data) // 2])
    assert info.value.kind is FailureKind.UNDECODABLE


def test_decompression_bomb_refused_quickly_without_decoding():
    # A 30000 x 30000 PNG header (900 MP) over a tiny body.
    bomb = Image.new("1", (30000, 30000))
    data = encode(bomb, "PNG", optimize=True)
    start = time.perf_counter()
    with pytest.raises(PostFailure) as info:
        normalize(data)
    assert info.value.kind is FailureKind.TOO_LARGE
    assert time.perf_counter() - start < 5  # refused from the header, nothing decoded
