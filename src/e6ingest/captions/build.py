"""Captions for a whole frame of posts, a batch at a time on tag codes (:mod:`.codes`), with
no Python loop per post or per tag.

Input: canonical metadata columns (``id``, ``site``, ``rating``, ``tags_<category>`` lists,
``score``, ``created_at``). Output columns: ``caption`` (the text a trainer reads),
``caption_tags`` (the tag part) and ``caption_nl`` (the natural-language texts, a list).

Per tag: alias, then drop (blacklist and meta filter, matched on the raw tag), then rewrite
(underscores to spaces, parentheses escaped). Per post: people-count tags first when asked,
categories in order (the fixed head before ``keep_tokens_separator``), extra tags (rating,
quality, date) at the end or the front, duplicates removed, at most ``max_tags``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np
import polars as pl
import pyarrow as pa

from e6ingest.captions.budget import Ranked, fit_budget, rank_lists
from e6ingest.captions.codes import (
    NUMBER,
    Lists,
    Part,
    TagBatch,
    TagRules,
    extra_part,
    rewrite,
)
from e6ingest.captions.extras import Thresholds, extra_tags, score_thresholds
from e6ingest.captions.files import NO_TEXTS, NLTexts
from e6ingest.captions.implications import prune_implied
from e6ingest.captions.render import nl_in_head, render
from e6ingest.captions.session import Captioning
from e6ingest.captions.spec import CaptionSpec
from e6ingest.captions.tokens import WordCounts

BATCH_ROWS = 25_000

# What captions of one batch made, by what it depends on (see :func:`_shared`).
Memo = dict[Any, Any]
T = TypeVar("T")


# Options a caption's tag lists do not depend on (the budget, the NL texts, the variants):
# captions of one batch whose specs differ only in these share their lists.
_NOT_IN_LISTS = ("max_tokens", "merge", "nl_position", "nl_captions", "nl_fields", "nl_finished",
                 "token_priority", "variants", "variant_lines", "aliases", "implications",
                 "prune_implied")  # fmt: skip
_IN_LISTS = tuple(name for name in CaptionSpec.__dataclass_fields__ if name not in _NOT_IN_LISTS)


def _lists_key(spec: CaptionSpec, thresholds: Thresholds, in_place: bool = False) -> Hashable:
    """What a caption's tag lists depend on: two specs with the same key have the same
    (``in_place``: the key of the same spec with people-count tags in place). Made of the
    spec's values, not a copy of the spec: a copy checks every option again, a cost paid for
    every batch and every variant."""
    values = {name: getattr(spec, name) for name in _IN_LISTS}
    if in_place:
        values["people_first"] = False
    quality = sorted((k, tuple(v)) for k, v in thresholds.items()) if spec.quality_tag else []
    return tuple(values.values()), tuple(quality)


def _shared(memo: Memo, key: Hashable, make: Callable[[], T]) -> T:
    """``memo[key]``, made by ``make()`` the first time."""
    if key not in memo:
        memo[key] = make()
    made: T = memo[key]
    return made


def _tag_lists(
    frame: pl.DataFrame,
    spec: CaptionSpec,
    site: str,
    rules: TagRules,
    thresholds: Thresholds,
    memo: Memo | None = None,
) -> dict[str, Lists]:
    """The caption's tags, per row, as written numbers: ``whole`` (every tag, in caption
    order, deduplicated, at most ``max_tags``) and, as the spec needs them, ``head`` (the
    part fixed before the keep-tokens separator), ``keep`` (what a token budget keeps
    first: people-count tags, artist/character/copyright, the extra tags asked for) and
    ``meta`` (meta tags, which a budget drops first). ``memo``: what captions of the same
    batch (variants) made before, shared where their specs agree."""
    memo = {} if memo is None else memo
    key = _lists_key(spec, thresholds)
    parts = _shared(memo, ("parts", key),
                    lambda: _TagParts(frame, spec, site, rules, thresholds, memo))  # fmt: skip
    moved = partial(_people_moved_first, spec, thresholds, memo)
    lists = _shared(memo, ("lists", key), lambda: moved() or parts.caption_lists())
    if not spec.max_tokens:
        return lists
    in_place = _lists_key(spec, thresholds, in_place=True)  # keep, meta alike
    budget = _shared(memo, ("keep and meta", in_place), parts.budget_lists)
    return _shared(memo, ("budget lists", key), lambda: {**lists, **budget})


def _people_moved_first(
    spec: CaptionSpec, thresholds: Thresholds, memo: Memo
) -> dict[str, Lists] | None:
    """With ``people_first``, the lists of the same spec without it, made before for this
    batch, with each row's people-count tags moved first (the order recorded in ``memo``
    for :func:`_ranked`): the same lists as made anew whenever the tags' numbers tell
    people-count tags apart (:meth:`_TagParts.people_numbers`), nothing is cut at
    ``max_tags`` and there is no fixed head. None otherwise (they are made anew)."""
    if not spec.people_first or spec.max_tags or spec.keep_tokens_separator:
        return None
    in_place = _lists_key(spec, thresholds, in_place=True)
    lists, parts = memo.get(("lists", in_place)), memo.get(("parts", in_place))
    people = None if parts is None else parts.people_numbers()
    if lists is None or people is None:
        return None
    whole = lists["whole"]
    order = whole.front_first(np.isin(whole.numbers, people))
    memo[("moved", _lists_key(spec, thresholds))] = (in_place, order)
    return {"whole": whole.reordered(order)}


class _TagParts:
    """A batch's tags by category, numbered once, and the parts a caption is made of."""

    def __init__(
        self,
        frame: pl.DataFrame,
        spec: CaptionSpec,
        site: str,
        rules: TagRules,
        thresholds: Thresholds,
        memo: Memo,
    ) -> None:
        self.spec, self.categories = spec, spec.categories(site)
        self.split = bool(spec.keep_tokens_separator)
        categories = self.categories
        self.fixed = (tuple(c for c in categories if c in spec.fixed_categories)
                      if self.split else categories)  # fmt: skip
        self.ordered = self.fixed + tuple(c for c in categories if c not in self.fixed)
        self.batch = _shared(memo, ("batch", self.ordered, rules),
                             lambda: TagBatch(frame, self.ordered, rules))  # fmt: skip
        extras = extra_tags(spec, site, thresholds)
        self.extra = None if extras is None else extra_part(frame.select(extras).to_series(),
                                                            rules)  # fmt: skip
        self._people: list[Part | None] | None = None

    def people(self) -> list[Part | None]:
        """The people-count tags of every category."""
        if self._people is None:
            self._people = [self.batch.part(c, people=True) for c in self.ordered]
        return self._people

    def caption_lists(self) -> dict[str, Lists]:
        """``whole`` and, with a keep-tokens separator, ``head``."""
        spec, batch = self.spec, self.batch
        placed = False if spec.people_first else None  # people-count tags in place, or first
        head = (self.people() if spec.people_first else []) + (
            [self.extra] if spec.extras_first else [])  # fmt: skip
        head += [batch.part(c, placed) for c in self.fixed]
        tail = [batch.part(c, placed) for c in self.ordered[len(self.fixed) :]]
        tail += [] if spec.extras_first else [self.extra]
        lists = {"whole": batch.lists(head + tail).deduplicated(spec.max_tags, spec.dedupe)}
        if self.split:
            lists["head"] = batch.lists(head).deduplicated(0, spec.dedupe)
        return lists

    def people_numbers(self) -> np.ndarray | None:
        """The written numbers of the batch's people-count tags; None when one of them is
        also written for a tag that is none (or an extra tag), as two tags that write the
        same text may be."""
        people, others = [], [self.extra.numbers] if self.extra is not None else []
        for _, codes, numbers in self.batch.blocks.values():
            kept, is_people = numbers >= 0, self.batch.rules.people[codes]
            people.append(numbers[kept & is_people])
            others.append(numbers[kept & ~is_people])
        found = np.unique(np.concatenate([np.zeros(0, NUMBER), *people]))
        return None if np.isin(np.concatenate(others or [found[:0]]), found).any() else found

    def budget_lists(self) -> dict[str, Lists]:
        """``keep`` and ``meta``, for a token budget."""
        spec, batch = self.spec, self.batch
        heads = (*spec.fixed_categories, *spec.subject_categories)
        named = [batch.part(c) for c in self.categories if c in heads]
        subjects = [batch.part(c, subject=True) for c in self.ordered]
        meta = [batch.part("meta")] if "meta" in self.categories else []
        return {"keep": batch.lists(self.people() + named + subjects + [self.extra]),
                "meta": batch.lists(meta)}  # fmt: skip


