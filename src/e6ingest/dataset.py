"""The Python API for notebooks and scripts: load a dataset's metadata, select, count.

>>> from e6ingest import dataset
>>> posts = dataset.load_metadata("e621", demo=True)
>>> selected = dataset.select(posts, "solo -comic", ratings=("e", "q", "s"))
>>> dataset.rating_counts(selected)          # a polars DataFrame; .to_pandas() on request
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import polars as pl

from e6ingest.cache import cache_dir
from e6ingest.captioned import (
    CAPTION_BATCH_ROWS as CAPTION_BATCH_ROWS,
    CAPTION_FIELDS as CAPTION_FIELDS,
    CAPTION_INPUTS as CAPTION_INPUTS,
    CaptionPreview as CaptionPreview,
    batch_posts as batch_posts,
    caption_inputs as caption_inputs,
    caption_token_lengths as caption_token_lengths,
    caption_token_stats as caption_token_stats,
    captions as captions,
    captions_token_stats as captions_token_stats,
    check_captions_out as check_captions_out,
    end_batch_rows as end_batch_rows,
    preview_captions as preview_captions,
    write_captions as write_captions,
    write_captions_of as write_captions_of,
)
from e6ingest.captions import CaptionSpec
from e6ingest.config import parse_ratings
from e6ingest.core import check_plain_fields
from e6ingest.manifests import load_manifest
from e6ingest.metadata import canonical_batches, scan_files
from e6ingest.metadata.describe import (
    UNKNOWN as UNKNOWN,  # what inspect shows, re-exported
    posts_per_year as posts_per_year,
    rating_counts as rating_counts,
    summary as summary,
    top_tags as top_tags,
)
from e6ingest.metadata.given import given_files
from e6ingest.metadata.schemas import Schema
from e6ingest.metadata.tagtable import apply_tag_table, read_tag_table
from e6ingest.pipeline.sourcing import (
    TABLE_COSTS,
    CaptionTables,
    caption_tables,
    check_implications,
    metadata_source,
)
from e6ingest.query import Query, QueryError, Subset, has_tag, selection_query
from e6ingest.query.index import Report, TagIndex, open_index
from e6ingest.query.indexing import index_for_question
from e6ingest.query.vocabulary import (
    cached_vocabulary,
    check_tags,
    query_warnings,
    refuse_unknown_metatags,
    tags_present,
)
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
    queries checked against its site's ratings and its tags. Its questions take a query
    as :meth:`query` parses it (with ratings) or as booru search text
    (``data.count("solo rating:e")``)."""

    files: tuple[Path, ...]
    schemas: tuple[str | None, ...]
    site: str | None = None  # None: given files (all of one site, either; its ratings)
    include_deleted: bool = False
    tables: CaptionTables | None = None  # tags table, implications, tag rarity
    index: bool | None = None  # True: the tag index, built if needed; False: scan;
    # None: the index if built, else the scan for a first question, the index from the second
    report: Report | None = None  # hears the progress of an index build (done, total)
    notice: Callable[[str], None] | None = None  # hears why an index is being built
    _chosen: list[TagIndex | None] = field(default_factory=list, repr=False, compare=False)
    _present: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_plain_fields(self)  # include_deleted="no" is not false

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
        refuse_unknown_metatags(parsed, self.tags_present)  # upvotes:>5: a tag?
        return self.indexed(parsed)

    def tags_present(self, tags: Sequence[str]) -> set[str]:
        """Which of ``tags`` some post has: from the index's vocabulary, else reading the
        first rows until each is found (a tag no post has costs a pass; each answer is
        kept, so a question's check and its warnings read the rows once)."""
        index = self.question_index()
        if index is not None:
            return set(index.vocabulary().filter(pl.col("tag").is_in(list(tags)))["tag"])
        new = sorted(set(tags) - self._present.keys())
        if new:
            found = tags_present(self.files, self.schemas, new, self.include_deleted)
            self._present.update((tag, tag in found) for tag in new)
        return {tag for tag in tags if self._present[tag]}

    def _query(self, query: Query | str) -> Query:
        """``query`` as given, or a search string parsed by :meth:`query` (any rating)."""
        if isinstance(query, str):
            return self.query(query)
        if not isinstance(query, Query):
            raise TypeError(f"a query is booru search text or a Dataset.query(...), "
                            f"not {type(query).__name__}")  # fmt: skip
        return query

    def indexed(self, query: Query) -> Query:
        """``query`` answered from the tag index when :meth:`question_index` gives one (a
        query that selects every post asks nothing of an index: none is built for it
        unless the dataset was opened with ``index=True``)."""
        if query.expr is None and self.index is not True:
            return query
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
        self, query: Query | str, tags: Sequence[str], subset: Subset = EVERYTHING
    ) -> dict[str, int]:
        """On how many of the posts ``query`` selects (the kept part with ``subset``) each
        of ``tags`` (or ``*`` wildcards) is: from the tag index alone when it can."""
        query = self._query(query)
        index = self.question_index()
        if index is not None and not subset:
            return index.tag_counts(query, tags)
        selected = self.select(query, subset)
        counts = selected.select(has_tag(t).sum().alias(str(i)) for i, t in enumerate(tags))
        row = counts.collect(engine="streaming").row(0)
        return {tag: int(n) for tag, n in zip(tags, row, strict=True)}

    def warnings(self, query: Query | str) -> list[str]:
        """Tags of ``query`` no post has, with the closest ones; raises QueryError for a
        ``name:value`` term that is neither a metatag nor a tag. Without an index, the
        query's tags are looked for in the first rows, read until each is found
        (``tags_present``); the whole vocabulary is counted only to suggest the closest tags
        to one that no post has."""
        query = self._query(query)
        if not query.tags:
            return []
        if self.question_index() is not None:
            return check_tags(query, self.vocabulary())
        return query_warnings(query, self.tags_present, self.vocabulary)

    def select(
        self, query: Query | str, subset: Subset = EVERYTHING, tag_table: str | None = None
    ) -> pl.LazyFrame:
        """The posts ``query`` selects (the kept part with ``subset``), lazily, with their
        tag categories restored by ``tag_table`` (e621 ``id,name,category,post_count``;
        default: the dataset's tags table, if it has one)."""
        query = self._query(query)
        selected = subset.kept_rows(query.apply(self.posts), query.order)
        tag_table = tag_table or (self.tables.tag_table if self.tables else "")
        if tag_table:
            selected = apply_tag_table(selected, read_tag_table(tag_table))
        return selected

    def reads_in_batches(self, query: Query | str, subset: Subset = EVERYTHING) -> bool:
        """Whether :meth:`select_in_batches` suits the selection: every post it keeps,
        with a query that reads no tags (answered from the tag index, or by ratings and
        numbers alone), which each pass over the selection then runs again cheaply."""
        return not subset and not self._query(query).reads_tags()

    def select_in_batches(
        self, query: Query | str, columns: Sequence[str], rows: int, first: int = 0
    ) -> Iterator[pl.DataFrame]:
        """The ``columns`` of the posts ``query`` selects, as :meth:`select` gives them and
        in its order (tag categories restored by the dataset's tags table), read ``rows``
        metadata rows at a time (``first`` rows the first time, when given): each batch
        reads only its own row groups, and no copy of the selection is made. Best when
        :meth:`reads_in_batches`."""
        query = self._query(query).resolved()
        tag_table = self.tables.tag_table if self.tables else ""
        tags = read_tag_table(tag_table) if tag_table else None
        files = canonical_batches(
            list(self.files), list(self.schemas), rows, self.include_deleted, first
        )
        for batch in files:
            selected = query.apply(batch)
            if tags is not None:
                selected = apply_tag_table(selected, tags)
            frame = selected.select(columns).collect()
            if frame.height:
                yield frame

    def count(self, query: Query | str = "", subset: Subset = EVERYTHING) -> int:
        """How many posts ``query`` selects (streamed, the rarest tag first)."""
        query = self._query(query)
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
        check_implications(caption, None)
        given, found = given_files(files, warn)
        if not tag_table and warn is not None:
            _warn_uncategorised(given, found, warn)
        tables = CaptionTables(caption, tag_table, caption.implications, given, index=index)
        return answering(given, (None,) * len(given), None, tables=tables)
    if demo:
        from e6ingest.demo import demo_mirror

        mirror = demo_mirror()
    paths, schemas, tables = metadata_files(dataset, mirror, hub, caption, tag_table, warn)
    site = load_manifest(dataset).site
    return answering(tuple(paths), tuple(schemas), site, tables=replace(tables, index=index))


