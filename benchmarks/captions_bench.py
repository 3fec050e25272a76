"""Captions for millions of posts: e6ingest's bulk path against the per-row loop users write.

Generates N synthetic e621-shaped posts (tags as space-separated strings per category, the
way the e621 export reads once a tags table restored categories) and natural-language
captions for 60% of them (e621-captions fields: a regular summary of two to six sentences
and a brief one of one, about 60 and 15 words, each post's own, drawn from 50,000 made-up
sentences; 90% finished with "STOP", some with newlines or empty summaries), both as
parquet. Then, each in its own process, from the same files:

(a) what users run today: pandas ``itertuples``, a per-row Python split, rewrite and join,
    NL texts looked up in a dict built from the captions file;
(b) e6ingest: the posts split into part files of the rows planning captions at once, as
    planning splits its selection (before the clock starts), then each part read whole by
    polars, as planning reads its parts, the tags split into lists by the e621 schema's
    ``split_tags`` in polars' streaming engine (as planning's selection is split and
    written), ``read_nl_captions`` and ``build_captions`` with the equivalent spec (e621 order,
    underscores to spaces keeping emoticons, a blacklist, dedupe, ``tags+nl``); the
    captions stay a polars column, as planning keeps them.

It prints both times, the ratio and each process's peak memory, and checks that both
produce the same captions (sha256 over all of them, in order). With ``--max-tokens N``,
(b) also fits every caption to N CLIP tokens, the rarest tags kept first by the posts' tag
counts, as the command does (the loop has no such step, so the captions differ by design):
it is then checked that none is longer, by the tokenizer.

Each side runs ``--repeat`` times (default 3), the two alternated, in fresh processes; the
median of each side is compared (this machine's timings vary by 20-30% between runs).

``--variants``: (b) builds the caption and the ``standard`` variants (short, medium, full:
three budgeted captions more), and, as ``--variants`` does with NL captions, those and
brief and tags+nl (five budgeted captions more, brief from each post's brief summary);
the ratio of each to one caption is printed as well.

``--cli``: the case as users run it, end to end: the posts as one e621-export-shaped
metadata file (``tag_string``), (a) the loop over it, writing a JSON line (id, caption)
per post, (c) ``e6ingest captions --metadata
FILE --nl-captions nl.parquet --out captions.jsonl`` (process start, reading, the tag index
and writing included) in a fresh cache, and (d) the same again, its tag index built.
With ``--no-nl`` as well, both without the NL captions: the loop joins the tags alone and
the command is ``e6ingest captions --metadata FILE --out captions.jsonl``.

    python benchmarks/captions_bench.py [--posts 5000000] [--data DIR] [--max-tokens 75]
                                        [--repeat 3] [--variants] [--cli [--no-nl]]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ORDER = ("artist", "copyright", "character", "species", "general", "lore", "meta")
# (vocabulary size, min, max tags per post) per category, about e621's shape
SHAPE = {
    "artist": (20_000, 1, 2), "copyright": (5_000, 0, 2), "character": (30_000, 0, 3),
    "species": (2_000, 1, 4), "general": (60_000, 15, 40), "lore": (50, 0, 1),
    "meta": (200, 1, 3),
}  # fmt: skip
EMOTICONS = ["^_^", ":3", "o_o", ">_<", "^_^;", "2024", "3_toes"]
BLACKLIST = ("general_tag_7", "meta_tag_0", "watermark")


def _vocabulary(category: str, size: int, rng) -> list[str]:
    words = [f"{category}_tag_{i}" for i in range(size)]
    if category == "general":
        words[: len(EMOTICONS)] = EMOTICONS
        words[len(EMOTICONS)] = "watermark"
    if category == "species":
        words[:3] = ["red_panda", "mammal", "canis_(genus)"]
    return words


def generate(n: int, out: Path, seed: int = 0) -> None:
    """posts.parquet and nl.parquet for ``n`` posts."""
    rng = np.random.default_rng(seed)
    columns = {"id": np.arange(1, n + 1, dtype=np.int64)}
    for category, (size, lo, hi) in SHAPE.items():
        vocab = pl.Series(_vocabulary(category, size, rng))
        # Zipf-like popularity: a few tags are on many posts
        picks = np.minimum((rng.pareto(1.2, n * hi) * size / 50).astype(np.int64), size - 1)
        tags = vocab.gather(picks).reshape((n, hi)).arr.to_list()
        lengths = pl.Series(rng.integers(lo, hi + 1, n))
        frame = pl.DataFrame({"t": tags, "k": lengths})
        columns[f"tag_string_{category}"] = frame.select(
            pl.col("t").list.head(pl.col("k")).list.join(" ")
        )["t"]
    posts = pl.DataFrame(columns).with_columns(
        pl.lit("e621").alias("site"),
        pl.Series("rating", rng.choice(["s", "q", "e"], n)),
        pl.Series("score", rng.integers(-10, 500, n)),
    )
    posts.write_parquet(out / "posts.parquet")
    with_nl = np.sort(rng.choice(n, int(n * 0.6), replace=False)) + 1
    m = len(with_nl)
    sentences = _sentences(rng)
    regular = _paragraphs(sentences, m, 2, 6, rng)
    brief = _paragraphs(sentences, m, 1, 1, rng)
    nl = pl.DataFrame({
        "id": with_nl,
        "regular_summary": _some_empty(regular, rng),
        "brief_summary": _some_empty(brief, rng),
        "response_finish_reason": np.where(rng.random(m) < 0.9, "STOP", "MAX_TOKENS"),
    })  # fmt: skip
    nl.write_parquet(out / "nl.parquet")


WORDS = ("a", "the", "with", "and", "of", "in", "on", "her", "his", "their", "is", "are")


def _sentences(rng, count: int = 50_000, vocabulary: int = 20_000) -> pl.Series:
    """``count`` distinct sentences of 6 to 24 words, like a captioning model's: common words
    and a Zipf-like draw from ``vocabulary`` made-up words, capitalised, a comma in some,
    possessives, a full stop at the end."""
    syllables = ["ka", "ri", "mo", "sen", "tal", "or", "ve", "lin", "dra", "pu", "ex", "th"]
    made = ["".join(rng.choice(syllables, int(k))) for k in rng.integers(1, 5, vocabulary)]
    words = np.array([*WORDS, *made, *[w + "'s" for w in made[:500]]], dtype=object)
    out = []
    for length in rng.integers(6, 25, count):
        picks = np.minimum((rng.pareto(1.1, length) * 20).astype(np.int64), len(words) - 1)
        chosen = list(words[picks])
        if length > 10:
            chosen[int(length) // 2] += ","
        out.append(" ".join(chosen).capitalize() + ".")
    return pl.Series(out)


def _paragraphs(sentences: pl.Series, m: int, lo: int, hi: int, rng) -> pl.Series:
    """``m`` texts of ``lo`` to ``hi`` sentences each, some on a new line."""
    k = rng.integers(lo, hi + 1, m)
    picks = sentences.gather(rng.integers(0, len(sentences), int(k.sum())))
    breaks = pl.Series(np.where(rng.random(len(picks)) < 0.05, "\n", " "))
    texts = pl.DataFrame({"s": picks + breaks, "text": np.repeat(np.arange(m), k)})
    joined = texts.group_by("text", maintain_order=True).agg(pl.col("s").str.join(""))
    return joined["s"].str.strip_chars()


def _some_empty(texts: pl.Series, rng) -> pl.Series:
    """``texts`` with one in ten emptied, as some summaries are."""
    kept = pl.Series(rng.random(len(texts)) >= 0.1)
    return texts.zip_with(kept, pl.Series([""] * len(texts)))


DATA_VERSION = 2  # made again when what generate() makes changes


GENERATED = ("posts.parquet", "nl.parquet", "export.parquet", "vocabulary.parquet")
# what its runs write there: replaced, or removed, run after run
WRITTEN = ("captions.jsonl", "captions-loop.jsonl", "cache-c", "cache-d")


MARK = "made by e6ingest benchmarks/captions_bench.py\n"  # what its .done files hold


def _ours(path: Path) -> bool:
    """Whether ``path`` is a marker this benchmark wrote (it holds :data:`MARK`)."""
    try:
        return path.read_text(encoding="utf-8") == MARK
    except (OSError, UnicodeDecodeError):
        return False


def prepare(data: Path, posts: int) -> None:
    """The generated files for ``posts`` posts in ``data``, made unless made before. Files
    of those names, and those its runs write (:data:`WRITTEN`), are replaced only in a
    folder where this benchmark left its marker (a ``posts-*.done`` holding :data:`MARK`);
    elsewhere it stops, naming the first."""
    done = data / f"posts-{posts}-v{DATA_VERSION}.done"
    if _ours(done):
        return
    markers = [m for m in data.glob("posts-*.done") if _ours(m)]
    for name in (*GENERATED, *WRITTEN, done.name):
        if (data / name).exists() and not markers:
            sys.exit(f"{data / name}: not made by this benchmark; give --data an empty folder")
    print(f"generating {posts:,} posts in {data} ...", flush=True)
    for name in ("export.parquet", "vocabulary.parquet"):  # made from the posts: again
        (data / name).unlink(missing_ok=True)
    generate(posts, data)
    for old in markers:  # the markers of what it made before, each checked above
        old.unlink()
    done.write_text(MARK, encoding="utf-8")


def export_file(data: Path) -> Path:
    """The posts as the e621 database export has them (one ``tag_string``, no categories):
    a metadata file ``e6ingest captions --metadata`` reads."""
    path = data / "export.parquet"
    if path.exists():
        return path
    posts = pl.scan_parquet(data / "posts.parquet")
    n = posts.select(pl.len()).collect().item()
    # one space between tags, as the export has them: a category without tags adds none
    given = [pl.when(pl.col(f"tag_string_{c}") != "").then(f"tag_string_{c}") for c in ORDER]
    tags = pl.concat_str(given, separator=" ", ignore_nulls=True)
    posts.select(
        "id", "rating", tags.alias("tag_string"),
        pl.lit(1000).alias("image_width"), pl.lit(800).alias("image_height"),
        pl.lit("png").alias("file_ext"), "score", pl.lit(0).alias("fav_count"),
        pl.lit("2024-01-01").str.to_datetime(time_zone="UTC").alias("created_at"),
        pl.lit("0" * 32).alias("md5"), pl.lit(None, pl.Float64).alias("parent_id"),
        pl.lit("f").alias("is_deleted"), pl.col("id").alias("change_seq"),
    ).collect().write_parquet(path)  # fmt: skip
    assert pl.scan_parquet(path).select(pl.len()).collect().item() == n
    return path


def vocabulary_file(data: Path) -> Path:
    """The posts' tags and on how many posts each is (``tag``, ``posts``): what the
    ``captions`` command reads from its tag index (or cached count) for a budget's
    ``rare`` priority; made once, as the command's cache is."""
    path = data / "vocabulary.parquet"
    if not path.exists():
        from e6ingest.metadata.schemas import split_tags

        tags = pl.concat_list(split_tags(f"tag_string_{c}") for c in ORDER).list.unique()
        posts = pl.scan_parquet(data / "posts.parquet").select(tags.alias("tag"))
        posts.explode("tag").group_by("tag").len("posts").collect().write_parquet(path)
    return path


