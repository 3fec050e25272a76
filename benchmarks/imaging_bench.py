"""Image normalisation: e6ingest against a bare Pillow loop, on one fixed generated set.

The set: illustration-like images (gradients, shapes, grain) from 1 to 16 megapixels in
JPEG, PNG and WebP, generated once with a fixed seed. In one run:

(a) a bare Pillow loop: ``open -> convert("RGB") -> resize(LANCZOS) into the budget ->
    save(WEBP, same quality and method)``;
(b) e6ingest ``normalize`` in this process;
(c) e6ingest ``ImagePool`` on every core (pool started and warmed before timing);
(d) pass-through: already-compliant WebP (RGB, within budget) through ``normalize``, checked
    by decoding (the default) and by header (``--verify header``);
(e) with pyvips installed: (b) and (d, decode check) with the libvips backend, its output
    bytes and its PSNR against (b).

(a) to (d) use the Pillow backend.

It prints images/s for each, the ratios against the targets ((b) within 10% of (a), (c) at
least 1.8x (b), (d) at least 50x (b)) and the output bytes per image of (b) against (a).

    python benchmarks/imaging_bench.py [--quality 90] [--method 4] [--repeat 1]
"""

from __future__ import annotations

import argparse
import io
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from e6ingest.imaging import ImagePolicy, fit_size, normalize  # noqa: E402
from e6ingest.imaging.policy import vips_installed  # noqa: E402
from e6ingest.pipeline.imagepool import ImagePool  # noqa: E402

MEGAPIXELS = (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 12, 16)
FORMATS = ("JPEG", "PNG", "WEBP")
ASPECTS = (0.75, 1.0, 1.5, 0.5)


