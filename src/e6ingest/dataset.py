"""The Python API for notebooks and scripts: load a dataset's metadata, select, count.

>>> from e6ingest import dataset
>>> posts = dataset.load_metadata("e621", demo=True)
>>> selected = dataset.select(posts, "solo -comic", ratings=("e", "q", "s"))
>>> dataset.rating_counts(selected)          # a polars DataFrame; .to_pandas() on request
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl

from e6ingest.cache import cache_dir
from e6ingest.captions import CaptionSpec, caption_frame
from e6ingest.captions.variants import VARIANTS_COLUMN
from e6ingest.config import parse_ratings
from e6ingest.core import RATING_ORDER, atomic_path, temp_path
from e6ingest.manifests import load_manifest
from e6ingest.metadata import TAG_CATEGORIES, SchemaError, scan_files
from e6ingest.metadata.tagtable import apply_tag_table, read_tag_table
from e6ingest.pipeline.sourcing import CaptionTables, caption_tables, metadata_source
from e6ingest.query import Query, Subset, has_tag, selection_query
from e6ingest.query.index import Report, TagIndex, open_index
from e6ingest.query.indexing import index_for_question
from e6ingest.query.vocabulary import cached_vocabulary, check_tags, tags_present
from e6ingest.shards import sample_key_expr
from e6ingest.shards.layout import OutputError
from e6ingest.sources import HubOptions, MirrorError


def metadata_files(
    dataset: str, mirror: str | Path | None = None, hub: HubOptions | None = None,
    caption: CaptionSpec | None = None, tag_table: str = "",
    warn: Callable[[str], None] | None = None,
) -> tuple[list[Path], list[str], CaptionTables]:  # fmt: skip
    """Local metadata files of ``dataset`` (from ``mirror``, else downloaded from the Hub
    into its cache), the schema of each, and the tag tables its captions use."""
    manifest = load_manifest(dataset)
    if mirror is not None and not Path(mirror).is_dir():
        raise MirrorError(f"--mirror {mirror} does not exist (or is not a folder)")
    with metadata_source(manifest, mirror, hub or HubOptions()) as source:
        paths = [source.metadata_file(m) for m in manifest.metadata]
        tables = caption_tables(caption or CaptionSpec(), tag_table, manifest, source, paths,
                                warn or (lambda message: None))  # fmt: skip
    return paths, [m.schema for m in manifest.metadata], tables


EVERYTHING = Subset()


@dataclass(frozen=True)
class Dataset:
    """A dataset's metadata files, read as one canonical frame of posts (``posts``), with
    queries checked against its site's ratings and its tags."""

    files: tuple[Path, ...]
    schemas: tuple[str | None, ...]
    site: str | None = None  # None: files of any site (ratings of either accepted)
    include_deleted: bool = False
    tables: CaptionTables | None = None  # tags table, implications, tag rarity
    index: bool | None = None  # True: the tag index, built if needed; False: scan;
    # None: the index if built, else the scan for a first question, the index from the second
    report: Report | None = None  # hears the progress of an index build (done, total)
    notice: Callable[[str], None] | None = None  # hears why an index is being built
    _chosen: list[TagIndex | None] = field(default_factory=list, repr=False, compare=False)

    @property
    def posts(self) -> pl.LazyFrame:
        """Every post, lazily (deleted ones only with ``include_deleted``)."""
        return scan_files(list(self.files), list(self.schemas), self.include_deleted)

    @property
    def categorised(self) -> pl.LazyFrame:
        """Every post, lazily, with its tags in their categories: the dataset's tags table
        applied where the metadata has no categories (e621), as ``pull`` and ``inspect``
        see them."""
        tag_table = self.tables.tag_table if self.tables else ""
        posts = self.posts
        return apply_tag_table(posts, read_tag_table(tag_table)) if tag_table else posts

    def tag_index(self) -> TagIndex:
        """The tag index of the files, built once (and again when a file changes)."""
        return open_index(self.files, self.schemas, cache_dir() / "index", self.report)

    def build_index(self) -> TagIndex:
        """Build the tag index now (once per metadata version), so every later question
        about these files is answered from it."""
        index = self.tag_index()
        self._chosen[:] = [index]
        return index

    def question_index(self) -> TagIndex | None:
        """The index this dataset's questions are answered from, or None to scan them
        (``index``; decided once per dataset: ``query.indexing``)."""
        if not self._chosen:
            root = cache_dir() / "index"
            self._chosen.append(index_for_question(self.files, self.schemas, root, self.index,
                                                   self.report, self.notice))  # fmt: skip
        return self._chosen[0]

    def query(self, query: str = "", ratings: str | Sequence[str] = ()) -> Query:
        """``query`` and ``ratings`` parsed for this dataset's site (answered from the tag
        index unless the dataset was opened with ``index=False``)."""
        parsed = selection_query(query, parse_ratings(ratings, self.site), self.site,
                                 self.include_deleted)  # fmt: skip
        return self.indexed(parsed)

    def indexed(self, query: Query) -> Query:
        """``query`` answered from the tag index when :meth:`question_index` gives one."""
        index = self.question_index()
        return query.with_index(index) if index is not None else query

    def vocabulary(self) -> pl.DataFrame:
        """Every tag with its number of posts (from the index, or counted once by a pass
        over the tags and cached by the files)."""
        index = self.question_index()
        if index is not None:
            return index.vocabulary()
        return cached_vocabulary(self.files, self.schemas, cache_dir() / "vocabulary")

    def tag_counts(
        self, query: Query, tags: Sequence[str], subset: Subset = EVERYTHING
    ) -> dict[str, int]:
        """On how many of the posts ``query`` selects (the kept part with ``subset``) each
        of ``tags`` (or ``*`` wildcards) is: from the tag index alone when it can."""
        index = self.question_index()
        if index is not None and not subset:
            return index.tag_counts(query, tags)
        selected = self.select(query, subset)
        counts = selected.select(has_tag(t).sum().alias(str(i)) for i, t in enumerate(tags))
        row = counts.collect(engine="streaming").row(0)
        return {tag: int(n) for tag, n in zip(tags, row, strict=True)}

    def warnings(self, query: Query) -> list[str]:
        """Tags of ``query`` no post has, with the closest ones; raises QueryError for a
        ``name:value`` term that is neither a metatag nor a tag. Without an index, the
        query's tags are looked for in the first rows, read until each is found
        (``tags_present``); the whole vocabulary is counted only to suggest the closest tags
        to one that no post has."""
        if not query.tags:
            return []
        if self.question_index() is not None:
            return check_tags(query, self.vocabulary())
        names = {t.tag for t in query.tags}
        if tags_present(self.files, self.schemas, sorted(names), self.include_deleted) == names:
            return []
        return check_tags(query, self.vocabulary())

    def select(
        self, query: Query, subset: Subset = EVERYTHING, tag_table: str | None = None
    ) -> pl.LazyFrame:
        """The posts ``query`` selects (the kept part with ``subset``), lazily, with their
        tag categories restored by ``tag_table`` (e621 ``id,name,category,post_count``;
        default: the dataset's tags table, if it has one)."""
        selected = subset.pick(query.apply(self.posts), query.order)
        tag_table = tag_table or (self.tables.tag_table if self.tables else "")
        if tag_table:
            selected = apply_tag_table(selected, read_tag_table(tag_table))
        return selected

    def count(self, query: Query, subset: Subset = EVERYTHING) -> int:
        """How many posts ``query`` selects (streamed, the rarest tag first)."""
        if subset:
            count: int = self.select(query, subset).select(pl.len()).collect().item()
            return count
        return query.count(self.posts)