def run_users(data: Path, export: bool = False, nl: bool = True) -> list[str]:
    """(a) The loop people write today (over the export file's ``tag_string`` with
    ``export``; the tags alone without ``nl``)."""
    import re

    import pandas as pd

    letter = re.compile("[A-Za-z]")
    newlines = re.compile(r"[\r\n]+")
    blacklist = set(BLACKLIST)
    nl_frame = pd.read_parquet(data / "nl.parquet") if nl else pd.DataFrame()
    nl_text = {}
    for row in nl_frame.itertuples(index=False):
        if row.response_finish_reason != "STOP":
            continue
        parts = [newlines.sub(" ", t).strip() for t in (row.regular_summary, row.brief_summary)]
        parts = [p for p in parts if p]
        if parts:
            nl_text[row.id] = " ".join(parts)
    posts = pd.read_parquet(data / ("export.parquet" if export else "posts.parquet"))
    columns = ["tag_string"] if export else [f"tag_string_{c}" for c in ORDER]
    captions = []
    for row in posts[["id", *columns]].itertuples(index=False):
        seen, out = set(), []
        for string in row[1:]:
            if not string:
                continue
            for tag in string.split(" "):
                if not tag or tag in blacklist:
                    continue
                if len(tag) > 3 and letter.search(tag):
                    tag = tag.replace("_", " ")
                if tag not in seen:
                    seen.add(tag)
                    out.append(tag)
        text = ", ".join(out)
        extra = nl_text.get(row.id)
        captions.append(f"{text}, {extra}" if extra else text)
    return captions