@dataclass(frozen=True)
class CaptionJob:
    """One caption of every post: its ``spec``, natural-language texts ``nl`` (``id``,
    ``nl``: a list of texts, from :func:`read_nl_captions`), quality ``thresholds`` (from
    :func:`score_thresholds`; over the frame itself when the spec asks for quality tags and
    none are given) and ``rarity`` (``tag`` as this spec writes it, ``posts``: from
    :func:`caption_rarity`, for a token budget's priority); ``columns``: the columns of the
    result kept (all when empty)."""

    spec: CaptionSpec
    nl: pl.DataFrame | None = None
    thresholds: Thresholds | None = None
    columns: tuple[str, ...] = ()
    rarity: pl.DataFrame | None = None


def build_captions(
    frame: pl.DataFrame,
    spec: CaptionSpec,
    nl: pl.DataFrame | None = None,
    thresholds: Thresholds | None = None,
    aliases: Mapping[str, str] | None = None,
    batch_rows: int = BATCH_ROWS,
    rarity: pl.DataFrame | None = None,
    implied: pl.DataFrame | None = None,
    captioning: Captioning | None = None,
) -> pl.DataFrame:
    """``frame`` with ``caption``, ``caption_tags`` and ``caption_nl`` added, in order.

    ``nl``, ``thresholds``, ``rarity``: as :class:`CaptionJob` takes them.
    ``aliases``: old -> new tag names, from :func:`read_aliases`.
    ``implied``: ``antecedent``, ``implied`` pairs (closed), for ``prune_implied``.
    ``captioning``: the caches and threads kept across calls (a plan's batches share one);
    without it, this call's own. Rows are captioned ``batch_rows`` at a time, bounding the
    intermediate lists in memory, as many batches at once as it has threads (the heavy steps
    release the GIL).
    """
    job = CaptionJob(spec, nl, thresholds, rarity=rarity)
    return build_many(frame, [job], aliases, batch_rows, implied, captioning)[0]