def open_dataset(
    dataset: str = "e621",
    mirror: str | Path | None = None,
    demo: bool = False,
    files: Sequence[str | Path] | None = None,
    include_deleted: bool = False,
    hub: HubOptions | None = None,
    caption: CaptionSpec | None = None,
    tag_table: str = "",
    warn: Callable[[str], None] | None = None,
    index: bool | None = None,
    report: Report | None = None,
    notice: Callable[[str], None] | None = None,
) -> Dataset:
    """A dataset: ``files`` (parquet in any supported schema, recognised from their
    columns), or the metadata of ``dataset`` from ``mirror``, the demo (``demo=True``) or
    the Hub (downloaded once and cached), with the tag tables its captions use (``caption``
    says which; ``warn(message)`` hears of a missing one). Queries are answered by scanning
    the metadata, or from a cached tag index: one already built, else one built at the
    second question about the same files (``notice(line)`` hears it said); ``index=True``
    builds it at once, ``index=False`` always scans (``report(done, total)`` hears a build's
    progress)."""
    caption = caption or CaptionSpec()
    answering = partial(Dataset, include_deleted=include_deleted, index=index, report=report,
                        notice=notice)  # fmt: skip
    if files:
        missing = [str(f) for f in files if not Path(f).is_file()]
        if missing:
            raise SchemaError(f"{missing[0]}: no such metadata file")
        given = tuple(Path(f) for f in files)
        tables = CaptionTables(caption, tag_table, caption.implications, given, index=index)
        return answering(given, (None,) * len(given), None, tables=tables)
    if demo:
        from e6ingest.demo import demo_mirror

        mirror = demo_mirror()
    paths, schemas, tables = metadata_files(dataset, mirror, hub, caption, tag_table, warn)
    site = load_manifest(dataset).site
    return answering(tuple(paths), tuple(schemas), site, tables=replace(tables, index=index))


