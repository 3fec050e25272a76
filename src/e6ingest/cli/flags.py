"""The flag groups the commands share: source, selection, images, captions, buckets, Hub,
reporting. Each flag says its default."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from e6ingest.buckets import BucketSpec
from e6ingest.captions import MERGE_MODES
from e6ingest.imaging import BACKENDS, DEFAULT_MAX_SOURCE_PIXELS, ImagePolicy
from e6ingest.manifests import available_datasets
from e6ingest.sources import HubOptions

_IMAGE, _BUCKETS, _HUB = ImagePolicy(), BucketSpec(), HubOptions()


LARGEST = 2**63 - 1  # what a parquet file, numpy and polars hold as a whole number


def at_least(lowest: int, most: int = LARGEST) -> Callable[[str], int]:
    """A flag type: a whole number of at least ``lowest`` (and at most ``most``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be at least {lowest}, not {value}")
        if value > most:
            raise argparse.ArgumentTypeError(f"must be at most {most:,}, not {value:,}")
        return value

    return parse


count = at_least(1)  # a positive whole number
whole = at_least(0)  # a whole number, 0 or more
megabytes = at_least(1, LARGEST >> 20)  # a positive number of MB whose bytes fit 64 bits


def source_flags(p: argparse.ArgumentParser, metadata: bool = False) -> None:
    """Where the metadata comes from: a dataset on the Hub, a mirror, the demo (or files)."""
    p.add_argument(
        "--dataset",
        help=f"bundled dataset ({', '.join(available_datasets())}) or a manifest TOML "
        "(default: e621)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--mirror", metavar="DIR",
        help="a local copy of the repositories (DIR/owner/name/...) (default: the Hub)",
    )  # fmt: skip
    where.add_argument(
        "--demo",
        action="store_true",
        help="the built-in synthetic demo mirror, built once in the cache (default: the Hub)",
    )
    if metadata:
        p.add_argument(
            "--metadata", nargs="+", metavar="FILE",
            help="parquet files in any supported schema instead (default: the dataset's)",
        )  # fmt: skip


def selection_flags(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("selection")
    s.add_argument("--rating", metavar="LIST",
                   help="ratings to keep, e.g. e,q,s (e621: s q e; danbooru: g s q e) "
                   "(default: all)")  # fmt: skip
    s.add_argument("--query", metavar="TEXT",
                   help="booru search, e.g. 'solo -comic score:>=50 order:score' "
                   "(default: everything)")  # fmt: skip
    s.add_argument("--include-deleted", action="store_true", default=None,
                   help="keep posts marked deleted (default: left out)")  # fmt: skip
    s.add_argument("--tag-table", metavar="FILE",
                   help="e621 tags table (id,name,category,postcount) restoring tag "
                   "categories (default: none)")  # fmt: skip
    s.add_argument(
        "--sample",
        type=count,
        metavar="N",
        help="keep a deterministic random N posts of the selection (default: all)",
    )
    s.add_argument(
        "--limit",
        type=count,
        metavar="N",
        help="keep the first N posts in the query's order: (default: all)",
    )
    s.add_argument(
        "--seed", type=whole, metavar="S", help="seed of --sample and order:random (default: 0)"
    )
    choice = s.add_mutually_exclusive_group()
    choice.add_argument("--index", dest="index", action="store_const", const=True,
                        help="answer from the cached tag index, building it now if needed "
                        "(default: an index already built; else the first question about a "
                        "metadata version scans and the second builds it)")  # fmt: skip
    choice.add_argument(
        "--no-index",
        dest="index",
        action="store_const",
        const=False,
        help="always scan the metadata, never build or read an index (default: off)",
    )


def image_flags(p: argparse.ArgumentParser) -> None:
    img = p.add_argument_group("images")
    img.add_argument("--max-pixels", type=count, metavar="N",
                     help=f"pixel budget (width x height, at least 64x64); larger images "
                     f"are scaled down (default: {_IMAGE.max_pixels}, 2048x2048)")  # fmt: skip
    img.add_argument("--max-source-pixels", type=count, metavar="N",
                     help="sources larger are refused from their header (default: "
                     f"{DEFAULT_MAX_SOURCE_PIXELS})")  # fmt: skip
    img.add_argument(
        "--quality", type=int, metavar="Q", help=f"WebP quality 0-100 (default: {_IMAGE.quality})"
    )
    img.add_argument(
        "--method",
        type=int,
        metavar="M",
        help=f"WebP method 0 (fast) to 6 (small) (default: {_IMAGE.method})",
    )
    img.add_argument(
        "--lossless",
        action="store_true",
        default=None,
        help="lossless WebP for lossless sources (default: lossy)",
    )
    img.add_argument(
        "--keep-alpha",
        action="store_true",
        default=None,
        help="keep transparency (default: composited onto --background)",
    )
    img.add_argument("--background", metavar="COLOUR",
                     help="colour behind transparency: a name, #rrggbb or r,g,b "
                     "(default: white)")  # fmt: skip
    img.add_argument("--no-animation", dest="allow_animation", action="store_false",
                     default=None,
                     help="refuse animations (default: keep their first frame)")  # fmt: skip
    img.add_argument("--no-pass-through", dest="pass_through", action="store_false",
                     default=None,
                     help="re-encode every image, even a WebP already within the policy "
                     "(default: such a WebP is kept byte for byte)")  # fmt: skip
    img.add_argument("--image-backend", choices=BACKENDS,
                     help="who decodes and resizes: pillow, or vips (libvips, faster; the "
                     'vips extra: pip install "e6ingest[vips]") (default: vips when '
                     "installed, else pillow)")  # fmt: skip
    img.add_argument(
        "--verify",
        dest="verify_images",
        choices=("decode", "header"),
        help="how an already-compliant WebP kept as it is is checked: header (its header "
        "and container read; a truncated file is refused) or decode (every pixel decoded "
        "too, about 2 ms per image) (default: header)",
    )


def add_caption_flags(parser: argparse.ArgumentParser) -> None:
    """The caption options (docs/CAPTIONS.md), shared by ``pull`` and ``captions``."""
    cap = parser.add_argument_group("captions (docs/CAPTIONS.md)")
    cap.add_argument(
        "--caption-config", metavar="FILE", help="TOML file with the caption spec (default: none)"
    )
    cap.add_argument("--merge", choices=MERGE_MODES,
                     help="tags, nl, tags+nl (one line) or alternatives (a line each) "
                     "(default: tags, or tags+nl with --nl-captions)")  # fmt: skip
    cap.add_argument("--nl-captions", nargs="+", metavar="PATH",
                     help="JSONL or parquet natural-language captions (id, regular_summary, "
                     "...), or folders of them (default: none)")  # fmt: skip
    cap.add_argument(
        "--order",
        metavar="LIST",
        help="categories in order, e.g. artist,general (default: the site's)",
    )
    cap.add_argument("--separator", help="between tags (default: ', ')")
    cap.add_argument(
        "--max-tags", type=int, metavar="N", help="keep the first N tags (default: no limit)"
    )
    cap.add_argument(
        "--rating-tag",
        action="store_true",
        default=None,
        help="add safe/nsfw/explicit... (default: off)",
    )
    cap.add_argument(
        "--quality-tag",
        action="store_true",
        default=None,
        help="add a quality tag from score percentiles per rating (default: off)",
    )
    cap.add_argument(
        "--date-tag",
        choices=("none", "year", "period"),
        help="add the year or period (default: none)",
    )
    cap.add_argument(
        "--people-first",
        action="store_true",
        default=None,
        help="1girl, 2boys, solo... at the front (default: off)",
    )
    cap.add_argument(
        "--extras-first",
        action="store_true",
        default=None,
        help="rating/quality/date tags before the others (default: after)",
    )
    cap.add_argument("--keep-tokens-separator", metavar="SEP",
                     help="e.g. '|||' between the fixed head and the shufflable tags "
                     "(default: none)")  # fmt: skip
    cap.add_argument(
        "--escape-parentheses",
        action="store_true",
        default=None,
        help="to_heart_(series) as to heart \\(series\\) (default: off)",
    )
    cap.add_argument("--keep-underscores", dest="underscores_to_spaces",
                     action="store_false", default=None,
                     help="keep long_hair as is (default: long hair)")  # fmt: skip
    cap.add_argument(
        "--blacklist", metavar="LIST", help="tags or globs to drop, comma-separated (default: none)"
    )
    cap.add_argument("--meta-filter", metavar="LIST",
                     help="replace the upload-meta filter ('' for none) (default: "
                     "commentary, bad_id, tagme...)")  # fmt: skip
    cap.add_argument(
        "--aliases", metavar="FILE", help="old,new tag aliases (CSV/TSV/JSON/TOML) (default: none)"
    )
    cap.add_argument("--max-tokens", type=whole, metavar="N",
                     help="fit every caption in N CLIP tokens, dropping tags by priority: "
                     "75 (SDXL's 77-token window), 150 or 225 (sd-scripts --max_token_length) "
                     "(default: no budget; 0: none, over a config file's)")  # fmt: skip
    cap.add_argument("--token-priority", choices=("rare", "common", "order"),
                     help="which tags a budget keeps after the head: the rarest first, the "
                     "commonest, or caption order (default: rare)")  # fmt: skip
    cap.add_argument("--prune-implied", action="store_true", default=None,
                     help="drop tags another tag of the post implies (fox implies canine) "
                     "(default: keep them)")  # fmt: skip
    cap.add_argument("--implications", metavar="FILE",
                     help="tag implications (the e621 tag_implications export) (default: the "
                     "dataset's)")  # fmt: skip
    cap.add_argument(
        "--nl-position",
        choices=("end", "head"),
        help="with tags+nl: the text after the tags, or in the fixed head, before "
        "--keep-tokens-separator, where shuffling keeps it whole (default: end)",
    )
    cap.add_argument("--variants", metavar="LIST", nargs="?", const="standard",
                     help="captions of graded length beside the caption, in {key}.json: "
                     "'standard' (short, medium, full; with NL captions also brief, "
                     "tags+nl), or preset names (short, medium, full, brief, nl, tags+nl); "
                     "custom ones in [caption.variants] (default: none)")  # fmt: skip
    cap.add_argument("--variant-lines", action="store_true", default=None,
                     help="{key}.txt holds every variant, one per line, the caption first, for "
                     "trainers that pick a random line (default: the caption alone)")  # fmt: skip


def bucket_flags(p: argparse.ArgumentParser) -> None:
    b = p.add_argument_group("aspect-ratio buckets (sd-scripts rule)")
    b.add_argument(
        "--bucket-resolution",
        type=count,
        metavar="N",
        help=f"target area N*N; N within --bucket-min..--bucket-max, as sd-scripts asks "
        f"(default: {_BUCKETS.resolution})",
    )
    b.add_argument(
        "--bucket-min",
        type=count,
        metavar="N",
        help=f"shortest side, rounded down to --bucket-step as sd-scripts does; at least "
        f"--bucket-step (default: {_BUCKETS.min_side})",
    )
    b.add_argument(
        "--bucket-max",
        type=count,
        metavar="N",
        help=f"longest side, rounded up to --bucket-step as sd-scripts does (default: "
        f"{_BUCKETS.max_side})",
    )
    b.add_argument(
        "--bucket-step",
        type=count,
        metavar="N",
        help=f"sides in steps of N; SDXL needs a multiple of 32 (default: {_BUCKETS.step})",
    )


def hub_flags(p: argparse.ArgumentParser) -> None:
    hub = p.add_argument_group("Hugging Face Hub (without --mirror or --demo)")
    hub.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="e6ingest's cache of Hub files (default: $E6INGEST_CACHE/hub)",
    )
    hub.add_argument(
        "--io-workers",
        type=count,
        default=_HUB.io_workers,
        metavar="N",
        help=f"requests at a time per worker (default: {_HUB.io_workers})",
    )
    hub.add_argument(
        "--attempts",
        type=count,
        default=_HUB.attempts,
        metavar="N",
        help=f"tries per request (default: {_HUB.attempts})",
    )
    hub.add_argument("--timeout", type=float, default=_HUB.timeout, metavar="S",
                     help="seconds one request may take in all; whole shards get one more "
                     f"second per MB (default: {_HUB.timeout:g})")  # fmt: skip
    hub.add_argument(
        "--whole-shard-share",
        type=float,
        default=_HUB.whole_shard_share,
        metavar="F",
        help="download a source shard whole when the run wants this share of "
        f"its posts; above 1: never (default: {_HUB.whole_shard_share})",
    )
    hub.add_argument(
        "--delete-shards-after-use",
        action="store_true",
        help="delete downloaded shards once read (default: keep them cached)",
    )
    hub.add_argument(
        "--revision",
        action="append",
        metavar="REPO=REV",
        dest="revisions",
        help="read REPO at this commit, branch or tag; repeatable (default: "
        "the manifest's, resolved to a commit when the run is planned)",
    )


def report_flags(p: argparse.ArgumentParser) -> None:
    report = p.add_mutually_exclusive_group()
    report.add_argument("--quiet", action="store_true", help="no progress bars (default: bars)")
    report.add_argument("--log-json", action="store_true",
                        help="progress, warnings, errors and the summary as JSON lines on "
                        "stdout, no bars (default: bars on stderr)")  # fmt: skip