def build_many(
    frame: pl.DataFrame,
    jobs: list[CaptionJob],
    aliases: Mapping[str, str] | None = None,
    batch_rows: int = BATCH_ROWS,
    implied: pl.DataFrame | None = None,
    captioning: Captioning | None = None,
) -> list[pl.DataFrame]:
    """Each job's captions of ``frame``, as :func:`build_captions` builds them, made
    together a batch of rows at a time: what the jobs' specs agree on (the tags numbered,
    the tag lists, a budget's ranking of the tags) is made once per batch."""
    if captioning is None:
        with Captioning() as own:
            return build_many(frame, jobs, aliases, batch_rows, implied, own)
    if frame.schema.get("created_at") == pl.Null:  # a frame whose dates are all missing
        frame = frame.with_columns(pl.col("created_at").cast(pl.Datetime("us", "UTC")))
    texts: dict[int, NLTexts] = {}  # one lookup table per NL frame
    ready = [_ready(frame, job, captioning.rules(job.spec, aliases or {}), texts) for job in jobs]
    context = (ready, implied, captioning)
    size = even_batch_rows(len(frame), batch_rows, captioning.threads)
    starts = list(range(0, max(len(frame), 1), size))
    batches = captioning.map(lambda s: _caption_batch(frame.slice(s, size), *context), starts)
    for pool in (pa.default_memory_pool(), pa.system_memory_pool()):
        pool.release_unused()  # what the batches' arrow arrays left behind
    if len(batches) == 1:
        return batches[0]
    return [pl.concat([batch[i] for batch in batches]) for i in range(len(jobs))]