def run_cli(
    data: Path, cache: Path, max_tokens: int = 0, nl: bool = True
) -> tuple[float, list[str]]:
    """(c)/(d) ``e6ingest captions`` as users run it, in its own process: its seconds
    (process start to exit) and the captions it wrote (read back after the clock)."""
    out = data / "captions.jsonl"
    out.unlink(missing_ok=True)
    cmd = ["e6ingest", "captions", "--metadata", str(data / "export.parquet"),
           "--meta-filter", "", "--blacklist", ",".join(BLACKLIST), "--out", str(out)]  # fmt: skip
    if nl:
        cmd += ["--nl-captions", str(data / "nl.parquet"), "--merge", "tags+nl"]
    if max_tokens:
        cmd += ["--max-tokens", str(max_tokens)]
    env = {**os.environ, "E6INGEST_CACHE": str(cache)}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    seconds = time.perf_counter() - start
    return seconds, pl.read_ndjson(out)["caption"].to_list()


def bench_spec(data: Path, max_tokens: int = 0, variants: tuple[str, ...] = ()):
    """(b)'s caption spec, equivalent to what the loop does (and a budget, variants)."""
    from e6ingest.captions import CaptionSpec

    return CaptionSpec(
        blacklist=BLACKLIST, meta_filter=(), merge="tags+nl",
        nl_captions=(str(data / "nl.parquet"),), max_tokens=max_tokens,
        variants=variants,
    )  # fmt: skip


