"""The command line's flags: parsers of every command, and flags mapped onto the config."""

from __future__ import annotations

import argparse
from typing import Any

from e6ingest import __version__
from e6ingest.captions import MERGE_MODES
from e6ingest.config import merge, read_toml
from e6ingest.manifests import available_datasets
from e6ingest.sources import HubOptions

CONFIG_FLAGS = {
    "dataset": (None, "dataset"),
    "rating": (None, "ratings"),
    "query": (None, "query"),
    "include_deleted": (None, "include_deleted"),
    "shard_size": (None, "shard_size"),
    "revisions": (None, "revisions"),
    "max_pixels": ("image", "max_pixels"),
    "max_source_pixels": ("image", "max_source_pixels"),
    "quality": ("image", "quality"),
    "method": ("image", "method"),
    "lossless": ("image", "lossless"),
    "keep_alpha": ("image", "keep_alpha"),
    "verify_images": ("image", "verify"),
    "background": ("image", "background"),
    "allow_animation": ("image", "allow_animation"),
    "tag_table": (None, "tag_table"),
    "separator": ("caption", "separator"),
    "merge": ("caption", "merge"),
    "nl_captions": ("caption", "nl_captions"),
    "order": ("caption", "order"),
    "max_tags": ("caption", "max_tags"),
    "rating_tag": ("caption", "rating_tag"),
    "quality_tag": ("caption", "quality_tag"),
    "date_tag": ("caption", "date_tag"),
    "people_first": ("caption", "people_first"),
    "extras_first": ("caption", "extras_first"),
    "keep_tokens_separator": ("caption", "keep_tokens_separator"),
    "escape_parentheses": ("caption", "escape_parentheses"),
    "underscores_to_spaces": ("caption", "underscores_to_spaces"),
    "blacklist": ("caption", "blacklist"),
    "meta_filter": ("caption", "meta_filter"),
    "aliases": ("caption", "aliases"),
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
    p.add_argument("--tag-table", metavar="FILE", help="e621 tags table restoring categories")
    add_caption_flags(p)
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
    hub.add_argument(
        "--timeout", type=float, default=defaults.timeout, metavar="S",
        help=f"seconds one request may take in all ({defaults.timeout:g}; whole shards get "
        "one more second per MB)",
    )  # fmt: skip
    hub.add_argument(
        "--revision", action="append", metavar="REPO=REV", dest="revisions",
        help="read REPO at this commit, branch or tag (repeatable; default: the manifest's, "
        "resolved to a commit when the run is planned)",
    )  # fmt: skip
    p.add_argument(
        "--memory-budget", type=int, metavar="MB",
        help="memory images being decoded may take at once, over all workers "
        "(default: half of this machine's memory)",
    )  # fmt: skip
    p.add_argument(
        "--retry-failed", action="store_true",
        help="also rewrite the shards holding posts that failed for a retryable reason",
    )  # fmt: skip
    report = p.add_mutually_exclusive_group()
    report.add_argument("--quiet", action="store_true", help="no progress bars")
    report.add_argument(
        "--log-json", action="store_true",
        help="progress and summary as JSON lines on stdout, no bars",
    )  # fmt: skip


def add_caption_flags(parser: argparse.ArgumentParser) -> None:
    """The caption options (docs/CAPTIONS.md), shared by ``pull`` and ``captions``."""
    cap = parser.add_argument_group("captions (docs/CAPTIONS.md)")
    cap.add_argument("--caption-config", metavar="FILE", help="TOML file with the caption spec")
    cap.add_argument(
        "--merge",
        choices=MERGE_MODES,
        help="tags, nl, tags+nl (one line) or alternatives (a line each)",
    )
    cap.add_argument(
        "--nl-captions",
        nargs="+",
        metavar="PATH",
        help="JSONL or parquet natural-language captions (id, regular_summary, ...)",
    )
    cap.add_argument("--order", metavar="LIST", help="categories in order, e.g. artist,general")
    cap.add_argument("--separator", help="between tags (', ')")
    cap.add_argument("--max-tags", type=int, metavar="N", help="keep the first N tags (no limit)")
    cap.add_argument("--rating-tag", action="store_true", default=None, help="add safe/nsfw/...")
    cap.add_argument(
        "--quality-tag",
        action="store_true",
        default=None,
        help="add a quality tag from score percentiles per rating",
    )
    cap.add_argument("--date-tag", choices=("none", "year", "period"))
    cap.add_argument(
        "--people-first",
        action="store_true",
        default=None,
        help="1girl, 2boys, solo... at the front",
    )
    cap.add_argument(
        "--extras-first",
        action="store_true",
        default=None,
        help="rating/quality/date tags before the others",
    )
    cap.add_argument(
        "--keep-tokens-separator",
        metavar="SEP",
        help="e.g. '|||' between the fixed head and the shufflable tags",
    )
    cap.add_argument("--escape-parentheses", action="store_true", default=None)
    cap.add_argument(
        "--keep-underscores",
        dest="underscores_to_spaces",
        action="store_false",
        default=None,
        help="keep long_hair as is (default: long hair)",
    )
    cap.add_argument("--blacklist", metavar="LIST", help="tags or globs to drop, comma-separated")
    cap.add_argument(
        "--meta-filter", metavar="LIST", help="replace the default upload-meta filter ('' for none)"
    )
    cap.add_argument("--aliases", metavar="FILE", help="old,new tag aliases (CSV/TSV/JSON/TOML)")


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config a command's flags give: ``--config`` file, then ``--caption-config``,
    then the flags themselves, nested like the TOML file."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values = read_toml(args.config)
    if getattr(args, "caption_config", None):
        caption = read_toml(args.caption_config)
        caption = caption.get("caption", caption)
        values = merge(values, {"caption": caption})
    return merge(values, config_values(args))


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


def _captions_parser(sub) -> None:
    p = sub.add_parser("captions", help="write the captions of a selection, without images")
    p.add_argument("--config", metavar="FILE", help="TOML file with the same options as pull")
    p.add_argument("--dataset", help="dataset name or manifest TOML (e621)")
    _add_source_flags(p)
    p.add_argument(
        "--metadata", nargs="+", metavar="FILE", help="parquet files in any supported schema"
    )
    p.add_argument("--rating", metavar="LIST", help="ratings to keep, e.g. e,q,s")
    p.add_argument("--query", metavar="TEXT", help="booru search syntax")
    p.add_argument("--include-deleted", action="store_true", default=None)
    p.add_argument("--tag-table", metavar="FILE", help="e621 tags table restoring categories")
    p.add_argument("--out", metavar="FILE", help="JSONL: id, key, caption, tags, nl per line")
    p.add_argument("--preview", type=int, default=0, metavar="N", help="print N examples")
    add_caption_flags(p)


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
    _captions_parser(sub)
    verify = sub.add_parser("verify", help="check a pull's output against its manifest")
    verify.add_argument("out", metavar="OUT", help="the --out folder of a pull")
    verify.add_argument("--deep", action="store_true", help="also decode every image")
    export = sub.add_parser("export", help="extract a pull's output for a trainer")
    export.add_argument("format", choices=("kohya",), help="kohya: sd-scripts fine-tuning layout")
    export.add_argument("out", metavar="OUT", help="the --out folder of a pull")
    export.add_argument("--to", required=True, metavar="DIR", help="folder to extract into")
    export.add_argument(
        "--jsonl", action="store_true",
        help="metadata.jsonl (image_path per line; sd-scripts >= 0.10 only), not metadata.json",
    )  # fmt: skip
    export.add_argument(
        "--absolute", action="store_true",
        help="absolute image paths in the metadata (default: relative to the export folder)",
    )  # fmt: skip
    export.add_argument("--quiet", action="store_true", help="no progress bar")
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
