"""normalize(): every image to an RGB WebP within budget, or a typed refusal; every test
runs through both backends (Pillow and libvips)."""

from __future__ import annotations

import contextlib
import io
import os
import struct
import threading
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from e6ingest.core import FailureKind, PostFailure
from e6ingest.imaging import ImagePolicy, fit_size, normalize, parse_colour
from tests.iccprofiles import rgb_profile

BACKENDS = ["pillow", pytest.param("vips", marks=pytest.mark.vips)]


@pytest.fixture(autouse=True, params=BACKENDS)
def backend(request, monkeypatch) -> str:
    """The backend every ``ImagePolicy()`` of the test gets by default."""
    if request.param == "vips":
        pytest.importorskip("pyvips", reason='the vips extra: pip install "e6ingest[vips]"')
    monkeypatch.setattr("e6ingest.imaging.policy.default_backend", lambda: request.param)
    return request.param


def spy_on_pixel_loads(monkeypatch, steps: list, real=None) -> None:
    """Append "load" to ``steps`` whenever either backend starts to decode pixels (Pillow
    loads them, or libvips opens the image); with ``real`` False, fail instead."""
    from e6ingest.imaging import vips

    def loading(name, original):
        def load(*args, **kwargs):
            if real is False:
                raise AssertionError(f"pixels were decoded ({name})")
            steps.append("load")
            return original(*args, **kwargs)

        return load

    monkeypatch.setattr(ImageFile.ImageFile, "load", loading("Pillow", ImageFile.ImageFile.load))
    monkeypatch.setattr(vips, "_load", loading("libvips", vips._load))


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


@pytest.fixture
def no_pixel_decoding(monkeypatch):
    """Fail the test if any image's pixels are decoded."""
    spy_on_pixel_loads(monkeypatch, [], real=False)


@pytest.mark.slow
@pytest.mark.usefixtures("no_pixel_decoding")
def test_decompression_bomb_refused_from_the_header():
    # A 30000 x 30000 PNG (900 MP, ~1 GB decoded) in a body of a few hundred kilobytes.
    data = encode(Image.new("1", (30000, 30000)), "PNG", optimize=True)
    assert len(data) < 1_000_000
    with pytest.raises(PostFailure) as info:
        normalize(data)
    assert info.value.kind is FailureKind.TOO_LARGE


def test_source_pixel_limit_refuses_before_decoding(monkeypatch):
    data = encode(Image.new("RGB", (4000, 3000)), "PNG")
    spy_on_pixel_loads(monkeypatch, [], real=False)
    with pytest.raises(PostFailure) as info:
        normalize(data, ImagePolicy(max_source_pixels=10_000_000))
    assert info.value.kind is FailureKind.TOO_LARGE and "10000000" in info.value.message


def close(pixel, expected, tolerance):
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


@pytest.mark.parametrize(
    ("cmyk", "rgb"),
    [((0, 255, 255, 0), (255, 0, 0)), ((255, 0, 255, 0), (0, 255, 0)), ((0, 0, 0, 255), (0, 0, 0))],
)
def test_cmyk_jpeg_colours(cmyk, rgb):
    data = encode(Image.new("CMYK", (64, 64), cmyk), "JPEG", quality=95)
    assert close(decode(normalize(data)[0]).getpixel((32, 32)), rgb, 12)


def test_icc_profile_is_converted_to_srgb():
    # Pixel value 128 in a linear-light profile is sRGB ~188; ignoring the profile leaves 128.
    data = encode(Image.new("RGB", (64, 64), (128, 128, 128)), "PNG", icc_profile=rgb_profile(1.0))
    out = decode(normalize(data)[0])
    assert close(out.getpixel((32, 32)), (188, 188, 188), 4)
    assert not out.info.get("icc_profile")


def test_webp_with_foreign_profile_is_not_passed_through():
    data = encode(Image.new("RGB", (64, 64), (128, 128, 128)), "WEBP", icc_profile=rgb_profile(1.0))
    out, record = normalize(data)
    assert record.reencoded and close(decode(out).getpixel((32, 32)), (188, 188, 188), 4)


