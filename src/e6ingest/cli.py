"""The ``e6ingest`` command: thin wrappers that parse flags and call the library."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from e6ingest import __version__
from e6ingest.config import ConfigError, make_config, merge, parse_ratings, read_toml
from e6ingest.demo import build_demo, demo_mirror
from e6ingest.manifests import ManifestError, available_datasets
from e6ingest.metadata import SchemaError
from e6ingest.pipeline import OutputConflict, pull
from e6ingest.query import QueryError, selection_query
from e6ingest.sources import HubError, HubOptions, MirrorError

USER_ERRORS = (
    ConfigError, ManifestError, SchemaError, QueryError, MirrorError, OutputConflict, HubError
)  # fmt: skip

# Flags of `pull` that map onto the config model: flag dest -> (table or None, option name).
CONFIG_FLAGS = {
    "dataset": (None, "dataset"),
    "rating": (None, "ratings"),
    "query": (None, "query"),
    "include_deleted": (None, "include_deleted"),
    "shard_size": (None, "shard_size"),
    "max_pixels": ("image", "max_pixels"),
    "max_source_pixels": ("image", "max_source_pixels"),
    "quality": ("image", "quality"),
    "method": ("image", "method"),
    "lossless": ("image", "lossless"),
    "keep_alpha": ("image", "keep_alpha"),
    "verify_images": ("image", "verify"),
    "background": ("image", "background"),
    "allow_animation": ("image", "allow_animation"),
    "separator": ("caption", "separator"),
    "bucket_resolution": ("buckets", "resolution"),
    "bucket_min": ("buckets", "min_side"),
    "bucket_max": ("buckets", "max_side"),
    "bucket_step": ("buckets", "step"),
}


def _add_source_flags(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--mirror", metavar="DIR", help="local mirror (folders named owner/name)")
    where.add_argument(
        "--demo", action="store_true", help="use the built-in demo mirror (built once, cached)"
    )


def _pull_parser(sub) -> None:
    p = sub.add_parser("pull", help="select posts and write webdataset shards")
    p.add_argument("--config", metavar="FILE", help="TOML file with the same options")
    p.add_argument(
        "--dataset",
        help=f"dataset name or manifest TOML (default e621; bundled: "
        f"{', '.join(available_datasets())})",
    )
    _add_source_flags(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--rating", metavar="LIST", help="ratings to keep, e.g. e,q,s")
    p.add_argument("--query", metavar="TEXT", help="booru search, e.g. 'solo -comic score:>=50'")
    p.add_argument("--include-deleted", action="store_true", default=None)
    p.add_argument("--shard-size", type=int, metavar="N", help="samples per shard (1000)")
    p.add_argument("--workers", type=int, metavar="N", help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="start over in a non-empty --out")
    img = p.add_argument_group("images")
    img.add_argument("--max-pixels", type=int, metavar="N", help="pixel budget (2048*2048)")
    img.add_argument("--max-source-pixels", type=int, metavar="N", help="refuse larger sources")
    img.add_argument("--quality", type=int, metavar="Q", help="WebP quality (90)")
    img.add_argument("--method", type=int, metavar="M", help="WebP method 0-6 (4)")
    img.add_argument("--lossless", action="store_true", default=None)
    img.add_argument("--keep-alpha", action="store_true", default=None)
    img.add_argument("--verify", dest="verify_images", choices=("decode", "header"))
    img.add_argument(
        "--background", metavar="COLOUR", help="behind transparency: name, #rrggbb or r,g,b (white)"
    )
    img.add_argument(
        "--no-animation", dest="allow_animation", action="store_false", default=None,
        help="refuse animations instead of keeping their first frame",
    )  # fmt: skip
    cap = p.add_argument_group("captions")
    cap.add_argument("--separator", help="between tags (', ')")
    buckets = p.add_argument_group("aspect-ratio buckets (sd-scripts rule)")
    buckets.add_argument("--bucket-resolution", type=int, metavar="N")
    buckets.add_argument("--bucket-min", type=int, metavar="N")
    buckets.add_argument("--bucket-max", type=int, metavar="N")
    buckets.add_argument("--bucket-step", type=int, metavar="N")
    hub = p.add_argument_group("Hugging Face Hub (without --mirror)")
    defaults = HubOptions()
    hub.add_argument("--cache-dir", metavar="DIR", help="download cache (the Hub cache)")
    hub.add_argument(
        "--io-workers", type=int, default=defaults.io_workers, metavar="N",
        help=f"concurrent requests per worker ({defaults.io_workers})",
    )  # fmt: skip
    hub.add_argument(
        "--attempts", type=int, default=defaults.attempts, metavar="N",
        help=f"tries per request ({defaults.attempts})",
    )  # fmt: skip
    hub.add_argument(
        "--whole-shard-share", type=float, default=defaults.whole_shard_share, metavar="F",
        help="download a source shard whole when the run wants this share of its posts "
        f"({defaults.whole_shard_share}; above 1: never)",
    )  # fmt: skip
    hub.add_argument(
        "--delete-shards-after-use", action="store_true",
        help="delete downloaded shards once read, bounding disk use",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _inspect_parser(sub) -> None:
    p = sub.add_parser("inspect", help="count and describe a selection of the metadata")
    p.add_argument("--dataset", default="e621", help="dataset name or manifest TOML (e621)")
    _add_source_flags(p)
    p.add_argument(
        "--metadata", nargs="+", metavar="FILE", help="parquet files in any supported schema"
    )
    p.add_argument("--rating", metavar="LIST", help="ratings to keep, e.g. e,q,s")
    p.add_argument("--query", metavar="TEXT", default="", help="booru search syntax")
    p.add_argument("--include-deleted", action="store_true")
    p.add_argument("--tag-table", metavar="FILE", help="e621 tags table restoring categories")
    p.add_argument("--top", type=int, default=10, metavar="N", help="top tags per category")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON document")
    out.add_argument("--count", action="store_true", help="print only the number selected")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``e6ingest`` command."""
    parser = argparse.ArgumentParser(
        prog="e6ingest", description="Public booru datasets to training-ready webdataset shards."
    )
    parser.add_argument("--version", action="version", version=f"e6ingest {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="write the synthetic demo mirror")
    demo.add_argument("--out", required=True, metavar="DIR")
    demo.add_argument("--posts", type=int, default=1000, metavar="N", help="posts per site")
    demo.add_argument("--seed", type=int, default=0, metavar="S")
    _pull_parser(sub)
    _inspect_parser(sub)
    return parser


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config options given as flags, nested like the TOML file."""
    values: dict[str, Any] = {}
    for dest, (table, name) in CONFIG_FLAGS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if table is None:
            values[name] = value
        else:
            values.setdefault(table, {})[name] = value
    return values


def _mirror(args: argparse.Namespace) -> Path | None:
    """The local mirror the flags name, or None for the Hub."""
    if args.demo:
        print("using the demo mirror (built on first use)", file=sys.stderr)
        return demo_mirror()
    return Path(args.mirror) if args.mirror else None


def _hub_options(args: argparse.Namespace) -> HubOptions:
    return HubOptions(
        cache_dir=args.cache_dir,
        io_workers=args.io_workers,
        attempts=args.attempts,
        whole_shard_share=args.whole_shard_share,
        delete_shards_after_use=args.delete_shards_after_use,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    summary = build_demo(args.out, posts=args.posts, seed=args.seed)
    for name in summary.posts:
        print(f"{name}: {summary.posts[name]} posts, {summary.images[name]} images")
    print(f"demo mirror written to {summary.out}")
    return 0


def _print_summary(info: dict) -> None:
    total = info["posts"]
    print(f"posts: {total}")
    print("ratings:")
    for rating, n in info["ratings"].items():
        print(f"  {rating}  {n:>10}  {n / total:6.1%}" if total else f"  {rating}  {n:>10}")
    print("posts per year:")
    for year, n in info["years"].items():
        print(f"  {year}  {n:>10}")
    for category, tags in info["top_tags"].items():
        print(f"top {category} tags:")
        for tag, n in tags.items():
            print(f"  {n:>10}  {tag}")


def cmd_inspect(args: argparse.Namespace) -> int:
    from e6ingest import dataset

    ratings = parse_ratings(args.rating)
    selection_query(args.query, ratings)  # a malformed query fails before any data is read
    if args.metadata:
        posts = dataset.load_metadata(files=args.metadata, include_deleted=args.include_deleted)
    else:
        posts = dataset.load_metadata(
            args.dataset, mirror=_mirror(args), include_deleted=args.include_deleted
        )
    if args.count:
        print(dataset.count(posts, args.query, ratings))
        return 0
    selected = dataset.select(posts, args.query, ratings)
    if args.tag_table:
        selected = dataset.select(selected, tag_table=args.tag_table)
    info = dataset.summary(selected, top=args.top)
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        _print_summary(info)
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    base = read_toml(args.config) if args.config else {}
    config = make_config(merge(base, config_values(args)), where=args.config or "flags")
    mirror = _mirror(args)
    bar = None

    def progress(stats: dict, done: int, total: int) -> None:
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(desc="shards", unit="shard", total=total, file=sys.stderr)
        bar.update(1)

    try:
        summary = pull(config, args.out, mirror, workers=args.workers, overwrite=args.overwrite,
                       progress=progress, hub=_hub_options(args))  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    for line in summary.lines():
        print(line)
    return 1 if summary.unavailable else 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    handlers = {"demo": cmd_demo, "pull": cmd_pull, "inspect": cmd_inspect}
    try:
        return handlers[args.command](args)
    except (*USER_ERRORS, FileExistsError) as exc:
        text = str(exc)
        sep = "\n" if "\n" in text else " "  # keep a multi-line message's columns aligned
        print(f"e6ingest {args.command}: error:{sep}{text}", file=sys.stderr)
        return 2
