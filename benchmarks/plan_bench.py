"""Planning memory: the plan written in batches of source shards against one pass.

On the danbooru-shaped parquet of ``metadata_bench.py`` (``--rows`` rows, built once, its
tags copied into ``tag_string_general`` so every post has a tag list to caption), it
plans every post rated e, q or s with quality and rating tags, each as its own process, (a)
in one pass (the whole selection with its tag lists and captions in memory at once), and
(b) in batches of ``--batch-rows`` posts, and prints time, peak RSS, their ratios, and
a hash of each plan's rows (equal when the plans are).

    python benchmarks/plan_bench.py [--rows 2000000] [--batch-rows 250000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))

from metadata_bench import CACHE, measure

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


def child(metadata: str, out: str, batch_rows: int) -> None:
    from e6ingest.captions import CaptionSpec
    from e6ingest.metadata import scan_files
    from e6ingest.pipeline.plan import PlanRequest, write_plan
    from e6ingest.query import selection_query

    frame = scan_files([metadata])
    query = selection_query("", ("e", "q", "s"))
    spec = CaptionSpec(quality_tag=True, rating_tag=True)
    request = PlanRequest(query, 1000, 1000, spec, batch_rows=batch_rows)
    rows = write_plan(frame, request, Path(out))
    print(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--batch-rows", type=int, default=250_000)
    args = parser.parse_args()
    # Built in its own process: a child forked from a big parent would report its RSS.
    metadata = CACHE / f"danbooru-shaped-{args.rows}-general.parquet"
    here = str(Path(__file__).resolve().parent)
    subprocess.run([sys.executable, "-c", PREPARE, here, str(args.rows), str(metadata)], check=True)
    work = Path(tempfile.mkdtemp(prefix="plan-bench-"))
    results = {}
    for name, batch in (("one pass", 10**12), ("batched", args.batch_rows)):
        out = work / f"{batch}.parquet"
        command = [sys.executable, __file__, "--child", str(metadata), str(out), str(batch)]
        seconds, rss, rows = measure(command)
        digest = pl.read_parquet(out).hash_rows().sum()
        results[name] = (seconds, rss)
        print(f"{name:>9}: {rows} posts planned in {seconds:.1f} s, peak RSS {rss:.0f} MB, "
              f"plan rows hash {digest}", flush=True)  # fmt: skip
        out.unlink()
    (s1, m1), (s2, m2) = results.values()
    print(f"batched / one pass: time {s2 / s1:.2f}x, peak RSS {m2 / m1:.2f}x")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