@pytest.mark.parametrize(
    ("background", "expected"),
    [("black", (0, 0, 0)), ("#00ff00", (0, 255, 0)), ("10,20,30", (10, 20, 30))],
)
def test_configurable_background(background, expected):
    data = encode(Image.new("RGBA", (64, 64), (255, 0, 0, 0)), "PNG")
    out = decode(normalize(data, ImagePolicy(background=background))[0])
    assert close(out.getpixel((32, 32)), expected, 3)


def test_half_transparent_pixel_is_blended():
    data = encode(Image.new("RGBA", (64, 64), (0, 0, 0, 128)), "PNG")
    assert close(decode(normalize(data)[0]).getpixel((32, 32)), (127, 127, 127), 4)


@pytest.mark.parametrize("bad", ["nocolour", "1,2", "300,0,0"])
def test_bad_background_is_named(bad):
    with pytest.raises(ValueError, match="background"):
        parse_colour(bad)


def png16_rgb(width: int, height: int, rgb16: tuple[int, int, int]) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write these)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = b"\0" + struct.pack(">3H", *rgb16) * width
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    return png + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b"")


def test_16_bit_rgb_png():
    out = decode(normalize(png16_rgb(48, 32, (65535, 32768, 0)))[0])
    assert out.size == (48, 32) and close(out.getpixel((10, 10)), (255, 128, 0), 4)


def test_16_bit_greyscale_keeps_its_level():
    data = encode(Image.new("I;16", (40, 30), 40000), "PNG")
    assert close(decode(normalize(data)[0]).getpixel((5, 5)), (156, 156, 156), 3)


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
def test_bmp_and_tiff(fmt):
    data = encode(Image.new("RGB", (70, 50), (20, 40, 220)), fmt)
    out, record = normalize(data)
    assert record.source_format == fmt and close(decode(out).getpixel((35, 25)), (20, 40, 220), 6)


def test_ycbcr_tiff():
    data = encode(Image.new("RGB", (64, 64), (200, 30, 30)).convert("YCbCr"), "TIFF")
    assert close(decode(normalize(data)[0]).getpixel((8, 8)), (200, 30, 30), 8)


def test_animated_webp_gives_first_frame():
    frames = [Image.new("RGB", (40, 40), c) for c in ((0, 0, 255), (0, 255, 0))]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    out, record = normalize(data)
    assert record.reencoded and out != data
    assert close(decode(out).getpixel((20, 20)), (0, 0, 255), 6)
    assert not getattr(decode(out), "is_animated", False)


def test_lossless_only_for_lossless_sources():
    noise = Image.effect_noise((128, 128), 80).convert("RGB")
    lossless = ImagePolicy(lossless=True)
    out = decode(normalize(encode(noise, "PNG"), lossless)[0])
    assert out.tobytes() == noise.tobytes()
    jpeg_out, _ = normalize(encode(noise, "JPEG", quality=95), lossless)
    assert jpeg_out[12:16] == b"VP8 "  # the lossy bitstream


@pytest.mark.parametrize(("size", "budget"), [((300, 60000), 2048 * 2048), ((60000, 300), 10**6)])
def test_extreme_aspect_ratio_within_budget_and_side(size, budget):
    data = encode(Image.new("L", size, 90), "PNG")
    out, record = normalize(data, ImagePolicy(max_pixels=budget, max_source_pixels=10**8))
    im = decode(out)
    assert im.size == (record.width, record.height)
    assert im.width * im.height <= budget and max(im.size) <= 16383
    assert abs(im.width / im.height - size[0] / size[1]) / (size[0] / size[1]) < 0.05


def test_header_verification_passes_through_without_decoding(monkeypatch):
    data = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "WEBP")
    loads: list[str] = []
    spy_on_pixel_loads(monkeypatch, loads)
    assert normalize(data, ImagePolicy(verify="header"))[0] == data and not loads
    assert normalize(data, ImagePolicy(verify="decode"))[0] == data and loads


@pytest.mark.parametrize("kept", [0.999, 0.5, 0.05])
def test_default_check_refuses_a_truncated_webp_without_decoding(monkeypatch, kept):
    whole = encode(Image.effect_noise((320, 240), 40).convert("RGB"), "WEBP")
    loads: list[str] = []
    spy_on_pixel_loads(monkeypatch, loads)
    assert ImagePolicy().verify == "header"
    with pytest.raises(PostFailure) as refused:
        normalize(whole[: int(len(whole) * kept)])
    assert refused.value.kind is FailureKind.UNDECODABLE and not loads


