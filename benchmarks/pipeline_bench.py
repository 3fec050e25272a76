"""A whole pull, end to end: scaling over workers, flat memory, and img2dataset.

On a demo mirror of ``--posts`` e621 posts (built once into ``--cache``) it runs, each as
its own process with the process tree's RSS sampled every 50 ms:

(a) ``e6ingest pull --workers 1`` and (b) ``--workers 2``: samples/s and the ratio b/a;
(c) the same pull on a 1,000-post demo mirror: peak RSS of (b) / peak RSS of (c);
(d) img2dataset (its own virtual environment, ``--img2dataset``) turning the same source
    images, extracted to files and served by a local HTTP server, into WebP webdataset
    shards at the same quality with its closest size mode (``keep_ratio_largest``,
    ``image_size 2048``, ``resize_only_if_bigger``): samples/s and the ratio b/d;
(e) with ``--ray``: the same pull as (b) with ``--executor ray`` on a one-node Ray cluster
    of 2 CPUs started here on 127.0.0.1: samples/s and the ratio e/b (the overhead of Ray on
    the same two cores), and the output bytes compared with (b). ``--ray-only`` runs (b), (e);
(v) with pyvips installed, (b) with ``--image-backend vips``: samples/s, its ratio to (d)
    and its peak RSS against (b)'s ((a) to (c) use Pillow);
(f) pass-through: the posts whose source is already a compliant WebP
    (``--query "filetype:webp mpixels:<4.19"``, 55% of the demo) pulled as they are, then
    (g) the same posts with ``--no-pass-through`` (re-encoded): samples/s and f/g, and
    (h) passed through with ``--verify decode`` (every kept WebP's pixels decoded too).
``--backends-only`` runs (b), (v), (d), (f), (g), (h).

    python -m venv /tmp/i2d && /tmp/i2d/bin/pip install img2dataset
    python benchmarks/pipeline_bench.py [--posts 5000] [--img2dataset /tmp/i2d/bin/img2dataset]
                                        [--ray | --ray-only | --backends-only [--repeat N]]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import polars as pl

from e6ingest.demo import build_demo
from e6ingest.manifests import load_manifest
from e6ingest.sources import Fetched, MirrorSource


def _tree_rss(root: int) -> int:
    """Resident bytes of process ``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total


def measure(command: list[str], **kwargs) -> tuple[float, int, str]:
    """Run ``command``; its wall seconds, the peak RSS of its process tree, its stdout."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
    peak = 0
    done = threading.Event()
    output: dict[str, bytes] = {}

    def drain() -> None:
        output["out"], output["err"] = proc.communicate()
        done.set()

    threading.Thread(target=drain, daemon=True).start()
    while not done.wait(0.05):
        peak = max(peak, _tree_rss(proc.pid))
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed:\n{output['err'].decode()[-3000:]}")
    return seconds, peak, output["out"].decode()


def demo(cache: Path, posts: int) -> Path:
    """The demo mirror of ``posts`` posts per site, built once."""
    root = cache / f"demo-{posts}"
    if not root.exists():
        print(f"building a demo mirror of {posts} posts in {root} ...", flush=True)
        build_demo(root, posts=posts, seed=0)
    return root


def pull(mirror: Path, out: Path, workers: int, *extra: str) -> tuple[int, float, int]:
    """``e6ingest pull`` of every post: (written, seconds, peak RSS)."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "e6ingest", "pull", "--mirror", str(mirror),
               "--out", str(out), "--workers", str(workers), "--log-json", *extra]  # fmt: skip
    seconds, peak, stdout = measure(command, env={**os.environ, **RAY_ENV})
    summary = json.loads(stdout.splitlines()[-1])
    return summary["written"], seconds, peak


def extract_sources(mirror: Path, pulled: Path, to: Path) -> list[tuple[str, str]]:
    """The source files of the posts the pull wrote, as files in ``to``: (name, caption)."""
    index = pl.concat([pl.read_parquet(p) for p in sorted((pulled / "shards").glob("*.parquet"))])
    captions = {}
    for shard in sorted((pulled / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".txt"):
                    captions[member.name[:-4]] = tar.extractfile(member).read().decode()
    to.mkdir(parents=True, exist_ok=True)
    rows = []
    with MirrorSource(mirror, load_manifest("e621")) as source:
        for key, fetched in zip(index["key"], source.fetch_many(index["id"]), strict=True):
            assert isinstance(fetched, Fetched), fetched
            name = f"{key.split('/')[1]}{Path(fetched.location.rsplit(':', 1)[-1]).suffix}"
            (to / name).write_bytes(fetched.data)
            rows.append((name, captions[key]))
    return rows


RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def ray_cluster(work: Path, cpus: int) -> str:
    """Start a one-node Ray cluster on 127.0.0.1; its address."""
    port = _free_port()
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head",
               "--node-ip-address=127.0.0.1", f"--port={port}", f"--num-cpus={cpus}",
               "--include-dashboard=false", "--disable-usage-stats",
               f"--temp-dir={work / 'ray-session'}"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, **RAY_ENV})
    return f"127.0.0.1:{port}"


