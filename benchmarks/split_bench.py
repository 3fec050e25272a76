"""Tag strings split into lists: ``split_tags`` against the separator regex over every string.

On the e621-export-shaped file of ``captions_bench.py`` (``--posts`` posts, its
``tag_string``), read ``--batch-rows`` rows at a time as ``Dataset.select_in_batches`` reads
them, it splits every tag string (a) as ``split_tags`` did before, the separator regex over
every string, then strip and split, and (b) with ``split_tags``, which runs the regex and
the strip only on the strings that are not printable ASCII one space apart with no space at
an end. With ``--odd SHARE`` that share
of the strings gets a non-ASCII tag (e621 has tags such as ``pokémon``), so it takes the
regex. The two are alternated ``--repeat`` times; it prints the CPU and wall seconds of
each (medians), their ratio, and whether both gave the same lists.

    python benchmarks/split_bench.py [--posts 1000000] [--data DIR] [--odd 0.05] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e6ingest.metadata import split_tags
from e6ingest.metadata.schemas import _NO_TAGS, _SEPARATOR_RUN


def regex_everywhere(column: str) -> pl.Expr:
    """(a) the baseline: the separator regex over every string."""
    spaced = pl.col(column).fill_null("").str.replace_all(_SEPARATOR_RUN, " ")
    spaced = spaced.str.strip_chars(" ")
    return pl.when(spaced != "").then(spaced.str.split(" ")).otherwise(_NO_TAGS)


def batches(export: Path, rows: int, odd: float) -> list[pl.DataFrame]:
    """The file's tag strings, ``rows`` at a time; ``odd`` of them with a non-ASCII tag."""
    strings = pl.read_parquet(export, columns=["tag_string"])
    if odd:
        marked = pl.int_range(pl.len()).hash(7) % 10_000 < int(odd * 10_000)
        tagged = pl.col("tag_string") + " pokémon"
        strings = strings.select(pl.when(marked).then(tagged).otherwise("tag_string"))
    return [strings.slice(start, rows) for start in range(0, strings.height, rows)]


def timed(parts: list[pl.DataFrame], expr: pl.Expr) -> tuple[float, float, list[pl.Series]]:
    """CPU and wall seconds to split every part with ``expr``, and the lists."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = [part.lazy().select(expr).collect()["tag_string"] for part in parts]
    return time.process_time() - cpu, time.perf_counter() - wall, out


def main() -> None:
    import captions_bench

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--data", help="folder of captions_bench's files (default: a temp dir)")
    parser.add_argument("--batch-rows", type=int, default=250_000)
    parser.add_argument("--odd", type=float, default=0.0, help="share with a non-ASCII tag")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    data = Path(args.data or tempfile.mkdtemp(prefix="split-bench-"))
    data.mkdir(parents=True, exist_ok=True)
    captions_bench.prepare(data, args.posts)
    parts = batches(captions_bench.export_file(data), args.batch_rows, args.odd)
    sides = {"(a) regex over every string": regex_everywhere("tag_string"),
             "(b) split_tags": split_tags("tag_string")}  # fmt: skip
    seconds: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    lists: dict[str, list[pl.Series]] = {}
    for _ in range(args.repeat):
        for name, expr in sides.items():
            cpu, wall, lists[name] = timed(parts, expr)
            seconds[name].append((cpu, wall))
    rows = sum(part.height for part in parts)
    print(f"{rows:,} tag strings in parts of {args.batch_rows:,}, {args.odd:.0%} with a "
          f"non-ASCII tag; medians of {args.repeat}, alternated")  # fmt: skip
    medians = {}
    for name, runs in seconds.items():
        medians[name] = [statistics.median(r[i] for r in runs) for i in (0, 1)]
        print(f"{name}: {medians[name][0]:.2f} CPU-s, {medians[name][1]:.2f} s")
    (a_cpu, a_wall), (b_cpu, b_wall) = medians.values()
    print(f"(b) / (a): {b_cpu / a_cpu:.2f}x the CPU time, {b_wall / a_wall:.2f}x the wall time")
    same = all(x.equals(y) for x, y in zip(*lists.values(), strict=True))
    print(f"same lists: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