def test_pass_through_can_be_turned_off():
    data = encode(Image.effect_noise((128, 128), 40).convert("RGB"), "WEBP", quality=100)
    assert normalize(data)[0] == data
    out, record = normalize(data, ImagePolicy(pass_through=False, quality=50))
    assert record.reencoded and len(out) < len(data) and decode(out).size == (128, 128)


def test_rgba_webp_passes_through_only_when_alpha_is_kept():
    data = encode(Image.new("RGBA", (64, 64), (9, 9, 9, 100)), "WEBP", lossless=True)
    assert normalize(data, ImagePolicy(keep_alpha=True))[0] == data
    out, record = normalize(data)
    assert record.reencoded and decode(out).mode == "RGB"


def test_over_budget_webp_is_reencoded():
    data = encode(Image.new("RGB", (2100, 2100), (5, 5, 5)), "WEBP")
    out, record = normalize(data)
    assert record.reencoded and decode(out).width * decode(out).height <= 2048 * 2048


def test_record_times_the_work():
    _, record = normalize(encode(Image.new("RGB", (500, 500)), "PNG"))
    assert 0 < record.seconds < 60


def test_background_from_config_file_and_flag():
    from e6ingest.config import ConfigError, make_config

    assert make_config({"image": {"background": [0, 0, 0]}}).image.background == (0, 0, 0)
    assert make_config({"image": {"background": "#102030"}}).image.background == (16, 32, 48)
    with pytest.raises(ConfigError, match=r"\[image\].*background"):
        make_config({"image": {"background": "nope"}})


# -- memory: the decode cost known from the header, bounded by a shared budget -------------

DATA = Path(__file__).parent / "data"


