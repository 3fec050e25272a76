"""Planning memory: the plan written in batches of source shards against one pass.

On the danbooru-shaped parquet of ``metadata_bench.py`` (``--rows`` rows, built once, its
tags copied into ``tag_string_general`` so every post has a tag list to caption), it
plans every post rated e, q or s with quality and rating tags, each as its own process, (a)
in one pass (the whole selection with its tag lists and captions in memory at once; left
out with ``--batched-only``, as it needs tens of GB at 12M rows), (b) in batches of
``--batch-rows`` posts, and (c) as ``e6ingest pull`` plans it (the dataset danbooru2024
from a mirror holding the file, in a fresh e6ingest cache, so its tag index is built first;
stopped once planned). With ``--sample N``, instead: (d) ``e6ingest pull --sample N`` planned
on the fresh metadata (no tag index: the pull scans) against (e) the scan of the same
selection, ``e6ingest inspect --rating e,q,s [--query TAGS] --count --no-index``. It
prints time, peak RSS (VmHWM, reset when each child starts: a child inherits its
parent's peak at fork), their ratios, and a hash of each plan's rows (equal when the
plans are).

    python benchmarks/plan_bench.py [--rows 2000000] [--batch-rows 250000] [--batched-only]
                                    [--pull-only] [--sample 1000 [--query TAGS] [--repeat N]]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))


PREPARE = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
import polars as pl
from metadata_bench import build
rows, out = int(sys.argv[2]), Path(sys.argv[3])
if not out.is_file():
    general = pl.col("tag_string").alias("tag_string_general")
    pl.scan_parquet(build(rows)).with_columns(general).sink_parquet(out)
"""


def reset_peak() -> None:
    """Start this process's peak RSS afresh: a child inherits its parent's at fork."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_mb() -> float:
    """This process's peak RSS (VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PlanWritten(Exception):
    """Raised to stop a pull once its plan is written."""


def pull_child(metadata: str, out: str, sample: int = 0, query: str = "") -> None:
    reset_peak()
    from e6ingest.config import make_config
    from e6ingest.pipeline import pull
    from e6ingest.pipeline.events import Event, Planned

    mirror = Path(out).with_suffix(".mirror")
    repo = mirror / "deepghs" / "danbooru2024-webp-4Mpixel"
    repo.mkdir(parents=True, exist_ok=True)
    if not (repo / "metadata.parquet").exists():
        os.symlink(metadata, repo / "metadata.parquet")
    config = make_config({"dataset": "danbooru2024", "rating": "e,q,s", "shard_size": 1000,
                          "sample": sample, "query": query,
                          "caption": {"quality_tag": True, "rating_tag": True}})  # fmt: skip
    planned: list[Planned] = []

    def stop(event: Event) -> None:
        if isinstance(event, Planned):
            planned.append(event)
            raise PlanWritten

    with contextlib.suppress(PlanWritten):
        pull(config, Path(out).with_suffix(".out"), mirror, progress=stop, workers=1)
    plan = Path(out).with_suffix(".out") / "plan.parquet"
    plan.rename(out)
    print(planned[0].selected, peak_mb())


def child(metadata: str, out: str, batch_rows: int) -> None:
    reset_peak()
    from e6ingest.captions import CaptionSpec
    from e6ingest.metadata import scan_files
    from e6ingest.pipeline.plan import PlanRequest, write_plan
    from e6ingest.query import selection_query

    frame = scan_files([metadata])
    query = selection_query("", ("e", "q", "s"))
    spec = CaptionSpec(quality_tag=True, rating_tag=True)
    request = PlanRequest(query, 1000, 1000, spec, batch_rows=batch_rows)
    rows = write_plan(frame, request, Path(out))
    print(rows, peak_mb())


def plan_hash(path: Path) -> int:
    """A hash of a plan's rows (without shard and position), read a row group at a time."""
    import pyarrow.parquet as pq

    total = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536):
        frame = pl.from_arrow(batch).drop("shard", "position")
        total += frame.select(sorted(frame.columns)).hash_rows().sum()
    return total % 2**64