def load_metadata(
    dataset: str = "e621",
    mirror: str | Path | None = None,
    demo: bool = False,
    files: Sequence[str | Path] | None = None,
    include_deleted: bool = False,
) -> pl.LazyFrame:
    """A dataset's metadata as one canonical polars LazyFrame, tags in their categories
    (the dataset's tags table applied where the metadata has none, as the CLI does).

    Give ``mirror`` (a local copy of the repositories), ``demo=True`` (the built-in demo),
    ``files`` (parquet files in any supported schema, recognised from their columns), or
    nothing: the metadata is then downloaded from the Hub (and cached).
    """
    return open_dataset(dataset, mirror, demo, files, include_deleted).categorised


def select(
    posts: pl.LazyFrame,
    query: str = "",
    ratings: str | Sequence[str] = (),
    tag_table: str | Path | None = None,
    sample: int = 0,
    limit: int = 0,
    seed: int = 0,
) -> pl.LazyFrame:
    """The posts matching booru search ``query`` and ``ratings`` (AND), lazily; with
    ``sample`` a deterministic random N of them (``seed``), or the first ``limit`` in the
    query's ``order:``.

    With ``tag_table`` (e621 ``id,name,category,post_count``), tag categories are restored
    on the selected posts.
    """
    parsed = selection_query(query, parse_ratings(ratings), include_deleted=True)
    selected = Subset(sample, limit, seed).pick(parsed.apply(posts), parsed.order)
    if tag_table is not None:
        selected = apply_tag_table(selected, read_tag_table(tag_table))
    return selected


def count(posts: pl.LazyFrame, query: str = "", ratings: str | Sequence[str] = ()) -> int:
    """The number of posts matching ``query`` and ``ratings`` (everything by default).

    The fast path for "how many match?": streamed, reading the tag column once, with the
    rest of the query run only on the posts that have the query's rarest-looking tag.
    """
    return selection_query(query, parse_ratings(ratings), include_deleted=True).count(posts)


def rating_counts(posts: pl.LazyFrame) -> pl.DataFrame:
    """Posts per rating, in g, s, q, e order, with each rating's share."""
    counts = posts.group_by("rating").agg(pl.len().alias("posts")).collect()
    order = pl.DataFrame({"rating": RATING_ORDER, "order": range(len(RATING_ORDER))})
    return (
        counts.join(order, on="rating", how="left")
        .sort("order", nulls_last=True)
        .drop("order")
        .with_columns((pl.col("posts") / pl.col("posts").sum()).alias("share"))
    )