def _warn_uncategorised(
    files: Sequence[Path], schemas: Sequence[Schema], warn: Callable[[str], None]
) -> None:
    """Say, once, that the first of ``files`` whose schema keeps its tags uncategorised is
    read so (no tags table was given) and what that costs the captions."""
    for path, schema in zip(files, schemas, strict=True):
        if not schema.categorised:
            cost, flag = TABLE_COSTS["tags"]
            warn(f"{path}: the {schema.name} schema has no tag categories and no tags table "
                 f"was given; {cost}. Give the e621 tags export (id,name,category,post_count) "
                 f"with {flag} FILE")  # fmt: skip
            return


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
    query's ``order:``, chosen now from the small columns (``posts`` has one row per id, as
    :func:`load_metadata` gives it).

    With ``tag_table`` (e621 ``id,name,category,post_count``), tag categories are restored
    on the selected posts.
    """
    parsed = _posts_query(posts, query, ratings)
    selected = Subset(sample, limit, seed).kept_rows(parsed.apply(posts), parsed.order)
    if tag_table is not None:
        selected = apply_tag_table(selected, read_tag_table(tag_table))
    return selected


def count(posts: pl.LazyFrame, query: str = "", ratings: str | Sequence[str] = ()) -> int:
    """The number of posts matching ``query`` and ``ratings`` (everything by default).

    The fast path for "how many match?": streamed, reading the tag column once, with the
    rest of the query run only on the posts that have the query's rarest-looking tag.
    """
    return _posts_query(posts, query, ratings).count(posts)


def _posts_query(posts: pl.LazyFrame, query: str, ratings: str | Sequence[str]) -> Query:
    """``query`` and ``ratings`` parsed for a frame of posts, which holds deleted posts only
    when loaded with ``include_deleted``: ``status:deleted`` on a frame without a deleted
    post is refused, not answered 0."""
    rated = parse_ratings(ratings)
    parsed = selection_query(query, rated, include_deleted=True)
    refuse_unknown_metatags(parsed, partial(_present_in, posts))  # upvotes:>5: a tag?
    try:
        selection_query(query, rated)
    except QueryError as exc:  # parsed only with deleted posts: it asks for them
        deleted = posts.select(pl.col("is_deleted").any()).collect().item()
        if not deleted:
            raise exc.because("these posts hold no deleted post; load_metadata leaves them "
                              "out unless include_deleted=True") from None  # fmt: skip
    return parsed


def _present_in(posts: pl.LazyFrame, tags: Sequence[str]) -> set[str]:
    found = posts.select(has_tag(t).any().alias(t) for t in tags).collect().row(0)
    return {tag for tag, there in zip(tags, found, strict=True) if there}
