"""Metadata selection: e6ingest inspect --count against the pandas baseline users run today.

Builds (once, cached under benchmarks/.cache) an 8,000,000-row parquet with the real
danbooru2024 columns, row groups of 1,048,576 rows and tag strings with a realistic number
of tags per post and a Zipf-like frequency per tag (``solo`` on most posts,
``astolfo_(fate)`` on a few thousand, plus the near-misses ``solo_focus`` and
``astolfo_(fate)_(cosplay)`` that substring matching confuses with them). Then, each as its
own process, it times and measures the peak memory (max RSS) of:

(a) pandas.read_parquet(columns=[id, rating, tag_string]) + str.contains per tag + rating;
(b) e6ingest inspect --metadata FILE --query 'astolfo_(fate) solo -comic rating:e,q,s' --count

and prints both, their ratios, and how many posts each selected.

    python benchmarks/metadata_bench.py [--rows 8000000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
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


def measure(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and output of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
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
    base_s, base_mb, base_n = measure([sys.executable, "-c", BASELINE, str(path)])
    ours_s, ours_mb, ours_n = measure([*cli, "--query", QUERY, "--count"])
    truth = exact_count(path)
    print(f"(a) pandas + str.contains : {base_s:7.2f} s  {base_mb:8.0f} MB  selected {base_n}")
    print(f"(b) e6ingest inspect      : {ours_s:7.2f} s  {ours_mb:8.0f} MB  selected {ours_n}")
    print(f"exact answer (whole tags) : selected {truth}")
    print(f"speed-up {base_s / ours_s:.1f}x, peak memory {base_mb / ours_mb:.1f}x lower")


if __name__ == "__main__":
    main()