def posts_per_year(posts: pl.LazyFrame) -> pl.DataFrame:
    """Posts per year of ``created_at``."""
    return (
        posts.group_by(pl.col("created_at").dt.year().alias("year"))
        .agg(pl.len().alias("posts"))
        .sort("year")
        .collect()
    )


def top_tags(posts: pl.LazyFrame, category: str = "general", n: int = 10) -> pl.DataFrame:
    """The ``n`` most frequent tags of one category, with their post counts."""
    if category not in TAG_CATEGORIES:
        raise ValueError(f"unknown category {category!r} (known: {TAG_CATEGORIES})")
    column = f"tags_{category}"
    return (
        posts.select(pl.col(column).alias("tag"))
        .explode("tag")
        .drop_nulls()
        .group_by("tag")
        .agg(pl.len().alias("posts"))
        .sort(["posts", "tag"], descending=[True, False])
        .head(n)
        .collect()
    )


def summary(posts: pl.LazyFrame, top: int = 10) -> dict[str, Any]:
    """Everything ``e6ingest inspect`` shows, as plain data."""
    ratings = rating_counts(posts)
    tags = {c: dict(top_tags(posts, c, top).iter_rows()) for c in TAG_CATEGORIES}
    return {
        "posts": int(ratings["posts"].sum()),
        "ratings": dict(zip(ratings["rating"], ratings["posts"], strict=True)),
        "years": {str(y): n for y, n in posts_per_year(posts).iter_rows()},
        "top_tags": {c: t for c, t in tags.items() if t},
    }


CAPTION_INPUTS = ("id", "site", "rating", "score", "created_at")


def captions(
    posts: pl.LazyFrame, spec: CaptionSpec | None = None, tables: CaptionTables | None = None
) -> pl.DataFrame:
    """The captions of ``posts`` per ``spec``: ``id``, ``key``, ``caption``, ``tags`` (the
    tag part), ``nl`` (the natural-language texts) and, with variants, ``captions`` (each
    variant's caption by name, ``default`` first), built for all posts at once, with
    ``tables`` (a dataset's implications and tag rarity) where the spec needs them."""
    spec = spec or CaptionSpec()
    rarity = tables.rarity() if tables is not None else None
    implied = tables.implied() if tables is not None else None
    frame = caption_frame(posts.select(_caption_inputs(posts)).collect(), spec, rarity, implied)
    return _caption_columns(frame, spec)


def _caption_inputs(posts: pl.LazyFrame) -> list[str]:
    """The columns captions are made of."""
    tags = [c for c in posts.collect_schema().names() if c.startswith("tags_")]
    return [*CAPTION_INPUTS, *tags]


def _caption_columns(frame: pl.DataFrame, spec: CaptionSpec) -> pl.DataFrame:
    """A captioned frame as :func:`captions` returns it."""
    variants = [pl.col(VARIANTS_COLUMN).alias("captions")] if spec.variants else []
    return frame.select(
        "id",
        sample_key_expr().alias("key"),
        "caption",
        pl.col("caption_tags").alias("tags"),
        pl.col("caption_nl").alias("nl"),
        *variants,
    )


CAPTION_BATCH_ROWS = 250_000  # captions made and written at a time by write_captions_of


