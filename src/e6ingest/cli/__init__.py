"""The ``e6ingest`` command: thin wrappers that parse flags, call the library, and report in
one line what went wrong (exit codes in ``parsers.EXIT_CODES``)."""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from e6ingest.cli.failures import (
    exit_code,
    failure as failure,  # the exit code of an error
    reader_left,
    report,
)
from e6ingest.cli.parsers import build_parser, flag_values
from e6ingest.cli.progress import BarReporter, JsonReporter
from e6ingest.config import ConfigError, make_config, parse_ratings
from e6ingest.core import SITE_RATINGS
from e6ingest.manifests import load_manifest
from e6ingest.pipeline import EmptySelection
from e6ingest.pipeline.events import Finished
from e6ingest.query import selection_query
from e6ingest.shards.layout import OutputError
from e6ingest.sources import HubOptions

if TYPE_CHECKING:
    from e6ingest.config import PullConfig
    from e6ingest.dataset import Dataset
    from e6ingest.query import Query

DEMO_NOTE = (
    "synthetic posts laid out as the real repositories; some are broken on purpose "
    "(missing, corrupt, undecodable, videos) to show how failures are recorded"
)


def _mirror(args: argparse.Namespace) -> Path | None:
    """The local mirror the flags name, or None for the Hub."""
    if args.demo:
        from e6ingest.demo import demo_mirror

        quiet = getattr(args, "quiet", False) or getattr(args, "log_json", False)
        mirror = demo_mirror(progress=not quiet)
        print(f"using the demo mirror at {mirror} ({DEMO_NOTE})", file=sys.stderr)
        return mirror
    if args.mirror is None:
        return None
    mirror = Path(args.mirror)
    if not mirror.is_dir():
        raise ConfigError(f"--mirror {mirror} does not exist (or is not a folder)")
    return mirror


