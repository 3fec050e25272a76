"""When to download a source shard whole instead of reading its files by range.

Writes one synthetic indexed shard (``--files`` files of random bytes, sizes drawn around
``--file-kb``, laid out as e621's 2024 WebP repository) and serves it through the local Hub
server with a per-request latency and one shared link of ``--bandwidth-mbps``. For each share
of the shard's files it times, each with an empty cache, (a) range reads of those files
(``io_workers`` at a time) and (b) one whole-shard download read locally, and prints
whole / range time: below 1, the whole shard was faster. The crossing point is what
``--whole-shard-share`` should be on such a link.

    python benchmarks/whole_shard_bench.py [--files 400] [--file-kb 500] [--latency 0.1]
        [--bandwidth-mbps 400]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hubserver import Faults, HubServer  # noqa: E402

from e6ingest.demo.writer import write_indexed_tar  # noqa: E402
from e6ingest.manifests import load_manifest  # noqa: E402
from e6ingest.sources import HubOptions, HubSource  # noqa: E402

SHARES = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0)


def _shard(root: Path, files: int, kb: int) -> list[int]:
    repo = load_manifest("e621").images[0]
    rng = random.Random(0)
    sizes = [max(1024, int(rng.lognormvariate(0, 0.5) * kb * 1024)) for _ in range(files)]
    posts = [(1000 * (n + 1), "webp", rng.randbytes(size), False) for n, size in enumerate(sizes)]
    write_indexed_tar(root, repo, 0, posts)
    return [post_id for post_id, *_ in posts]


def _time(root: Path, ids: list[int], whole: bool, args, tmp: Path) -> float:
    faults = Faults(latency=args.latency, bandwidth=args.bandwidth_mbps * 1e6 / 8)
    with HubServer(root, faults) as hub:
        options = HubOptions(endpoint=hub.endpoint, cache_dir=str(tmp / "hf"),
                             index_cache=str(tmp / "idx"), io_workers=args.io_workers)  # fmt: skip
        start = time.perf_counter()
        with HubSource(load_manifest("e621"), options, frozenset({0} if whole else ())) as source:
            delivered = sum(1 for r in source.fetch_many(ids) if not isinstance(r, Exception))
        seconds = time.perf_counter() - start
    assert delivered == len(ids), f"delivered {delivered} of {len(ids)}"
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--file-kb", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per request")
    parser.add_argument("--bandwidth-mbps", type=float, default=400)
    parser.add_argument("--io-workers", type=int, default=HubOptions().io_workers)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "mirror"
        ids = _shard(root, args.files, args.file_kb)
        size = sum(p.stat().st_size for p in root.rglob("*.tar")) / 1e6
        print(f"one shard of {args.files} files, {size:.0f} MB; latency "
              f"{args.latency * 1000:.0f} ms, link {args.bandwidth_mbps:.0f} Mbit/s, "
              f"{args.io_workers} I/O workers")  # fmt: skip
        for n, share in enumerate(SHARES):
            chosen = random.Random(n).sample(ids, max(1, round(share * len(ids))))
            ranges = _time(root, chosen, False, args, Path(tmp) / f"r{n}")
            whole = _time(root, chosen, True, args, Path(tmp) / f"w{n}")
            print(f"share {share:4.2f}: ranges {ranges:6.2f} s, whole shard {whole:6.2f} s, "
                  f"whole / ranges {whole / ranges:5.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