def part_files(data: Path, spec, folder: Path, batch_rows: int = 250_000) -> list[Path]:
    """The posts file split into parts of the rows planning captions at once
    (``PLAN_BATCH_ROWS`` captions: fewer posts with variants), a file each in ``folder``,
    as planning splits its selection (``pipeline.plan.partition``) before it reads each
    part whole."""
    from e6ingest.captions.variants import posts_per_batch

    part = posts_per_batch(batch_rows, spec)
    posts = pl.scan_parquet(data / "posts.parquet").collect_batches(chunk_size=part)
    files = []
    for i, batch in enumerate(posts):
        files.append(folder / f"part{i:04d}.parquet")
        batch.write_parquet(files[-1])
    return files


def run_e6ingest(data: Path, spec, parts: list[Path]) -> pl.Series:
    """(b) e6ingest's bulk path with ``spec`` (:func:`bench_spec`), over the posts a part
    at a time (:func:`part_files`), as planning and ``captions --out`` read and caption
    them, each part file read whole by polars; the captions stay a polars column, as
    planning keeps them (it writes them to the plan, never to Python strings). A budget
    keeps the rarest tags first, by the posts' tag counts (:func:`vocabulary_file`), as
    the command does."""
    from e6ingest.captions import CaptionSpec, read_nl_captions
    from e6ingest.captions.session import Captioning
    from e6ingest.captions.variants import variant_rarity, with_variants
    from e6ingest.metadata.schemas import split_tags

    read: dict[tuple[object, ...], pl.DataFrame | None] = {}

    def nl(variant: CaptionSpec) -> pl.DataFrame | None:
        """The NL texts of every post for ``variant``'s fields, read once."""
        key = (variant.nl_fields, variant.nl_finished)
        if key not in read:
            read[key] = read_nl_captions(variant)
        return read[key]

    nl(spec)
    rarity = variant_rarity(pl.read_parquet(data / "vocabulary.parquet"), spec)
    captioning = Captioning()
    captions: list[pl.Series] = []
    for part in parts:
        posts = (
            pl.read_parquet(part)
            .lazy()
            .with_columns(split_tags(f"tag_string_{c}").alias(f"tags_{c}") for c in ORDER)
            .drop(f"tag_string_{c}" for c in ORDER)
            .collect(engine="streaming")
        )
        built = with_variants(posts, spec, nl, captioning=captioning, rarity=rarity)
        captions.append(built["caption"])
        del posts, built  # before the next part is read, as planning drops each part
    captioning.close()
    return pl.concat(captions)