def write_captions_of(
    posts: pl.LazyFrame,
    path: str | Path,
    spec: CaptionSpec | None = None,
    tables: CaptionTables | None = None,
    allow_empty: bool = True,
    batch_rows: int = CAPTION_BATCH_ROWS,
) -> int:
    """The captions of ``posts`` (as :func:`captions` makes them) written to ``path`` as
    JSON lines, atomically, ``batch_rows`` captions at a time (fewer posts when each has
    variants, :func:`~e6ingest.captions.variants.posts_per_batch`): memory holds one batch, however
    large the selection (which is streamed to a temporary file beside ``path`` first).
    Returns how many were written; an empty selection raises :class:`EmptySelection`
    (writing nothing) unless ``allow_empty``."""
    from e6ingest.captions import CaptionSelection
    from e6ingest.captions.variants import posts_per_batch
    from e6ingest.pipeline.plan import EmptySelection

    check_captions_out(path)
    spec = spec or CaptionSpec()
    rarity = tables.rarity() if tables is not None else None
    implied = tables.implied() if tables is not None else None
    selection = temp_path(Path(path))
    try:
        posts.select(_caption_inputs(posts)).sink_parquet(selection, engine="streaming")
        rows = pl.scan_parquet(selection)
        total: int = rows.select(pl.len()).collect().item()
        if not total and not allow_empty:
            raise EmptySelection("the selection is empty (--allow-empty to write an empty file)")
        with (
            CaptionSelection(rows, spec) as shared,
            atomic_path(path) as tmp,
            tmp.open("wb") as out,
        ):
            at_once = posts_per_batch(batch_rows, spec)
            for start in range(0, total, at_once):
                batch = rows.slice(start, at_once).collect()
                frame = caption_frame(batch, spec, rarity, implied, shared)
                _caption_columns(frame, spec).write_ndjson(out)
                del batch, frame
    finally:
        selection.unlink(missing_ok=True)
    return total


def caption_token_stats(
    posts: pl.LazyFrame, spec: CaptionSpec | None = None, tables: CaptionTables | None = None
) -> dict[str, Any]:
    """CLIP token lengths of the captions of ``posts`` (a deterministic sample of at most
    10,000 of them): median, p90, share over 75/150/225 and a histogram; with variants,
    under ``variants`` the same for each variant by name."""
    from e6ingest.captions.tokens import STATS_SAMPLE

    return captions_token_stats(captions(Subset(sample=STATS_SAMPLE).pick(posts), spec, tables))


def captions_token_stats(frame: pl.DataFrame) -> dict[str, Any]:
    """:func:`caption_token_stats` of captions already built (a :func:`captions` frame)."""
    from e6ingest.captions.tokens import token_stats

    stats = token_stats(frame["caption"].to_list())
    if "captions" in frame.columns:
        stats["variants"] = {name: token_stats(frame["captions"].struct.field(name).to_list())
                             for name in frame["captions"].struct.fields}  # fmt: skip
    return stats


def caption_token_lengths(captions_: pl.DataFrame, variant: str | None = None) -> pl.Series:
    """The CLIP token count of each caption of a :func:`captions` frame (for a histogram),
    or of each caption of one ``variant``."""
    from e6ingest.captions.tokens import count_tokens

    texts = captions_["caption"] if variant is None else captions_["captions"].struct.field(variant)
    return pl.Series("tokens", count_tokens(texts.to_list()))


CAPTION_FIELDS = {"id", "key", "caption", "tags", "nl"}


def _captions_file_is_ours(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as f:
            first = f.readline()
        return not first or set(json.loads(first)) - {"captions"} == CAPTION_FIELDS
    except (OSError, ValueError, TypeError):
        return False


def check_captions_out(path: str | Path) -> None:
    """Fail (``OutputError``) unless :func:`write_captions` may write ``path``: a file in
    an existing folder that is new or a captions file e6ingest wrote."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"--out {path} is a folder; give a file name, e.g. {path}/captions.jsonl")
    if path.exists() and (path.is_symlink() or not _captions_file_is_ours(path)):
        raise OutputError(f"--out {path} exists and is not a captions file e6ingest wrote; "
                          "choose another file name")  # fmt: skip
    if not path.parent.is_dir():
        raise OutputError(f"--out {path}: the folder {path.parent} does not exist")


def write_captions(frame: pl.DataFrame, path: str | Path) -> None:
    """``frame`` (from :func:`captions`) as JSON lines, written atomically. An existing
    file is replaced only when it is a captions file e6ingest wrote."""
    check_captions_out(path)
    with atomic_path(path) as tmp:  # written by polars straight into the file
        frame.write_ndjson(tmp)