def illustration(megapixels: float, aspect: float, rng: random.Random) -> Image.Image:
    """Flat colours, soft gradients, line art and grain, the way booru art tends to look."""
    width = round((megapixels * 1e6 * aspect) ** 0.5)
    height = round(megapixels * 1e6 / width)
    small = (max(8, width // 8), max(8, height // 8))
    base = Image.merge(
        "RGB",
        [
            Image.linear_gradient("L").resize(small).rotate(rng.randrange(360)),
            Image.radial_gradient("L").resize(small),
            Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize(small),
        ],
    )
    draw = ImageDraw.Draw(base)
    for _ in range(40):
        x, y = rng.randrange(small[0]), rng.randrange(small[1])
        r = rng.randrange(4, max(5, small[0] // 4))
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour, outline=(0, 0, 0), width=2)
    im = base.resize((width, height), Image.Resampling.BICUBIC).filter(ImageFilter.SMOOTH)
    grain = Image.effect_noise((width, height), 12).convert("RGB")
    return Image.blend(im, grain, 0.06)


def make_set(quality: int) -> list[tuple[str, bytes]]:
    """The fixed benchmark set: (label, encoded bytes)."""
    rng = random.Random(20261124)
    out = []
    for i, mp in enumerate(MEGAPIXELS):
        for j, fmt in enumerate(FORMATS):
            im = illustration(mp, ASPECTS[(i + j) % len(ASPECTS)], rng)
            buf = io.BytesIO()
            options = {"quality": 92} if fmt != "PNG" else {"compress_level": 6}
            im.save(buf, fmt, **options)
            out.append((f"{mp} MP {fmt}", buf.getvalue()))
    rng.shuffle(out)  # a stream of posts is not sorted by size
    return out


def make_compliant(count: int, quality: int) -> list[bytes]:
    """Already-compliant WebPs (RGB, at most 4 MP), as e6ingest writes them."""
    rng = random.Random(7)
    out = []
    for i in range(count):
        im = illustration((0.5, 1, 2, 4)[i % 4], ASPECTS[i % len(ASPECTS)], rng)
        buf = io.BytesIO()
        im.save(buf, "WEBP", quality=quality, method=4)
        out.append(buf.getvalue())
    return out


def bare_pillow(data: bytes, policy: ImagePolicy) -> bytes:
    """What a hand-written script does."""
    im = Image.open(io.BytesIO(data)).convert("RGB")
    size = fit_size(im.width, im.height, policy.max_pixels, policy.max_side)
    if size != im.size:
        im = im.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "WEBP", quality=policy.quality, method=policy.method)
    return buf.getvalue()


def timed(run, images) -> tuple[float, list[bytes]]:
    start = time.perf_counter()
    outputs = run(images)
    return time.perf_counter() - start, outputs


def median_time(run, images, repeat: int) -> tuple[float, list[bytes]]:
    results = [timed(run, images) for _ in range(repeat)]
    return statistics.median(t for t, _ in results), results[0][1]


def psnr(a: bytes, b: bytes) -> float:
    """PSNR in dB between two encoded images of the same size."""
    x, y = (np.asarray(Image.open(io.BytesIO(d)).convert("RGB"), np.float64) for d in (a, b))
    mse = float(((x - y) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def vips_rows(args, images, compliant, out_b, rate_b, rate_d) -> list:
    """(e): the libvips backend on the same sets."""
    vips = ImagePolicy(quality=args.quality, method=args.method, backend="vips")
    normalize(images[0], vips)  # libvips loaded and proven before timing

    def run(items):
        return [normalize(d, vips)[0] for d in items]

    t_e, out_e = median_time(run, images, args.repeat)
    t_v, out_v = median_time(run, compliant, args.repeat)
    assert out_v == compliant, "compliant WebPs must pass through byte for byte"
    worst = min(psnr(a, b) for a, b in zip(out_b, out_e, strict=True))
    sizes = sum(map(len, out_e)) / sum(map(len, out_b))
    print(f"(e) libvips: output bytes {sizes:.3f}x (b)'s, lowest PSNR against (b) {worst:.1f} dB")
    e, v = len(images) / t_e, len(compliant) / t_v
    return [
        ("(e) normalize, libvips, 1 process", t_e, e, f"{e / rate_b:.2f}x (b)"),
        ("(e) pass-through, vips backend (Pillow checks)", t_v, v, f"{v / rate_d:.2f}x (d)"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--method", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--compliant", type=int, default=200, help="WebPs for (d)")
    args = parser.parse_args()
    policy = ImagePolicy(quality=args.quality, method=args.method, backend="pillow")

    print("generating the set ...", flush=True)
    images = [data for _, data in make_set(args.quality)]
    compliant = make_compliant(args.compliant, args.quality)
    mp = sum(Image.open(io.BytesIO(d)).width * Image.open(io.BytesIO(d)).height for d in images)
    print(f"{len(images)} images, {mp / 1e6:.0f} MP, {sum(map(len, images)) / 1e6:.0f} MB; "
          f"{len(compliant)} compliant WebPs; {os.cpu_count()} cores")  # fmt: skip

    def run_a(items):
        return [bare_pillow(d, policy) for d in items]

    def run_b(items):
        return [normalize(d, policy)[0] for d in items]

    t_a, out_a = median_time(run_a, images, args.repeat)
    t_b, out_b = median_time(run_b, images, args.repeat)
    with ImagePool(policy) as pool:
        list(pool.map(images[:2]))  # workers started and warm
        t_c, out_c = median_time(lambda items: [r[0] for r in pool.map(items)], images, args.repeat)
        workers = pool.workers
    assert out_c == out_b, "the pool must give the same bytes as one process"
    t_d, out_d = median_time(run_b, compliant, args.repeat)
    assert out_d == compliant, "compliant WebPs must pass through byte for byte"
    header = ImagePolicy(
        quality=args.quality, method=args.method, verify="header", backend="pillow"
    )
    t_h, _ = median_time(lambda items: [normalize(d, header)[0] for d in items], compliant, 1)

    n, m = len(images), len(compliant)
    rate = {"a": n / t_a, "b": n / t_b, "c": n / t_c, "d": m / t_d, "h": m / t_h}
    rows = [
        ("(a) bare Pillow loop", t_a, rate["a"], ""),
        ("(b) normalize, 1 process", t_b, rate["b"], f"{rate['b'] / rate['a']:.2f}x (a)"),
        (f"(c) ImagePool, {workers} workers", t_c, rate["c"], f"{rate['c'] / rate['b']:.2f}x (b)"),
        ("(d) pass-through, decode check", t_d, rate["d"], f"{rate['d'] / rate['b']:.0f}x (b)"),
        ("(d) pass-through, header check", t_h, rate["h"], f"{rate['h'] / rate['b']:.0f}x (b)"),
    ]
    if vips_installed():
        rows += vips_rows(args, images, compliant, out_b, rate["b"], rate["d"])
    print("| run | seconds | images/s | ratio |\n|---|---|---|---|")
    for name, seconds, per_second, ratio in rows:
        print(f"| {name} | {seconds:.2f} | {per_second:.2f} | {ratio} |")
    bytes_a, bytes_b = sum(map(len, out_a)) / n, sum(map(len, out_b)) / n
    print(f"\noutput bytes per image: (a) {bytes_a / 1e3:.0f} KB, (b) {bytes_b / 1e3:.0f} KB "
          f"({bytes_b / bytes_a:.3f}x), quality {args.quality}, method {args.method}")  # fmt: skip
    b_a, c_b, d_b = rate["b"] / rate["a"], rate["c"] / rate["b"], rate["d"] / rate["b"]
    print(
        f"targets: (b)/(a) >= 0.90: {b_a:.2f}; (c)/(b) >= 1.8: {c_b:.2f}; (d)/(b) >= 50: {d_b:.0f}"
    )


if __name__ == "__main__":
    main()