def even_batch_rows(rows: int, most: int, threads: int) -> int:
    """Rows per batch: at most ``most``, in a number of batches that ``threads`` share
    evenly (no thread left with the last short batch while the others wait)."""
    batches = -(-max(rows, 1) // max(most, 1))
    batches = -(-batches // threads) * threads
    return max(1, -(-rows // batches))


def _ready(frame: pl.DataFrame, job: CaptionJob, rules: TagRules, texts: Memo) -> _Ready:
    """``job`` with its rules, its NL texts' lookup table (one per NL frame, in ``texts``)
    and its quality thresholds."""
    nl = None if job.nl is None else _shared(texts, id(job.nl), partial(NLTexts, job.nl))
    thresholds = job.thresholds or {}
    if job.spec.quality_tag and job.thresholds is None:
        thresholds = score_thresholds(frame, job.spec)
    return _Ready(job.spec, rules, nl, thresholds, job.columns, job.rarity)


@dataclass(frozen=True)
class _Ready:
    """A job with its tag rules and NL lookup table."""

    spec: CaptionSpec
    rules: TagRules
    nl: NLTexts | None
    thresholds: Thresholds
    columns: tuple[str, ...]
    rarity: pl.DataFrame | None


def _caption_batch(
    frame: pl.DataFrame,
    jobs: list[_Ready],
    implied: pl.DataFrame | None,
    captioning: Captioning,
) -> list[pl.DataFrame]:
    """Each job's captions of one batch of rows; jobs whose texts and pruning agree share
    the rows as prepared, and jobs whose pruning agrees what they share beyond, their NL
    texts aside (:func:`_tag_lists`, the rankings of a budget). Jobs with
    people-count tags first come last, to reorder what the others made. The rows are made
    one chunk per column first: polars joins the chunks of every column again each time an
    expression runs on a frame whose new column has fewer (the captions' columns have one)."""
    frame = frame.rechunk()
    prepared: Memo = {}
    memos: dict[int, Memo] = {}
    out: dict[int, pl.DataFrame] = {}
    for i in sorted(range(len(jobs)), key=lambda i: jobs[i].spec.people_first):
        job = jobs[i]
        prune = implied if job.spec.prune_implied else None
        key = (id(prune), id(job.nl))
        rows = _shared(prepared, key, lambda: _with_texts(frame, job.nl, prune))  # noqa: B023
        captioned = _caption_sites(rows, job, captioning, memos.setdefault(id(prune), {}))
        out[i] = captioned.select(job.columns) if job.columns else captioned
    return [out[i] for i in range(len(jobs))]


def _with_texts(
    frame: pl.DataFrame, nl: NLTexts | None, implied: pl.DataFrame | None
) -> pl.DataFrame:
    """The rows with implied tags pruned (when ``implied``) and ``caption_nl``."""
    if implied is not None:
        frame = prune_implied(frame, implied)
    if nl is not None:
        return frame.with_columns(nl.of(frame["id"]))
    return frame.with_columns(caption_nl=NO_TEXTS)


def _caption_sites(
    frame: pl.DataFrame, job: _Ready, captioning: Captioning, memo: Memo
) -> pl.DataFrame:
    sites = frame["site"].unique(maintain_order=True).to_list() if len(frame) else ["danbooru"]
    context = (job, captioning)
    if len(sites) == 1:
        return _caption_site(frame, sites[0], *context, memo.setdefault(sites[0], {}))
    frame = frame.with_row_index("_order")
    parts = [_caption_site(frame.filter(pl.col("site").eq_missing(site)), site, *context,
                           memo.setdefault(site, {}))
             for site in sites]  # fmt: skip
    return pl.concat(parts).sort("_order").drop("_order")


def _caption_site(
    frame: pl.DataFrame,
    site: str,
    job: _Ready,
    captioning: Captioning,
    memo: Memo,
) -> pl.DataFrame:
    spec, rules, rarity = job.spec, job.rules, job.rarity
    lists = _tag_lists(frame, spec, site, rules, job.thresholds, memo)
    whole = lists["whole"]
    if spec.max_tokens:
        how = (spec.token_priority, id(rarity))  # the NL texts' share is added to it
        make = partial(rank_lists, lists, rules, spec.token_priority, rarity, None, captioning)
        key = _lists_key(spec, job.thresholds)
        ranked = _shared(memo, ("ranked", key, how), lambda: _ranked(memo, key, how, lists, make))
        if spec.merge_mode == "tags+nl":  # the texts' tokens shared by jobs of the same texts
            nl = _shared(memo, ("nl tokens", id(job.nl)), lambda: _nl_tokens(frame, captioning))
            ranked = ranked.with_text(nl)
        return fit_budget(frame, ranked, spec, rarity, captioning)
    if spec.merge_mode == "tags+nl" and not spec.keep_tokens_separator and not nl_in_head(spec):
        # the NL text joins the tags in the same buffer: one copy of every caption
        tags, caption = whole.joined(rules, after=frame["caption_nl"].list.join(" "))
        return frame.with_columns(caption_tags=tags, caption=caption)
    split = None
    if "head" in lists:
        split = np.minimum(lists["head"].lengths(), whole.lengths())
    texts = dict(zip(("_fixed", "_rest"), whole.joined(rules, split), strict=False))
    return render(frame.with_columns(**texts), spec).drop(texts)


def _nl_tokens(frame: pl.DataFrame, captioning: Captioning) -> WordCounts:
    """Each row's NL text, with its words' CLIP tokens."""
    return captioning.word_counts(frame["caption_nl"].list.join(" "))


def _ranked(
    memo: Memo, key: Hashable, how: Hashable, lists: dict[str, Lists], make: Callable[[], Ranked]
) -> Ranked:
    """``lists`` (of lists key ``key``) ranked (``how``: priority and rarity): when
    they are lists made before with people-count tags moved first
    (:func:`_people_moved_first`) and those were ranked alike, that ranking reordered;
    else ``make()``."""
    moved = memo.get(("moved", key))
    if moved is None:
        return make()
    in_place, order = moved
    ranked: Ranked | None = memo.get(("ranked", in_place, how))
    return make() if ranked is None else ranked.reordered(lists, order)


def caption_rarity(vocabulary: pl.DataFrame, spec: CaptionSpec) -> pl.DataFrame:
    """``tag`` as captions write it, and on how many ``posts`` of the dataset it is: the
    priority of a token budget (``vocabulary``: ``tag``, ``posts``, as the dataset has it)."""
    return (
        vocabulary.select(rewrite(spec, pl.col("tag")).alias("tag"), "posts")
        .group_by("tag")
        .agg(pl.col("posts").sum())
    )
