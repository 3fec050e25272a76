"""The ``e6ingest`` command: thin wrappers that parse flags and call the library."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from e6ingest.captions import CaptionInputError
from e6ingest.cli.parsers import build_parser, flag_values
from e6ingest.cli.progress import BarReporter, JsonReporter
from e6ingest.config import ConfigError, make_config, parse_ratings
from e6ingest.demo import build_demo, demo_mirror
from e6ingest.manifests import ManifestError
from e6ingest.metadata import SchemaError
from e6ingest.pipeline import OutputConflict, pull
from e6ingest.query import QueryError, selection_query
from e6ingest.shards.layout import OutputError
from e6ingest.sources import HubError, HubOptions, MirrorError

USER_ERRORS = (
    ConfigError, ManifestError, SchemaError, QueryError, MirrorError, OutputConflict, HubError,
    CaptionInputError, OutputError,
)  # fmt: skip

# Flags of `pull` that map onto the config model: flag dest -> (table or None, option name).


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
        timeout=args.timeout,
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
    config = make_config(flag_values(args), where=args.config or "flags")
    mirror = _mirror(args)
    reporter = None
    if args.log_json:
        reporter = JsonReporter()
    elif not args.quiet:
        reporter = BarReporter()
    try:
        budget = args.memory_budget << 20 if args.memory_budget else None
        summary = pull(config, args.out, mirror, workers=args.workers, overwrite=args.overwrite,
                       progress=reporter, hub=_hub_options(args),
                       retry_failed=args.retry_failed, memory_budget=budget)  # fmt: skip
    finally:
        if reporter is not None:
            reporter.close()
    if args.log_json:
        reporter("summary", summary.to_dict())
    else:
        for line in summary.lines():
            print(line)
    return 1 if summary.retryable else 0


def cmd_captions(args: argparse.Namespace) -> int:
    from e6ingest import dataset

    if not args.out and not args.preview:
        raise ConfigError("captions: give --out FILE, --preview N, or both")
    config = make_config(flag_values(args), where=args.config or "flags")
    selection_query(config.query, config.ratings)  # a malformed query fails before any data
    if args.metadata:
        posts = dataset.load_metadata(files=args.metadata, include_deleted=config.include_deleted)
    else:
        posts = dataset.load_metadata(
            config.dataset, mirror=_mirror(args), include_deleted=config.include_deleted
        )
    selected = dataset.select(posts, config.query, config.ratings, config.tag_table or None)
    captions = dataset.captions(selected, config.caption)
    if args.out:
        dataset.write_captions(captions, args.out)
        print(f"{len(captions)} captions written to {args.out}", file=sys.stderr)
    for row in captions.head(args.preview).iter_rows(named=True):
        print(f"{row['key']}:")
        for line in row["caption"].split("\n"):
            print(f"  {line}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from e6ingest.shards.verify import verify_output

    report = verify_output(args.out, deep=args.deep)
    for problem in report.problems:
        print(problem)
    checked = f"{report.shards} shards, {report.samples} samples"
    if report.ok:
        print(f"ok: {checked}{' (images decoded)' if args.deep else ''}")
        return 0
    print(f"{len(report.problems)} problems ({checked} checked)", file=sys.stderr)
    return 1


def cmd_export(args: argparse.Namespace) -> int:
    from e6ingest.shards.kohya import export_kohya
    from e6ingest.shards.reader import open_shards

    total = len(open_shards(args.out))
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(desc="export", total=total, unit="sample", file=sys.stderr)
    try:
        summary = export_kohya(args.out, args.to, jsonl=args.jsonl, absolute=args.absolute,
                               progress=bar.update if bar else None)  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    for key in summary.refused:
        print(f"refused sample {key!r}: not a site/id key, or members missing", file=sys.stderr)
    for name in summary.changed:
        print(f"kept {summary.to / name}: changed since e6ingest wrote it", file=sys.stderr)
    print(
        f"{summary.exported} images written, {summary.kept} already there; "
        f"metadata: {summary.metadata}; config: {summary.to / 'dataset_config.toml'}"
    )
    return 1 if summary.refused or summary.changed else 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    handlers = {
        "demo": cmd_demo, "pull": cmd_pull, "inspect": cmd_inspect, "captions": cmd_captions,
        "verify": cmd_verify, "export": cmd_export,
    }  # fmt: skip
    try:
        return handlers[args.command](args)
    except (*USER_ERRORS, FileExistsError) as exc:
        text = str(exc)
        sep = "\n" if "\n" in text else " "  # keep a multi-line message's columns aligned
        print(f"e6ingest {args.command}: error:{sep}{text}", file=sys.stderr)
        return 2
