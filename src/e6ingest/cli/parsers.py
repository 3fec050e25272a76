"""The command line's flags: parsers of every command (each flag with its help and
default, each command with examples), and flags mapped onto the config model."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from e6ingest import __version__
from e6ingest.buckets import BucketSpec
from e6ingest.captions import MERGE_MODES
from e6ingest.config import FLAG_OPTIONS, merge, read_toml
from e6ingest.imaging import DEFAULT_MAX_SOURCE_PIXELS, ImagePolicy
from e6ingest.manifests import available_datasets
from e6ingest.sources import HubOptions

EXIT_CODES = """exit codes:
  0    done
  1    done, but some posts failed for a reason a rerun may fix (--retry-failed), or
       verify/export found problems
  2    usage or input error (flags, config, query, manifest, output folder, empty selection)
  3    a source is unavailable (the Hub unreachable, no access, a metadata file not served)
  4    cannot write (disk full, no permission)
  70   a bug in e6ingest (the traceback is printed)
  130  interrupted (Ctrl-C); rerun the same command to continue
  141  output closed early (e.g. piped into head)"""
# Flags whose argparse name is not their flag name: dest -> flag name (FLAG_OPTIONS key).
_DESTS = {"verify_images": "verify", "revisions": "revision"}
# Flags that set an option to the opposite of their presence.
_INVERTED = {"allow_animation": ("image", "allow_animation"),
             "underscores_to_spaces": ("caption", "underscores_to_spaces")}  # fmt: skip
_IMAGE, _BUCKETS, _HUB = ImagePolicy(), BucketSpec(), HubOptions()


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the command and its --help."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def _at_least(lowest: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be at least {lowest}, not {value}")
        return value

    return parse


_count = _at_least(1)  # a positive whole number
_whole = _at_least(0)  # a whole number, 0 or more


def _command(sub, name: str, summary: str, examples: str) -> Parser:
    return sub.add_parser(
        name, help=summary, description=summary,
        epilog=f"examples:\n{examples}\n\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip


def _source_flags(p: argparse.ArgumentParser) -> None:
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
        "--demo", action="store_true",
        help="the built-in synthetic demo mirror, built once in the cache (default: the Hub)",
    )  # fmt: skip


def _selection_flags(p: argparse.ArgumentParser) -> None:
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
                   help="e621 tags table (id,name,category,post_count) restoring tag "
                   "categories (default: none)")  # fmt: skip
    s.add_argument(
        "--sample",
        type=_count,
        metavar="N",
        help="keep a deterministic random N posts of the selection (default: all)",
    )
    s.add_argument(
        "--limit",
        type=_count,
        metavar="N",
        help="keep the first N posts in the query's order: (default: all)",
    )
    s.add_argument(
        "--seed", type=_whole, metavar="S", help="seed of --sample and order:random (default: 0)"
    )


def _image_flags(p: argparse.ArgumentParser) -> None:
    img = p.add_argument_group("images")
    img.add_argument("--max-pixels", type=_count, metavar="N",
                     help=f"pixel budget; larger images are scaled down (default: "
                     f"{_IMAGE.max_pixels}, 2048x2048)")  # fmt: skip
    img.add_argument("--max-source-pixels", type=_count, metavar="N",
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
    img.add_argument(
        "--verify",
        dest="verify_images",
        choices=("decode", "header"),
        help="how already-compliant WebP is checked (default: decode)",
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
                     "...) (default: none)")  # fmt: skip
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


def _bucket_flags(p: argparse.ArgumentParser) -> None:
    b = p.add_argument_group("aspect-ratio buckets (sd-scripts rule)")
    b.add_argument(
        "--bucket-resolution",
        type=_count,
        metavar="N",
        help=f"target area N*N (default: {_BUCKETS.resolution})",
    )
    b.add_argument(
        "--bucket-min",
        type=_count,
        metavar="N",
        help=f"shortest side (default: {_BUCKETS.min_side})",
    )
    b.add_argument(
        "--bucket-max",
        type=_count,
        metavar="N",
        help=f"longest side (default: {_BUCKETS.max_side})",
    )
    b.add_argument(
        "--bucket-step",
        type=_count,
        metavar="N",
        help=f"sides in steps of N (default: {_BUCKETS.step})",
    )


def _hub_flags(p: argparse.ArgumentParser) -> None:
    hub = p.add_argument_group("Hugging Face Hub (without --mirror or --demo)")
    hub.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="e6ingest's cache of Hub files (default: $E6INGEST_CACHE/hub)",
    )
    hub.add_argument(
        "--io-workers",
        type=_count,
        default=_HUB.io_workers,
        metavar="N",
        help=f"requests at a time per worker (default: {_HUB.io_workers})",
    )
    hub.add_argument(
        "--attempts",
        type=_count,
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


def _report_flags(p: argparse.ArgumentParser) -> None:
    report = p.add_mutually_exclusive_group()
    report.add_argument("--quiet", action="store_true", help="no progress bars (default: bars)")
    report.add_argument("--log-json", action="store_true",
                        help="progress, warnings, errors and the summary as JSON lines on "
                        "stdout, no bars (default: bars on stderr)")  # fmt: skip


def _pull_parser(sub) -> None:
    p = _command(
        sub,
        "pull",
        "select posts and write training-ready webdataset shards",
        """\
  e6ingest pull --demo --rating e,q,s --out out/
  e6ingest pull --rating e,q,s --query "solo -comic" --out /data/e621/
  e6ingest pull --rating e,q,s --sample 1000 --seed 0 --out smoke/     # a CI subset
  e6ingest pull --dataset danbooru2024 --mirror /mnt/hf --rating g,s --out out/ --workers 16
  e6ingest pull --config pull.toml --out out/                          # same keys as flags""",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (required)")
    p.add_argument("--config", metavar="FILE",
                   help="TOML file with the same options as the flags; flags win "
                   "(default: none)")  # fmt: skip
    _source_flags(p)
    _selection_flags(p)
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="write an empty output when nothing is selected (default: exit 2)",
    )
    p.add_argument(
        "--shard-size", type=_count, metavar="N", help="samples per shard (default: 1000)"
    )
    p.add_argument("--workers", type=_count, metavar="N", help="processes (default: every core)")
    p.add_argument("--memory-budget", type=_count, metavar="MB",
                   help="memory images being decoded may take at once, over all workers "
                   "(default: half of this machine's memory)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run of another configuration in --out (only its "
                   "own files) (default: refuse)")  # fmt: skip
    p.add_argument("--retry-failed", action="store_true",
                   help="also rewrite the shards holding posts that failed for a retryable "
                   "reason (default: keep complete shards)")  # fmt: skip
    _report_flags(p)
    _image_flags(p)
    add_caption_flags(p)
    _bucket_flags(p)
    _hub_flags(p)


