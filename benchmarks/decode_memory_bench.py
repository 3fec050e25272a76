"""Decode memory: what hostile and large images really take to normalise, against the
estimate e6ingest makes from their header (``imaging.decode_cost``) to share the budget.

Each image is normalised in a fresh process; its peak RSS (VmHWM, reset just before) above
the RSS it had then is the measured cost. Prints measured MB, estimated MB and estimate /
measured (at least 1 is what the budget needs; close to 1 keeps it from serialising images
needlessly).

    python benchmarks/decode_memory_bench.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

MEASURE = """
import json, sys, warnings
from e6ingest.imaging import ImagePolicy, estimate_cost, normalize

def high_water():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

data = open(sys.argv[1], "rb").read()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    estimate = estimate_cost(data)
    open("/proc/self/clear_refs", "w").write("5")  # the peak restarts from the RSS now
    base = high_water()
    normalize(data, ImagePolicy())
print(json.dumps({"measured": high_water() - base, "estimate": estimate}))
"""


def make_images(folder: Path) -> dict[str, Path]:
    """The images measured: hostile claims and large real-world kinds."""
    paths = {}
    a = Image.new("RGB", (13000, 13000), (10, 20, 30))
    b = Image.new("RGB", (13000, 13000), (30, 20, 10))
    paths["animated WebP 13000x13000"] = folder / "anim.webp"
    a.save(paths["animated WebP 13000x13000"], save_all=True, append_images=[b], lossless=True)
    del a, b
    paths["still WebP 16383x10900"] = folder / "still.webp"
    Image.new("RGB", (16383, 10900), (10, 20, 30)).save(paths["still WebP 16383x10900"],
                                                        lossless=True)  # fmt: skip
    deep = np.zeros((9000, 9000), dtype=np.uint16)
    deep[::7, ::5] = 60000
    paths["16-bit grey PNG 9000x9000"] = folder / "deep.png"
    Image.fromarray(deep).save(paths["16-bit grey PNG 9000x9000"])
    paths["RGBA PNG 10000x10000"] = folder / "rgba.png"
    Image.new("RGBA", (10000, 10000), (200, 100, 50, 128)).save(paths["RGBA PNG 10000x10000"])
    paths["RGB PNG 12000x12000"] = folder / "rgb.png"
    Image.new("RGB", (12000, 12000), (200, 100, 50)).save(paths["RGB PNG 12000x12000"])
    paths["JPEG 6000x6000"] = folder / "big.jpg"
    Image.new("RGB", (6000, 6000), (200, 100, 50)).save(paths["JPEG 6000x6000"], quality=90)
    return paths


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for name, path in make_images(Path(tmp)).items():
            done = subprocess.run([sys.executable, "-c", MEASURE, str(path)], check=True,
                                  capture_output=True, text=True)  # fmt: skip
            result = json.loads(done.stdout)
            rows.append((name, path.stat().st_size, result["measured"], result["estimate"]))
    print(f"{'image':28} {'file':>10} {'measured':>10} {'estimate':>10} {'ratio':>6}")
    for name, size, measured, estimate in rows:
        print(f"{name:28} {size / 1e3:>8.0f}KB {measured / 2**20:>8.0f}MB "
              f"{estimate / 2**20:>8.0f}MB {estimate / measured:>6.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