def ray_stop() -> None:
    command = [sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"]
    subprocess.run(command, capture_output=True, env={**os.environ, **RAY_ENV})


def same_bytes(a: Path, b: Path) -> bool:
    """Whether two outputs hold byte-identical shards."""
    names = sorted(p.name for p in (a / "shards").glob("*.tar"))
    return names == sorted(p.name for p in (b / "shards").glob("*.tar")) and all(
        (a / "shards" / n).read_bytes() == (b / "shards" / n).read_bytes() for n in names
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def img2dataset(binary: str, files: Path, rows: list, out: Path, processes: int):
    """img2dataset over the files served on 127.0.0.1: (successes, seconds, peak RSS)."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(files)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        urls = out.parent / "urls.csv"
        with urls.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["url", "caption"])
            writer.writerows((f"http://127.0.0.1:{port}/{name}", cap) for name, cap in rows)
        shutil.rmtree(out, ignore_errors=True)
        command = [
            binary, "--url_list", str(urls), "--input_format", "csv", "--url_col", "url",
            "--caption_col", "caption", "--output_format", "webdataset",
            "--output_folder", str(out), "--processes_count", str(processes),
            "--thread_count", "16", "--number_sample_per_shard", "1000",
            "--image_size", "2048", "--resize_mode", "keep_ratio_largest",
            "--resize_only_if_bigger", "True", "--encode_format", "webp",
            "--encode_quality", "90", "--enable_wandb", "False",
            "--distributor", "multiprocessing", "--retries", "0",
        ]  # fmt: skip
        env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
        seconds, peak, _ = measure(command, env=env)
    finally:
        server.terminate()
        server.wait()
    stats = [json.loads(p.read_text()) for p in out.glob("*_stats.json")]
    return sum(s["successes"] for s in stats), seconds, peak


def run_ray(mirror: Path, work: Path, n2: int, s2: float) -> None:
    """(e): the pull of (b) on a one-node Ray cluster of 2 CPUs."""
    address = ray_cluster(work, 2)
    try:
        ne, se, _ = pull(mirror, work / "ray", 2, "--executor", "ray", "--ray-address", address)
    finally:
        ray_stop()
    print(f"(e) Ray, one node, 2 CPUs: {ne} samples in {se:.1f} s, {ne / se:.1f} samples/s")
    print(f"    Ray e/b: {(ne / se) / (n2 / s2):.2f}x (target >= 0.85); "
          f"shards identical to (b): {same_bytes(work / 'ray', work / 'w2')}")  # fmt: skip


PILLOW = ("--image-backend", "pillow")


def report(name: str, run: tuple[int, float, int]) -> float:
    """Print one run's line; its samples/s."""
    n, seconds, rss = run
    print(f"{name}: {n} samples in {seconds:.1f} s, {n / seconds:.1f} samples/s, "
          f"peak RSS {rss / 2**20:.0f} MiB", flush=True)  # fmt: skip
    return n / seconds


def _median_run(runs: list[tuple[int, float, int]]) -> tuple[int, float, int]:
    """Samples, median seconds and median peak RSS of runs of the same pull."""
    return runs[0][0], statistics.median(r[1] for r in runs), statistics.median(r[2] for r in runs)


def run_backends(args, mirror: Path, work: Path) -> None:
    """(b), (v) and (d): the two backends against img2dataset, ``--repeat`` rounds in
    turn (medians compared); (f), (g), (h): pass-through."""
    runs: dict[str, list[tuple[int, float, int]]] = {"b": [], "v": [], "d": []}
    i2d = Path(args.img2dataset).exists()
    for _ in range(args.repeat):
        runs["b"].append(pull(mirror, work / "w2", 2, *PILLOW))
        report("(b) workers 2, Pillow", runs["b"][-1])
        runs["v"].append(pull(mirror, work / "vips", 2, "--image-backend", "vips"))
        report("(v) workers 2, libvips", runs["v"][-1])
        if i2d:
            rows = extract_sources(mirror, work / "w2", work / "files")
            runs["d"].append(img2dataset(args.img2dataset, work / "files", rows, work / "i2d", 2))
            report("(d) img2dataset, 2 processes", runs["d"][-1])
    b, v = _median_run(runs["b"]), _median_run(runs["v"])
    if args.repeat > 1:
        print(f"medians of {args.repeat} runs each:")
    rate_b, rate_v = report("(b) Pillow", b), report("(v) libvips", v)
    print(f"    v/b: {rate_v / rate_b:.2f}x; peak RSS v/b: {v[2] / b[2]:.2f}x (target <= 1)")
    if i2d:
        d = _median_run(runs["d"])
        rate_d = report("(d) img2dataset", d)
        print(f"    b/d: {rate_b / rate_d:.2f}x; v/d: {rate_v / rate_d:.2f}x (target >= 2); "
              f"peak RSS v/d: {v[2] / d[2]:.2f}x")  # fmt: skip
    webp = ("--query", "filetype:webp mpixels:<4.19", "--image-backend", "vips")
    rate_f = report("(f) WebP posts, passed through", pull(mirror, work / "f", 2, *webp))
    g = pull(mirror, work / "g", 2, *webp, "--no-pass-through")
    rate_g = report("(g) the same posts re-encoded", g)
    print(f"    f/g: {rate_f / rate_g:.2f}x (target >= 5)")
    h = pull(mirror, work / "h", 2, *webp, "--verify", "decode")
    rate_h = report("(h) WebP posts, passed through, --verify decode", h)
    print(f"    h/g: {rate_h / rate_g:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=5000)
    parser.add_argument("--small-posts", type=int, default=1000)
    parser.add_argument("--img2dataset", default="/tmp/i2d/bin/img2dataset")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "e6bench")
    parser.add_argument("--ray", action="store_true", help="also (e), on Ray")
    parser.add_argument("--ray-only", action="store_true", help="only (b) and (e)")
    parser.add_argument(
        "--backends-only", action="store_true", help="only (b), (v), (d), (f), (g), (h)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="with --backends-only: rounds of (b), (v), (d)"
    )
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    big, small = demo(args.cache, args.posts), demo(args.cache, args.small_posts)
    work = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    try:
        if args.ray_only:
            n2, s2, _ = pull(big, work / "w2", 2, *PILLOW)
            print(f"(b) workers 2: {n2} samples in {s2:.1f} s, {n2 / s2:.1f} samples/s")
            run_ray(big, work, n2, s2)
            return
        if args.backends_only:
            run_backends(args, big, work)
            return
        n1, s1, rss1 = pull(big, work / "w1", 1, *PILLOW)
        print(f"(a) workers 1: {n1} samples in {s1:.1f} s, {n1 / s1:.1f} samples/s, "
              f"peak RSS {rss1 / 2**20:.0f} MiB", flush=True)  # fmt: skip
        n2, s2, rss2 = pull(big, work / "w2", 2, *PILLOW)
        print(f"(b) workers 2: {n2} samples in {s2:.1f} s, {n2 / s2:.1f} samples/s, "
              f"peak RSS {rss2 / 2**20:.0f} MiB", flush=True)  # fmt: skip
        print(f"    scaling b/a: {(n2 / s2) / (n1 / s1):.2f}x (target >= 1.7)")
        nc, sc, rssc = pull(small, work / "small", 2, *PILLOW)
        print(f"(c) {args.small_posts} posts, workers 2: {nc} samples in {sc:.1f} s, "
              f"peak RSS {rssc / 2**20:.0f} MiB")  # fmt: skip
        print(f"    peak RSS {n2} / {nc} samples: {rss2 / rssc:.2f}x (target <= 1.2)", flush=True)
        if args.ray:
            run_ray(big, work, n2, s2)
        if not Path(args.img2dataset).exists():
            print(f"(d) skipped: {args.img2dataset} not found (see the module docstring)")
            return
        rows = extract_sources(big, work / "w2", work / "files")
        nd, sd, rssd = img2dataset(args.img2dataset, work / "files", rows, work / "i2d", 2)
        print(f"(d) img2dataset, 2 processes: {nd} samples in {sd:.1f} s, "
              f"{nd / sd:.1f} samples/s, peak RSS {rssd / 2**20:.0f} MiB")  # fmt: skip
        print(f"    e6ingest b/d: {(n2 / s2) / (nd / sd):.2f}x (target >= 1.5)")
        size_e6 = sum(p.stat().st_size for p in (work / "w2" / "shards").glob("*.tar"))
        size_i2d = sum(p.stat().st_size for p in (work / "i2d").glob("*.tar"))
        print(f"    output bytes e6ingest / img2dataset: {size_e6 / size_i2d:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