def _inspect_parser(sub) -> None:
    p = _command(
        sub,
        "inspect",
        "count and describe a selection of the metadata",
        """\
  e6ingest inspect --demo
  e6ingest inspect --rating e --query "solo -comic" --count
  e6ingest inspect --dataset danbooru2024 --metadata metadata.parquet --json""",
    )
    _source_flags(p)
    p.add_argument("--metadata", nargs="+", metavar="FILE",
                   help="parquet files in any supported schema instead (default: the "
                   "dataset's)")  # fmt: skip
    _selection_flags(p)
    p.add_argument(
        "--top", type=_whole, default=10, metavar="N", help="top tags per category (default: 10)"
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON document (default: text)")
    out.add_argument(
        "--count",
        action="store_true",
        help="print only the number selected (default: the whole description)",
    )


def _captions_parser(sub) -> None:
    p = _command(
        sub,
        "captions",
        "write the captions of a selection, without images",
        """\
  e6ingest captions --demo --rating e,q,s --query solo --preview 5
  e6ingest captions --rating e,q,s --people-first --out captions.jsonl""",
    )
    p.add_argument(
        "--config", metavar="FILE", help="TOML file with the same options as pull (default: none)"
    )
    _source_flags(p)
    p.add_argument("--metadata", nargs="+", metavar="FILE",
                   help="parquet files in any supported schema instead (default: the "
                   "dataset's)")  # fmt: skip
    _selection_flags(p)
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="write an empty file when nothing is selected (default: exit 2)",
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        help="JSONL file: id, key, caption, tags, nl per line (default: none)",
    )
    p.add_argument(
        "--preview", type=_whole, default=0, metavar="N", help="print N examples (default: 0)"
    )
    add_caption_flags(p)


def _demo_parser(sub) -> None:
    p = _command(
        sub,
        "demo",
        "write the synthetic demo mirror",
        """\
  e6ingest demo --out demo/
  e6ingest pull --mirror demo/ --rating e,q,s --out out/""",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="an empty or new folder")
    p.add_argument(
        "--posts", type=_count, default=1000, metavar="N", help="posts per site (default: 1000)"
    )
    p.add_argument("--seed", type=_whole, default=0, metavar="S", help="(default: 0)")


def _verify_parser(sub) -> None:
    p = _command(
        sub,
        "verify",
        "check a pull's output against its manifest",
        """\
  e6ingest verify out/
  e6ingest verify out/ --deep""",
    )
    p.add_argument("out", metavar="OUT", help="the --out folder of a pull")
    p.add_argument(
        "--deep",
        action="store_true",
        help="also decode every image (default: sizes, hashes and layout)",
    )


def _export_parser(sub) -> None:
    p = _command(
        sub,
        "export",
        "extract a pull's output for a trainer",
        """\
  e6ingest export kohya out/ --to train/
  e6ingest export kohya out/ --to train/ --jsonl""",
    )
    p.add_argument("format", choices=("kohya",), help="kohya: sd-scripts fine-tuning layout")
    p.add_argument("out", metavar="OUT", help="the --out folder of a pull")
    p.add_argument(
        "--to",
        required=True,
        metavar="DIR",
        help="an empty folder, or an earlier export of e6ingest's",
    )
    p.add_argument("--jsonl", action="store_true",
                   help="metadata.jsonl (image_path per line; sd-scripts >= 0.10 only) "
                   "(default: metadata.json, read by 0.9 and 0.10)")  # fmt: skip
    p.add_argument("--absolute", action="store_true",
                   help="absolute image paths in the metadata (default: relative to the "
                   "export folder)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: a bar)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``e6ingest`` command."""
    parser = Parser(
        prog="e6ingest",
        description="Public booru datasets (danbooru, e621) to training-ready webdataset shards.",
        epilog=f"Run e6ingest COMMAND --help for a command's flags and examples.\n\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"e6ingest {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=Parser)  # fmt: skip
    _pull_parser(sub)
    _inspect_parser(sub)
    _captions_parser(sub)
    _verify_parser(sub)
    _export_parser(sub)
    _demo_parser(sub)
    return parser


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


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config options given as flags, nested like the TOML file."""
    values: dict[str, Any] = {}
    for dest, value in vars(args).items():
        flag = _DESTS.get(dest, dest)
        target = FLAG_OPTIONS.get(flag) or _INVERTED.get(dest)
        if value is None or target is None:
            continue
        table, name = target
        if table is None:
            values[name] = value
        else:
            values.setdefault(table, {})[name] = value
    return values