def write_jsonl(captions: list[str], data: Path) -> None:
    """What a user's script does with its captions: a JSON line per post (id, caption)."""
    with (data / "captions-loop.jsonl").open("w", encoding="utf-8") as f:
        for i, caption in enumerate(captions, 1):
            f.write(json.dumps({"id": i, "caption": caption}, ensure_ascii=False) + "\n")


def _peak_mb() -> float:
    """This process's peak RSS (VmHWM) in MB, since :func:`child` reset it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(which: str, data: Path, max_tokens: int, variants: str = "", nl: bool = True) -> None:
    bulk = which not in ("a", "a'", "c", "d")  # (b): e6ingest's bulk path
    if bulk:  # the posts split as planning splits its selection, before the clock
        spec = bench_spec(data, max_tokens, VARIANTS.get(variants, ()))
        folder = Path(tempfile.mkdtemp(prefix="parts-", dir=data))
        parts = part_files(data, spec, folder)
    # A child's ru_maxrss keeps the parent's size at fork (the parent may have just
    # generated the posts): its own peak is VmHWM, reset here.
    Path("/proc/self/clear_refs").write_text("5")
    start = time.perf_counter()
    if which in ("a", "a'"):
        captions = run_users(data, export=which == "a'", nl=nl)
        if which == "a'":  # as the CLI does: the captions written to a file
            write_jsonl(captions, data)
    elif which in ("c", "d"):
        cli_seconds, captions = run_cli(data, data / f"cache-{which}", max_tokens, nl)
    else:
        captions = run_e6ingest(data, spec, parts)
    seconds = time.perf_counter() - start
    if bulk:
        shutil.rmtree(folder)  # the fresh folder made above: its part files alone
    if which in ("c", "d"):  # the command alone: reading its file back is the check's
        seconds = cli_seconds
    if which in ("c", "d"):  # the CLI's process, forked from this small one
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    else:
        peak = _peak_mb()
    if which == "b":  # hashed like (a)'s, after the clock and the peak were taken
        captions = captions.to_list()
    longest = 0
    if max_tokens and which != "a":  # checked after the clock and the peak were taken
        from e6ingest.captions.tokens import count_tokens

        longest = max(count_tokens(captions))
    digest = hashlib.sha256("\n".join(captions).encode()).hexdigest()
    print(json.dumps({"seconds": seconds, "sha256": digest, "n": len(captions),
                      "peak_mb": peak, "example": captions[0], "longest": longest}))  # fmt: skip


def _summary(runs: list[dict]) -> dict:
    """One side's runs: median seconds, fastest and slowest, highest peak; every run must
    have made the same captions."""
    seconds = sorted(r["seconds"] for r in runs)
    if len({(r["sha256"], r["n"]) for r in runs}) != 1:
        sys.exit("runs of one side made different captions")
    return runs[0] | {"seconds": seconds[len(seconds) // 2], "min": seconds[0],
                      "max": seconds[-1], "peak_mb": max(r["peak_mb"] for r in runs),
                      "longest": max(r["longest"] for r in runs)}  # fmt: skip


SIDES = {
    "a": "(a) pandas itertuples, per-row join",
    "b": "(b) e6ingest bulk",
    "v": "(b) e6ingest bulk, caption + 3 variants",
    "w": "(b) e6ingest bulk, caption + 5 variants (with NL)",
    "a'": "(a) pandas itertuples over the export file",
    "c": "(c) e6ingest captions CLI, fresh cache",
    "d": "(d) e6ingest captions CLI, index built",
}


# the variants of sides v and w: --variants standard, without and with NL captions
VARIANTS = {"v": ("short", "medium", "full"),
            "w": ("short", "medium", "full", "brief", "tags+nl")}  # fmt: skip


def build_index(data: Path, cache: Path) -> None:
    """The tag index of the export file, built ahead (``e6ingest index``) in ``cache``."""
    env = {**os.environ, "E6INGEST_CACHE": str(cache)}
    cmd = ["e6ingest", "index", "--metadata", str(data / "export.parquet")]
    subprocess.run(cmd, check=True, capture_output=True, env=env)


def _run_side(which: str, data: Path, max_tokens: int, nl: bool = True) -> dict:
    if which == "c":  # a fresh cache every time: the first question on new metadata
        shutil.rmtree(data / "cache-c", ignore_errors=True)
    os.sync()  # the side before wrote its captions: none pays for another's writeback
    cmd = [sys.executable, __file__, "--child", which, "--data", str(data),
           "--max-tokens", str(max_tokens), *([] if nl else ["--no-nl"])]  # fmt: skip
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--posts", type=int, default=5_000_000)
    parser.add_argument("--data", help="folder for the generated files (default: a temp dir)")
    parser.add_argument("--max-tokens", type=int, default=0, help="(b) with this token budget")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side (median kept)")
    parser.add_argument("--variants", action="store_true", help="also (b) with variants")
    parser.add_argument("--cli", action="store_true", help="the captions command, end to end")
    parser.add_argument("--no-nl", action="store_true", help="with --cli: no NL captions")
    parser.add_argument("--child", choices=tuple(SIDES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.no_nl and not (args.cli or args.child in ("a'", "c", "d")):
        parser.error("--no-nl is a case of --cli")
    data = Path(args.data or tempfile.mkdtemp(prefix="captions-bench-"))
    if args.child:
        child("b" if args.child in VARIANTS else args.child, data, args.max_tokens,
              variants=args.child, nl=not args.no_nl)  # fmt: skip
        return
    data.mkdir(parents=True, exist_ok=True)
    prepare(data, args.posts)
    sides = ["b", "v", "w", "a"] if args.variants else ["b", "a"]
    vocabulary_file(data)
    if args.cli:
        export_file(data)
        sides = ["c", "d", "a'"]
        build_index(data, data / "cache-d")  # (d) finds its index built
    runs: dict[str, list[dict]] = {w: [] for w in sides}
    for _ in range(args.repeat):  # alternated, so every side meets the same machine
        for which in sides:
            runs[which].append(_run_side(which, data, args.max_tokens, not args.no_nl))
    summary = {w: _summary(runs[w]) for w in sides}
    nl = "none used" if args.no_nl else "NL captions for 60%"
    print(f"posts: {args.posts:,}, {nl}; {args.repeat} runs each, alternated")
    print("| run | seconds (median) | min - max | posts/s | peak memory (max) |")
    print("|---|---|---|---|---|")
    for which, r in summary.items():
        print(f"| {SIDES[which]} | {r['seconds']:.1f} | {r['min']:.1f} - {r['max']:.1f} | "
              f"{r['n'] / r['seconds']:,.0f} | {r['peak_mb']:,.0f} MB |")  # fmt: skip
    loop = summary["a'" if args.cli else "a"]
    print()
    for which, r in summary.items():
        if which not in ("a", "a'"):
            print(f"{SIDES[which]}: {loop['seconds'] / r['seconds']:.2f}x the loop (medians), "
                  f"{r['peak_mb'] / loop['peak_mb']:.2f}x its peak memory")  # fmt: skip
    for which in ("v", "w") if args.variants else ():
        print(f"{SIDES[which][4:]}: {summary[which]['seconds'] / summary['b']['seconds']:.2f}x "
              "one caption (target: at most 2x)")  # fmt: skip
    ours = [r for w, r in summary.items() if w not in ("a", "a'")]
    if args.max_tokens:
        longest = max(r["longest"] for r in ours)
        print(f"with --max-tokens {args.max_tokens}: longest caption {longest} tokens")
        sys.exit(0 if longest <= args.max_tokens else 1)
    same = all(r["sha256"] == loop["sha256"] and r["n"] == loop["n"] for r in ours)
    print(f"same captions as the loop: {'yes' if same else 'NO'}")
    if not same:
        for r in ours:
            print(f"first: {r['example']!r}")
        print(f"loop first: {loop['example']!r}")
        sys.exit(1)


if __name__ == "__main__":
    main()
