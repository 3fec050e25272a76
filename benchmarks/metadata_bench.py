"""Metadata selection: e6ingest inspect --count against the pandas baseline users run today.

Builds (once, cached under benchmarks/.cache) an 8,000,000-row parquet with the real
danbooru2024 columns, row groups of 1,048,576 rows and tag strings with a realistic number
of tags per post and a Zipf-like frequency per tag (``solo`` on most posts,
``astolfo_(fate)`` on a few thousand, plus the near-misses ``solo_focus`` and
``astolfo_(fate)_(cosplay)`` that substring matching confuses with them). Then, each as its
own process, it times and measures the peak memory (max RSS) of:

(a) pandas.read_parquet(columns=[id, rating, tag_string]) + str.contains per tag + rating;
(f) the first question as a new user asks it: e6ingest inspect --metadata FILE --query ...
    --count in a fresh cache, no flags (the scan answers; its warnings check the query's tags
    in one more pass); then the second question (which builds the index, saying so) and a
    third (which reads it);
(b) e6ingest inspect --metadata FILE --query 'astolfo_(fate) solo -comic rating:e,q,s' --count
    --no-index: one streaming scan of the tag strings;
(c) e6ingest index --metadata FILE: the tag index, built into an empty cache;
(d) the first query on the index, its files dropped from the page cache first (cold);
(e) next queries as a user asks them one after another, each a new process (warm), each
    checked against the scan's answer;

and prints them, their ratios to (a), and how many posts each selected.

    python benchmarks/metadata_bench.py [--rows 8000000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from e6ingest.demo.tables import DANBOORU_COLUMNS

CACHE = Path(__file__).parent / ".cache"
ROW_GROUP = 1_048_576
QUERY = "astolfo_(fate) solo -comic rating:e,q,s"
NEXT_QUERIES = (  # asked one after another, as in a notebook
    "astolfo_(fate) solo",
    "astolfo_(fate) solo -comic",
    "astolfo_(fate) solo -comic rating:e",
    "solo -comic rating:e,q,s",
    "astolfo* solo -solo_focus",
)
# Tags placed with a fixed probability per post (the rest come from a Zipf vocabulary).
SPECIAL = {
    "solo": 0.62,
    "solo_focus": 0.07,
    "comic": 0.05,
    "astolfo_(fate)": 4000 / 8_000_000,
    "astolfo_(fate)_(cosplay)": 700 / 8_000_000,
}
RATINGS = (["g", "s", "q", "e"], [0.34, 0.36, 0.14, 0.16])
TYPES = {"s": pa.string(), "i": pa.int64(), "d": pa.float64(), "b": pa.bool_()}

BASELINE = """
import sys, pandas as pd
df = pd.read_parquet(sys.argv[1], columns=["id", "rating", "tag_string"])
tags = df["tag_string"]
mask = tags.str.contains("astolfo_(fate)", regex=False) & tags.str.contains("solo", regex=False)
mask &= ~tags.str.contains("comic", regex=False)
mask &= df["rating"].isin(["e", "q", "s"])
print(int(mask.sum()))
"""


def _vocabulary(size: int = 100_000) -> pa.Array:
    names = [f"tag_{i:05d}_{'abcdefghij'[i % 10] * (3 + i % 9)}" for i in range(size)]
    return pa.array(names)


def _chunk(rng: np.random.Generator, start: int, rows: int, vocab: pa.Array) -> pa.Table:
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    cdf = np.cumsum(weights) / weights.sum()
    counts = rng.poisson(28, rows).clip(1, 120)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    picks = np.searchsorted(cdf, rng.random(offsets[-1]))
    general = pc.binary_join(pa.ListArray.from_arrays(offsets, vocab.take(picks)), " ")
    parts = [
        pc.if_else(pa.array(rng.random(rows) < p), f"{tag} ", "") for tag, p in SPECIAL.items()
    ]
    tag_string = pc.binary_join_element_wise(*parts, general, "")
    columns = {}
    for name, kind in DANBOORU_COLUMNS:
        columns[name] = pa.nulls(rows, TYPES[kind])
    columns["id"] = pa.array(np.arange(start + 1, start + rows + 1))
    columns["rating"] = pa.array(rng.choice(RATINGS[0], rows, p=RATINGS[1]))
    columns["tag_string"] = tag_string
    columns["is_deleted"] = pa.array(np.zeros(rows, dtype=bool))
    return pa.table(columns)


def build(rows: int) -> Path:
    """The cached benchmark parquet of ``rows`` rows (built on first use)."""
    path = CACHE / f"danbooru-shaped-{rows}.parquet"
    if path.is_file():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    vocab = _vocabulary()
    tmp = path.with_suffix(".partial")
    writer = None
    for start in range(0, rows, ROW_GROUP):
        table = _chunk(rng, start, min(ROW_GROUP, rows - start), vocab)
        writer = writer or pq.ParquetWriter(tmp, table.schema, compression="snappy")
        writer.write_table(table, row_group_size=ROW_GROUP)
        print(f"  built {start + table.num_rows:,} rows", file=sys.stderr)
    writer.close()
    tmp.rename(path)
    return path


def measure(command: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and output of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {command}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024, out.strip()


def exact_count(path: Path) -> int:
    """The right answer, by splitting every tag string (slow, but obviously correct)."""
    total = 0
    for batch in pq.ParquetFile(path).iter_batches(columns=["rating", "tag_string"]):
        ratings, tag_strings = batch["rating"].to_pylist(), batch["tag_string"].to_pylist()
        for rating, tags in zip(ratings, tag_strings, strict=True):
            if rating in "eqs" and "astolfo_(fate)" in tags:
                words = set(tags.split())
                total += "astolfo_(fate)" in words and "solo" in words and "comic" not in words
    return total


def drop_from_page_cache(folder: Path) -> None:
    """Ask the kernel to forget the cached pages of the files in ``folder`` (cold reads)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def indexed_queries(cli: list[str], env: dict, base_s: float, base_mb: float) -> None:
    """(c) to (e): build the index into the (index-free) cache of ``env``, then ask."""
    cache = Path(env["E6INGEST_CACHE"])
    build_s, build_mb, _ = measure([sys.executable, "-m", "e6ingest", "index", *cli[4:]], env)
    print(f"(c) e6ingest index        : {build_s:7.2f} s  {build_mb:8.0f} MB  (once per file)")
    drop_from_page_cache(cache)
    first_s, first_mb, first_n = measure([*cli, "--query", QUERY, "--count"], env)
    print(
        f"(d) first query, cold     : {first_s:7.2f} s  {first_mb:8.0f} MB  selected "
        f"{first_n}  {base_s / first_s:.1f}x faster, {base_mb / first_mb:.1f}x less memory"
    )
    slowest = 0.0
    for query in NEXT_QUERIES:
        took, mb, n = measure([*cli, "--query", query, "--count"], env)
        _, _, scanned = measure([*cli, "--query", query, "--count", "--no-index"], env)
        slowest = max(slowest, took)
        same = "same as the scan" if n == scanned else f"SCAN SAYS {scanned}"
        print(f"(e) {query:34s}: {took:5.2f} s  {mb:6.0f} MB  selected {n:>9} ({same})")
    print(f"next queries: slowest {slowest:.2f} s, {base_s / slowest:.1f}x faster than (a)")