def _hub_options(args: argparse.Namespace) -> HubOptions:
    try:
        return HubOptions(
            cache_dir=args.cache_dir, io_workers=args.io_workers, attempts=args.attempts,
            timeout=args.timeout, whole_shard_share=args.whole_shard_share,
            delete_shards_after_use=args.delete_shards_after_use,
        )  # fmt: skip
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _index_report() -> Callable[[int, int], None]:
    """A progress bar for a tag index build, shown once a build starts (the line that says
    why, when it was not asked for, is the dataset's notice)."""
    bar = None

    def report(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            desc = "tag index (built once per metadata version)"
            bar = tqdm(desc=desc, total=total, unit="post", file=sys.stderr)
        bar.update(done - bar.n)
        if done == total - 1 > 0:  # every post read: the posting lists are being sorted
            bar.set_postfix_str("sorting and writing the index")
        if done >= total:
            bar.close()

    return report


def _open(args: argparse.Namespace, config: PullConfig) -> Dataset:
    from e6ingest import dataset

    open_dataset = functools.partial(
        dataset.open_dataset,
        include_deleted=config.include_deleted,
        caption=config.caption,
        tag_table=config.tag_table,
        warn=lambda m: _warn([m]),
        index=getattr(args, "index", None),
        notice=lambda line: print(line, file=sys.stderr),
        report=_index_report(),
    )
    if args.metadata:
        return open_dataset(files=args.metadata)
    return open_dataset(config.dataset, mirror=_mirror(args))


def _warn(messages: list[str]) -> None:
    for message in messages:
        print(f"warning: {message}", file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> int:
    from e6ingest.demo import build_demo

    summary = build_demo(args.out, posts=args.posts, seed=args.seed)
    for name in summary.posts:
        print(f"{name}: {summary.posts[name]} posts, {summary.images[name]} images")
    print(f"demo mirror written to {summary.out} ({DEMO_NOTE})")
    print(f"try: e6ingest pull --mirror {summary.out} --rating e,q,s --out out/")
    return 0


def _print_summary(info: Mapping[str, Any], site: str | None) -> None:
    total = info["posts"]
    names = SITE_RATINGS.get(site, {}) if site else {}
    print(f"posts: {total:,}")
    listing = ", ".join(f"{k} {v}" for k, v in names.items())
    print(f"ratings ({site}: {listing}):" if names else "ratings:")
    for rating, n in info["ratings"].items():
        share = f"  {n / total:6.1%}" if total else ""
        label = f"{rating}  {names.get(rating, '')}"
        print(f"  {label:<16} {n:>10,}{share}")
    print("posts per year:")
    for year, n in info["years"].items():
        print(f"  {year}  {n:>10,}")
    for category, tags in info["top_tags"].items():
        print(f"top {category} tags:")
        for tag, n in tags.items():
            print(f"  {n:>10,}  {tag}")
    if info.get("tag_counts"):
        print("selected posts with each tag:")
        for tag, n in info["tag_counts"].items():
            print(f"  {n:>10,}  {tag}")
    if "caption_tokens" in info:
        from e6ingest.captions.tokens import describe_stats

        print(describe_stats(info["caption_tokens"]))


def _selection(args: argparse.Namespace, config: PullConfig) -> tuple[Dataset, Query]:
    """The dataset and the parsed query (with its warnings printed). A malformed query, or
    a rating the site lacks, fails before any data is read."""
    site = None if args.metadata else load_manifest(config.dataset).site
    query = selection_query(config.query, parse_ratings(config.ratings, site), site,
                            config.include_deleted)  # fmt: skip
    data = _open(args, config)
    query = data.indexed(query)
    _warn(data.warnings(query))
    return data, query


def _tags_to_count(text: str | None) -> list[str]:
    """``--tags a,b,c`` as tags (or wildcards); what no tag can be is refused, as it would
    count 0 posts: a space inside, a search's ``-`` or ``~`` in front."""
    tags = [t.strip().lower() for t in (text or "").split(",") if t.strip()]
    for tag in tags:
        if len(tag.split()) > 1:
            raise ConfigError(f"--tags {tag!r}: a tag holds no space; write "
                              f"{'_'.join(tag.split())!r} for one tag, or separate several "
                              "with commas")  # fmt: skip
        if tag[0] in "-~":
            raise ConfigError(f"--tags {tag!r}: --tags counts tags, and no tag starts with "
                              f"{tag[0]!r}; for a search, --query {tag!r} --count")  # fmt: skip
    return tags


def cmd_inspect(args: argparse.Namespace) -> int:
    from e6ingest import dataset

    config = make_config(flag_values(args), where=args.config or "flags")
    tags = _tags_to_count(args.tags)
    data, query = _selection(args, config)
    counts = data.tag_counts(query, tags, config.subset) if tags else {}
    if args.count:
        print(data.count(query, config.subset))
        for tag, n in counts.items():
            print(f"{tag}\t{n}")
        return 0
    selected = data.select(query, config.subset)
    info = dataset.summary(selected, top=args.top)
    if tags:
        info["tag_counts"] = counts
    info["caption_tokens"] = dataset.caption_token_stats(selected, config.caption, data.tables)
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        _print_summary(info, data.site)
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    config = make_config(flag_values(args), where="flags")
    data = _open(args, config)
    start = time.perf_counter()
    index = data.tag_index()
    record = index.record
    built = index.built_now
    how = (f"built in {record['build_seconds']} s" if built else
           f"already built, checked in {time.perf_counter() - start:.1f} s")  # fmt: skip
    print(f"tag index of {record['rows']:,} posts, {record['tags']:,} tags, "
          f"{record['postings']:,} postings ({how}): {index.folder}")  # fmt: skip
    return 0


def cmd_captions(args: argparse.Namespace) -> int:
    from e6ingest import dataset

    if not args.out and not args.preview:
        raise ConfigError("captions: give --out FILE, --preview N, or both")
    if args.out == "-" and args.preview:
        raise ConfigError("captions: --preview prints to standard output, which --out - "
                          "writes the captions to: give one of them")  # fmt: skip
    config = make_config(flag_values(args), where=args.config or "flags")
    if args.out:
        dataset.check_captions_out(args.out)
    data, query = _selection(args, config)
    posts = data.select(query, config.subset)

    def empty() -> EmptySelection:
        return EmptySelection(f"the selection is empty: {query.explain_empty(data.posts)} "
                              "(--allow-empty to write an empty file)")  # fmt: skip

    if not args.out:
        head, sample, total = dataset.preview_captions(posts, args.preview, config.caption,
                                                       data.tables)  # fmt: skip
        if not total and not args.allow_empty:
            raise empty()
        _print_captions(head, sample)
        return 0
    preview = dataset.CaptionPreview(args.preview) if args.preview else None
    batches = None  # else the selection is copied once, then read a batch at a time
    if data.reads_in_batches(query, config.subset):
        columns = dataset.caption_inputs(posts)
        rows, first = dataset.batch_posts(config.caption), dataset.end_batch_rows(config.caption)
        batches = data.select_in_batches(query, columns, rows, first)
    try:  # a batch at a time: memory does not grow with the selection
        written = dataset.write_captions_of(posts, args.out, config.caption, data.tables,
                                            args.allow_empty, preview=preview,
                                            batches=batches)  # fmt: skip
    except EmptySelection:
        raise empty() from None
    from e6ingest.pipeline.results import plural

    where = "standard output" if args.out == "-" else args.out
    print(f"{plural(written, 'caption')} written to {where}", file=sys.stderr)
    if preview is not None and written:
        _print_captions(*preview.frames())
    return 0


def _print_captions(head: pl.DataFrame, sample: pl.DataFrame) -> None:
    """The captions of ``head`` (each variant on its line), then the token statistics of
    the captions of ``sample``."""
    from e6ingest import dataset
    from e6ingest.captions.tokens import describe_stats

    for row in head.iter_rows(named=True):
        print(f"{row['key']}:")
        texts = row.get("captions") or {"": row["caption"]}
        for name, text in texts.items():
            for line in text.split("\n"):
                print(f"  {name + ': ' if name else ''}{line}")
    print(describe_stats(dataset.captions_token_stats(sample)))


def cmd_pull(args: argparse.Namespace) -> int:
    from e6ingest.pipeline import pull

    config = make_config(flag_values(args), where=args.config or "flags")
    hub = _hub_options(args)
    executor = None
    if args.ray_address and args.executor != "ray":
        raise ConfigError("--ray-address is the cluster of --executor ray; add --executor ray "
                          "(without it the run would stay on this machine)")  # fmt: skip
    if args.executor == "ray":
        from e6ingest.pipeline.ray_executor import RayExecutor

        executor = RayExecutor(args.ray_address, num_cpus=args.workers)
        executor.check_address()  # before the demo is built or anything planned
    mirror = _mirror(args)
    reporter = JsonReporter() if args.log_json else BarReporter(quiet=args.quiet)
    try:
        summary = pull(
            config, args.out, mirror, hub=hub, progress=reporter, workers=args.workers,
            overwrite=args.overwrite, retry_failed=args.retry_failed,
            memory_budget=args.memory_budget << 20 if args.memory_budget else None,
            allow_empty=args.allow_empty, executor=executor, index=args.index,
        )  # fmt: skip
    finally:
        reporter.close()
        if executor is not None:
            executor.close()
    if args.log_json:
        reporter(Finished(summary))
    else:
        for line in summary.lines():
            print(line)
    return 1 if summary.retryable else 0


def cmd_verify(args: argparse.Namespace) -> int:
    from e6ingest.pipeline.results import plural
    from e6ingest.readers.verify import verify_output

    if not Path(args.out).is_dir():
        raise OutputError(f"{args.out} is not a folder (give the --out of a pull)")
    report = verify_output(args.out, deep=args.deep)
    for problem in report.problems:
        print(problem)
    checked = f"{plural(report.shards, 'shard')}, {plural(report.samples, 'sample')}"
    if report.ok:
        print(f"ok: {checked}{' (images decoded)' if args.deep else ''}")
        return 0
    print(f"{plural(len(report.problems), 'problem')} ({checked} checked)", file=sys.stderr)
    return 1


def cmd_export(args: argparse.Namespace) -> int:
    from e6ingest.readers.kohya import export_kohya
    from e6ingest.readers.reader import open_shards

    total = len(open_shards(args.out))
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        # shown after a moment: a refused --to is said alone, with no bar before it
        bar = tqdm(desc="export", total=total, unit="sample", file=sys.stderr, delay=0.5)
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
        f"{summary.exported:,} images written, {summary.kept:,} already there; "
        f"metadata: {summary.metadata}; config: {summary.to / 'dataset_config.toml'}"
    )
    return 1 if summary.refused or summary.changed else 0


HANDLERS = {
    "demo": cmd_demo, "pull": cmd_pull, "inspect": cmd_inspect, "captions": cmd_captions,
    "index": cmd_index, "verify": cmd_verify, "export": cmd_export,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    log_json = getattr(args, "log_json", False)
    try:
        return HANDLERS[args.command](args)
    except KeyboardInterrupt as exc:
        detail = getattr(exc, "detail", "")
        said = f"interrupted; {detail}; " if detail else "interrupted; "
        report(args.command, 130, said + "rerun the same command to continue", log_json)
        return 130
    except BrokenPipeError:  # the reader left (| head): say nothing more
        return reader_left()
    except Exception as exc:
        return exit_code(args.command, exc, log_json)