def sampled_pull(metadata: Path, work: Path, sample: int, query: str, repeat: int) -> None:
    """(d) a pull of ``sample`` posts planned on fresh metadata, against (e) the scan;
    ``repeat`` pairs, alternated, each side in a fresh cache; the ratio of the medians."""
    from metadata_bench import measure

    pulls, scans = [], []
    for run in range(repeat):
        env = {**os.environ, "E6INGEST_CACHE": str(work / f"cache{run}")}
        out = work / "sampled.parquet"
        command = [sys.executable, __file__, "--child", str(metadata), str(out),
                   f"pull:{sample}", query]  # fmt: skip
        seconds, _, printed = measure(command, env)
        rows, rss = printed.split()
        scan = [sys.executable, "-m", "e6ingest", "inspect", "--metadata", str(metadata),
                "--rating", "e,q,s", "--query", query, "--count", "--no-index"]  # fmt: skip
        scan_s, scan_mb, selected = measure(scan, env)
        pulls.append(seconds)
        scans.append(scan_s)
        print(f"(d) pull --sample {sample}: {rows} posts planned in {seconds:.2f} s, "
              f"peak RSS {float(rss):.0f} MB; (e) scan, --count --no-index: {selected} posts "
              f"in {scan_s:.2f} s, peak RSS {scan_mb:.0f} MB; {seconds / scan_s:.2f}x",
              flush=True)  # fmt: skip
        out.unlink(missing_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    pull_s, scan_s = statistics.median(pulls), statistics.median(scans)
    print(f"planning / scan: {pull_s / scan_s:.2f}x the time (medians of {repeat}: "
          f"{pull_s:.2f} s / {scan_s:.2f} s)")  # fmt: skip


def main() -> None:
    # In the parent only: the children time what e6ingest imports, not the benchmark's.
    from metadata_bench import CACHE, measure

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--batch-rows", type=int, default=250_000)
    parser.add_argument("--batched-only", action="store_true")
    parser.add_argument("--pull-only", action="store_true")
    parser.add_argument("--sample", type=int, default=0)
    parser.add_argument("--query", default="", help="with --sample: the pull's query")
    parser.add_argument("--repeat", type=int, default=1, help="with --sample: pairs to run")
    args = parser.parse_args()
    # Built in its own process: a child forked from a big parent would report its RSS.
    metadata = CACHE / f"danbooru-shaped-{args.rows}-general.parquet"
    here = str(Path(__file__).resolve().parent)
    subprocess.run([sys.executable, "-c", PREPARE, here, str(args.rows), str(metadata)], check=True)
    work = Path(tempfile.mkdtemp(prefix="plan-bench-"))
    # e6ingest's cache for the children (a pull builds its tag index there): fresh each run
    os.environ["E6INGEST_CACHE"] = str(work / "cache")
    if args.sample:
        sampled_pull(metadata, work, args.sample, args.query, args.repeat)
        return
    results = {}
    runs = [("one pass", str(10**12)), ("batched", str(args.batch_rows)), ("pull", "pull")]
    runs = runs[2:] if args.pull_only else runs[1:] if args.batched_only else runs
    for name, batch in runs:
        out = work / f"{name.replace(' ', '-')}.parquet"
        command = [sys.executable, __file__, "--child", str(metadata), str(out), batch]
        seconds, _, printed = measure(command)
        rows, rss = printed.split()
        rss = float(rss)
        digest = plan_hash(out)
        results[name] = (seconds, rss)
        print(f"{name:>9}: {rows} posts planned in {seconds:.1f} s, peak RSS {rss:.0f} MB "
              f"({rss / 1024:.2f} GiB), plan rows hash {digest}", flush=True)  # fmt: skip
        out.unlink()
    shutil.rmtree(work, ignore_errors=True)
    if "one pass" in results:
        (s1, m1), (s2, m2) = results["one pass"], results["batched"]
        print(f"batched / one pass: time {s2 / s1:.2f}x, peak RSS {m2 / m1:.2f}x")


if __name__ == "__main__":
    if len(sys.argv) in (5, 6) and sys.argv[1] == "--child" and sys.argv[4].startswith("pull"):
        query = sys.argv[5] if len(sys.argv) == 6 else ""
        pull_child(sys.argv[2], sys.argv[3], int(sys.argv[4].partition(":")[2] or 0), query)
    elif len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