def first_questions(cli: list[str], base_s: float, base_mb: float) -> None:
    """(f) A new user's questions in a fresh cache, no flags: the first is scanned, the
    second builds the index, the third reads it."""
    cache = Path(tempfile.mkdtemp(prefix="e6ingest-first-", dir=CACHE))
    env = {**os.environ, "E6INGEST_CACHE": str(cache)}
    try:
        for turn, what in enumerate(("first (scan)", "second (builds)", "third (index)")):
            took, mb, n = measure([*cli, "--query", QUERY, "--count"], env)
            ratio = f"{base_s / took:.1f}x faster, {base_mb / mb:.1f}x less memory"
            print(f"(f) {what:22s}: {took:7.2f} s  {mb:8.0f} MB  selected {n}  {ratio}")
            if turn == 0:
                assert not list(cache.glob("index/*/index.json")), "the first question built"
    finally:
        shutil.rmtree(cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8_000_000)
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_only:
        build(args.rows)
        return
    # Built in a child process, so this one stays small: a child's peak RSS counts the
    # parent's memory it was forked from.
    subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--build-only"], check=True)
    path = build(args.rows)
    print(f"file: {path} ({path.stat().st_size / 1e9:.2f} GB, {args.rows:,} rows)")
    cli = [sys.executable, "-m", "e6ingest", "inspect", "--metadata", str(path)]
    cache = Path(tempfile.mkdtemp(prefix="e6ingest-cache-", dir=CACHE))
    env = {**os.environ, "E6INGEST_CACHE": str(cache)}
    try:
        base_s, base_mb, base_n = measure([sys.executable, "-c", BASELINE, str(path)])
        first_questions(cli, base_s, base_mb)
        scan = [*cli, "--query", QUERY, "--count", "--no-index"]
        measure(scan, env)  # once per file: the tag vocabulary its warnings check, cached
        ours_s, ours_mb, ours_n = measure(scan, env)
        print(f"(a) pandas + str.contains : {base_s:7.2f} s  {base_mb:8.0f} MB  selected {base_n}")
        print(f"(b) e6ingest inspect, scan: {ours_s:7.2f} s  {ours_mb:8.0f} MB  selected {ours_n}")
        print(f"scan: speed-up {base_s / ours_s:.1f}x, peak memory {base_mb / ours_mb:.1f}x lower")
        indexed_queries(cli, env, base_s, base_mb)
        # Last: it grows this process, whose memory a child's peak RSS would then count.
        print(f"exact answer (whole tags) : selected {exact_count(path)}")
    finally:
        shutil.rmtree(cache)


if __name__ == "__main__":
    main()