def _png_header(width: int, height: int, bit_depth: int, colour_type: int) -> bytes:
    """A PNG claiming a size and mode, with no pixel data (Pillow opens it; decoding fails)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))


@pytest.mark.parametrize(
    ("make", "measured"),
    [
        # Peak memory measured with Pillow 13 (benchmarks/decode_memory_bench.py).
        (lambda: (DATA / "animated-13000x13000.webp").read_bytes(), 2586 << 20),
        (lambda: (DATA / "still-16383x10900.webp").read_bytes(), 2725 << 20),
        (lambda: _png_header(9000, 9000, 16, 0), 852 << 20),
        (lambda: _png_header(10000, 10000, 8, 6), 1243 << 20),
        (lambda: _png_header(12000, 12000, 8, 2), 663 << 20),
    ],
)
def test_decode_cost_covers_what_decoding_takes(make, measured):
    from e6ingest.imaging import decode_cost

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(io.BytesIO(make()))
    assert measured <= decode_cost(im) <= 2 * measured


def test_a_shared_budget_bounds_decoding_across_workers():
    from e6ingest.imaging import decode_cost
    from e6ingest.pipeline.budget import MemoryBudget
    from e6ingest.pipeline.imagepool import ImagePool

    images = [encode(Image.new("RGB", (600 + i, 500), (i, 90, 200)), "PNG") for i in range(12)]
    costs = [decode_cost(Image.open(io.BytesIO(data))) for data in images]
    budget = MemoryBudget(int(max(costs) * 1.5))  # room for one image at a time
    with ImagePool(ImagePolicy(), workers=2, budget=budget) as pool:
        results = list(pool.map(images))
    assert all(not isinstance(r, PostFailure) for r in results)
    assert max(costs) <= budget.peak <= budget.total
    roomy = MemoryBudget(sum(costs))
    with ImagePool(ImagePolicy(), workers=2, budget=roomy) as pool:
        assert [r[0] for r in pool.map(images)] == [r[0] for r in results]


def test_an_image_over_the_whole_budget_still_decodes_alone():
    from e6ingest.pipeline.budget import MemoryBudget

    budget = MemoryBudget(1 << 20)  # far below one decode
    _, record = normalize(encode(Image.new("RGB", (900, 700)), "PNG"), ImagePolicy(), budget)
    assert (record.width, record.height) == (900, 700)
    assert budget.peak == budget.total


def _ico_holding(png: bytes) -> bytes:
    """An ICO whose one entry says 256x256 and holds ``png`` (of any size)."""
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 6 + 16)
    return header + entry + png


def test_ico_and_icns_are_refused_before_decoding():
    big = _png_header(12000, 12000, 8, 2)  # 144 Mpx behind a 256x256 directory entry
    failure = _failure(_ico_holding(big))
    assert failure.kind is FailureKind.UNSUPPORTED and "ICO" in failure.message
    icns = b"icns" + struct.pack(">I", 8 + 8 + len(big)) + b"ic10" + struct.pack(">I", 8 + len(big))
    failure = _failure(icns + big)
    assert failure.kind is FailureKind.UNSUPPORTED and "ICNS" in failure.message


def _failure(data: bytes) -> PostFailure:
    with pytest.raises(PostFailure) as info:
        normalize(data, ImagePolicy(), _NoDecodeBudget())
    return info.value


class _NoDecodeBudget:
    """A budget that fails the test if anything asks to decode."""

    def hold(self, nbytes):
        raise AssertionError(f"decoding ({nbytes} bytes) was asked for")


def test_a_png_is_decoded_only_under_the_budget(monkeypatch):
    steps: list[str] = []

    class Budget:
        @contextlib.contextmanager
        def hold(self, nbytes):
            steps.append("hold")
            yield

    exif = Image.Exif()
    exif[0x0112] = 6  # rotated
    image = Image.new("RGB", (300, 200), (1, 2, 3))
    plain, rotated = encode(image, "PNG"), encode(image, "PNG", exif=exif)
    spy_on_pixel_loads(monkeypatch, steps)
    _, record = normalize(plain, ImagePolicy(), Budget())  # no EXIF: decoded to look
    assert steps[0] == "hold" and (record.width, record.height) == (300, 200)
    steps.clear()
    _, record = normalize(rotated, ImagePolicy(), Budget())
    assert steps[0] == "hold" and (record.width, record.height) == (200, 300)


@pytest.mark.slow
def test_two_large_webp_never_decode_at_once_over_the_budget():
    """The still WebP takes 2.7 GB to decode; two workers with a 2.2 GB budget must take
    turns (before, its cost was under half the budget and both decoded at once)."""
    from e6ingest.pipeline.budget import MemoryBudget
    from e6ingest.pipeline.imagepool import ImagePool

    data = (DATA / "still-16383x10900.webp").read_bytes()
    budget = MemoryBudget(2200 << 20)
    with ImagePool(ImagePolicy(), workers=2, budget=budget) as pool:
        peak = [0]
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], sum(_rss(pid) for pid in _children()))

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            results = list(pool.map([data, data]))
        finally:
            done.set()
            watcher.join()
    assert all(not isinstance(r, PostFailure) for r in results)
    assert peak[0] < 4000 << 20  # one decode at a time (about 2.8 GB), never two (5.5 GB)


def _children() -> list[int]:
    """The processes this one started (its image workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            found.append(int(stat.parent.name))
    return found


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def test_the_vips_backend_without_pyvips_is_one_clear_line(monkeypatch, capsys):
    from e6ingest.cli import main

    monkeypatch.setattr("e6ingest.imaging.policy.vips_installed", lambda: False)
    code = main(["pull", "--mirror", ".", "--out", "x", "--image-backend", "vips"])
    err = capsys.readouterr().err
    assert code == 2 and 'pip install "e6ingest[vips]"' in err and len(err.splitlines()) == 1


_FREED_BLOCK_RSS = """
import re, sys
from e6ingest.imaging.header import configure_malloc
if sys.argv[1] == "configured":
    configure_malloc()
def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) >> 10
first = b"x" * (24 << 20)  # freed: glibc alone would now keep blocks under 24 MiB
del first
before = rss()
block = b"x" * (16 << 20)  # touched: 16 MiB resident
del block
print(rss() - before)
"""


def test_configured_malloc_gives_an_image_sized_block_back():
    """A worker's image-sized block goes back to the system when freed, after an image
    larger still (glibc's own threshold would rise and keep it): memory stays flat."""
    import subprocess
    import sys

    def kept(mode: str) -> int:
        run = [sys.executable, "-c", _FREED_BLOCK_RSS, mode]
        return int(subprocess.run(run, capture_output=True, text=True, check=True).stdout)

    assert kept("configured") < 4
    assert kept("default") >= 12  # the difference the setting makes, on this glibc
