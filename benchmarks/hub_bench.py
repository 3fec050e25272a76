"""Fetching posts from the Hub: e6ingest's HubSource against cheesechaser, the tool people
use today.

Serves the 1k-post e621 demo mirror through the local Hub server (tests/hubserver.py), which
speaks the Hub's HTTP protocol to the real huggingface_hub client, with a fixed latency per
request to stand for the network. The same 500-post selection is then fetched, each side in
its own process with an empty Hugging Face cache and the same number of threads, by:

(a) cheesechaser ``E621NewestWebpDataPool().batch_download_to_directory(ids, dir)``;
(b) e6ingest ``HubSource(manifest, HubOptions(...)).fetch_many(ids)``, written to files.

Each side runs ``--repeat`` times (fresh caches, a new fault seed each run); the median counts.

It prints posts/s for both and the ratio, once without faults and once with 10% of requests
failing transiently (5xx, dropped connections, 429 with Retry-After), and how many posts each
delivered intact (bytes equal to the mirror's) of the posts that exist, and how many requests
went to ``/resolve/`` URLs, which the Hub rate-limits (3,000 per 5 minutes anonymous, 5,000
logged in).

    python benchmarks/hub_bench.py [--posts 500] [--latency 0.02] [--threads 16]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hubserver import Faults, HubServer  # noqa: E402 (stdlib only: before huggingface_hub)

TRANSIENT = dict(error_5xx=0.06, drop=0.02, rate_limit=0.02)


def _cheesechaser(ids: list[int], out: Path, threads: int) -> None:
    from cheesechaser.datapool import E621NewestWebpDataPool

    pool = E621NewestWebpDataPool()
    pool.batch_download_to_directory(ids, str(out), max_workers=threads, silent=True,
                                     save_metainfo=False)  # fmt: skip


def _e6ingest(ids: list[int], out: Path, threads: int) -> None:
    from e6ingest.manifests import load_manifest
    from e6ingest.sources import Fetched, HubOptions, HubSource

    options = HubOptions(io_workers=threads, index_cache=str(out.parent / "indexes"))
    with HubSource(load_manifest("e621"), options) as source:
        for result in source.fetch_many(ids):
            if isinstance(result, Fetched):
                name = result.location.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
                (out / name).write_bytes(result.data)


ARMS = {"cheesechaser": _cheesechaser, "e6ingest": _e6ingest}


def arm(name: str, ids_file: str, out: str, threads: int) -> None:
    """One side of the benchmark, in its own process: fetch, then print seconds as JSON."""
    ids = json.loads(Path(ids_file).read_text())
    Path(out).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ARMS[name](ids, Path(out), threads)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def _expected(mirror: Path, n: int) -> tuple[list[int], dict[str, str]]:
    """The first ``n`` selected e621 posts, and the sha256 of each one that exists."""
    from e6ingest.dataset import load_metadata, select
    from e6ingest.manifests import load_manifest
    from e6ingest.sources import Fetched, MirrorSource

    posts = select(load_metadata("e621", mirror=mirror), ratings="e,q,s")
    ids = sorted(posts.select("id").collect()["id"].to_list())[:n]
    digests = {}
    with MirrorSource(mirror, load_manifest("e621")) as source:
        for result in source.fetch_many(ids):
            if isinstance(result, Fetched):
                name = result.location.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
                digests[name] = hashlib.sha256(result.data).hexdigest()
    return ids, digests


def _run(name: str, hub: HubServer, ids_file: Path, work: Path, threads: int) -> float:
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(work / "hf"),
           "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # fmt: skip
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from benchmarks.hub_bench import arm; "
        "arm(*sys.argv[2:5], int(sys.argv[5]))"
    )
    argv = [sys.executable, "-c", code, str(ROOT), name, str(ids_file), str(work / "out")]
    done = subprocess.run([*argv, str(threads)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def _intact(out: Path, digests: dict[str, str]) -> int:
    def digest(path: Path) -> str | None:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None

    return sum(1 for name, expected in digests.items() if digest(out / name) == expected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per request")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; the median counts")
    args = parser.parse_args()

    from e6ingest.demo import demo_mirror

    mirror = demo_mirror()
    ids, digests = _expected(mirror, args.posts)
    print(f"{len(ids)} posts selected, {len(digests)} exist; latency {args.latency * 1000:.0f} "
          f"ms per request, {args.threads} threads each")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        ids_file = Path(tmp) / "ids.json"
        ids_file.write_text(json.dumps(ids))
        for label, faults in (("no faults", {}), ("10% transient errors", TRANSIENT)):
            rates = {}
            for name in ARMS:
                runs = []
                for run in range(args.repeat):
                    work = Path(tmp) / f"{label.replace(' ', '_')}-{run}" / name
                    faults_now = Faults(latency=args.latency, seed=7 + run, **faults)
                    with HubServer(mirror, faults_now) as hub:
                        seconds = _run(name, hub, ids_file, work, args.threads)
                        requests = len(hub.requests)
                        resolves = sum(1 for r in hub.requests if "/resolve/" in r[1])
                    runs.append((seconds, _intact(work / "out", digests), requests, resolves))
                seconds, intact, requests, resolves = sorted(runs)[len(runs) // 2]
                rates[name] = len(ids) / seconds
                print(f"[{label}] {name:>12}: {seconds:6.2f} s, {rates[name]:6.1f} posts/s, "
                      f"{intact}/{len(digests)} delivered intact, {requests} requests "
                      f"({resolves} to /resolve/) "
                      f"(median of {args.repeat}; all runs: "
                      f"{', '.join(f'{s:.2f} s {i} intact' for s, i, _, _ in runs)})")  # fmt: skip
            ratio = rates["e6ingest"] / rates["cheesechaser"]
            print(f"[{label}] e6ingest / cheesechaser throughput: {ratio:.2f}x")


if __name__ == "__main__":
    main()
