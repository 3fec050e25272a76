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

import math
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

import numpy as np
import polars as pl
import pyarrow as pa

from e6ingest.captions.budget import fit_budget, rank_lists
from e6ingest.captions.codes import Lists, Part, TagBatch, TagRules, extra_part, rewrite
from e6ingest.captions.files import NO_TEXTS, NLTexts
from e6ingest.captions.implications import prune_implied
from e6ingest.captions.render import nl_in_head, render
from e6ingest.captions.session import Captioning
from e6ingest.captions.spec import CaptionSpec

BATCH_ROWS = 25_000

# Per rating, the score each quality tier starts at (None: the rating has no scores).
Thresholds = Mapping[str, list[float | None]]
# What captions of one batch made, by what it depends on (see :func:`_shared`).
Memo = dict[Any, Any]
T = TypeVar("T")


def score_counts(frame: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
    """How many posts of each ``rating`` have each ``score`` (as floats), in score order."""
    return (
        frame.lazy()
        .group_by("rating", pl.col("score").cast(pl.Float64))
        .len()
        .sort("rating", "score", nulls_last=True)
        .collect()
    )


def score_thresholds(
    frame: pl.LazyFrame | pl.DataFrame, spec: CaptionSpec, counts: pl.DataFrame | None = None
) -> dict[str, list[float | None]]:
    """Per rating, the score each quality tier starts at: the tier's percentile of the
    rating's scores in ``frame`` (nulls left out; polars' ``quantile(p, "higher")``, the
    ``ceil(p * (n - 1))``-th smallest), found in ``counts`` (:func:`score_counts` of
    ``frame``, counted here when not given) instead of sorting every score."""
    if not spec.quality_tag:
        return {}
    counts = score_counts(frame) if counts is None else counts
    starts: dict[str, list[float | None]] = {}
    for (rating,), scores in counts.partition_by("rating", as_dict=True).items():
        scores = scores.drop_nulls("score")  # a rating whose scores are all null: no tiers
        ends = scores["len"].cum_sum().to_numpy()
        at = [math.ceil(p * (ends[-1] - 1)) if len(ends) else None for _, p in spec.tier_pairs]
        starts[rating] = [
            None if i is None else scores["score"][int(np.searchsorted(ends, i, "right"))]
            for i in at
        ]
    return starts


def _quality_tag(spec: CaptionSpec, thresholds: Thresholds) -> pl.Expr:
    tier = pl.lit(None, pl.String)
    for i, (name, _) in reversed(list(enumerate(spec.tier_pairs))):
        start = pl.col("rating").replace_strict(
            {r: t[i] for r, t in thresholds.items()}, default=None, return_dtype=pl.Float64
        )
        tier = pl.when(pl.col("score") >= start).then(pl.lit(name)).otherwise(tier)
    return tier


def _date_tag(spec: CaptionSpec) -> pl.Expr:
    year = pl.col("created_at").dt.year()
    if spec.date_tag == "year":
        return pl.lit("year ") + year.cast(pl.String)
    tag = pl.lit(None, pl.String)
    for name, first_year in spec.period_pairs:
        tag = pl.when(year >= first_year).then(pl.lit(name)).otherwise(tag)
    return tag


def _extras(spec: CaptionSpec, site: str, thresholds: Thresholds) -> pl.Expr | None:
    extras = []
    if spec.rating_tag:
        names = spec.ratings(site)
        extras.append(pl.col("rating").replace_strict(names, default=None, return_dtype=pl.String))
    if spec.quality_tag:
        extras.append(_quality_tag(spec, thresholds))
    if spec.date_tag != "none":
        extras.append(_date_tag(spec))
    return pl.concat_list(extras).list.drop_nulls() if extras else None


# Options a caption's tag lists do not depend on (the budget, the NL texts, the variants):
# captions of one batch whose specs differ only in these share their lists.
_NOT_IN_LISTS = ("max_tokens", "merge", "nl_position", "nl_captions", "nl_fields", "nl_finished",
                 "token_priority", "variants", "variant_lines", "aliases", "implications",
                 "prune_implied")  # fmt: skip
_NEUTRAL: dict[str, Any] = {
    name: CaptionSpec.__dataclass_fields__[name].default for name in _NOT_IN_LISTS
}


def _lists_key(spec: CaptionSpec, thresholds: Thresholds) -> tuple[CaptionSpec, tuple[Any, ...]]:
    """What a caption's tag lists depend on: two specs with the same key have the same."""
    quality = sorted((k, tuple(v)) for k, v in thresholds.items()) if spec.quality_tag else []
    return replace(spec, **_NEUTRAL), tuple(quality)


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
    lists = _shared(memo, ("lists", key), parts.caption_lists)
    if not spec.max_tokens:
        return lists
    return _shared(memo, ("budget lists", key), lambda: {**lists, **parts.budget_lists()})


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
        extras = _extras(spec, site, thresholds)
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
    ``nl``: a list of texts, from :func:`read_nl_captions`) and quality ``thresholds`` (from
    :func:`score_thresholds`; over the frame itself when the spec asks for quality tags and
    none are given); ``columns``: the columns of the result kept (all when empty)."""

    spec: CaptionSpec
    nl: pl.DataFrame | None = None
    thresholds: Thresholds | None = None
    columns: tuple[str, ...] = ()


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

    ``nl``, ``thresholds``: as :class:`CaptionJob` takes them.
    ``aliases``: old -> new tag names, from :func:`read_aliases`.
    ``rarity``: ``tag`` (as in captions), ``posts``, for a token budget's priority.
    ``implied``: ``antecedent``, ``implied`` pairs (closed), for ``prune_implied``.
    ``captioning``: the caches and threads kept across calls (a plan's batches share one);
    without it, this call's own. Rows are captioned ``batch_rows`` at a time, bounding the
    intermediate lists in memory, as many batches at once as it has threads (the heavy steps
    release the GIL).
    """
    job = CaptionJob(spec, nl, thresholds)
    return build_many(frame, [job], aliases, batch_rows, rarity, implied, captioning)[0]


def build_many(
    frame: pl.DataFrame,
    jobs: list[CaptionJob],
    aliases: Mapping[str, str] | None = None,
    batch_rows: int = BATCH_ROWS,
    rarity: pl.DataFrame | None = None,
    implied: pl.DataFrame | None = None,
    captioning: Captioning | None = None,
) -> list[pl.DataFrame]:
    """Each job's captions of ``frame``, as :func:`build_captions` builds them, made
    together a batch of rows at a time: what the jobs' specs agree on (the tags numbered,
    the tag lists, a budget's ranking of the tags) is made once per batch."""
    if captioning is None:
        with Captioning() as own:
            return build_many(frame, jobs, aliases, batch_rows, rarity, implied, own)
    if frame.schema.get("created_at") == pl.Null:  # a frame whose dates are all missing
        frame = frame.with_columns(pl.col("created_at").cast(pl.Datetime("us", "UTC")))
    texts: dict[int, NLTexts] = {}  # one lookup table per NL frame
    ready = [_ready(frame, job, captioning.rules(job.spec, aliases or {}), texts) for job in jobs]
    context = (ready, rarity, implied, captioning)
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
    return _Ready(job.spec, rules, nl, thresholds, job.columns)


@dataclass(frozen=True)
class _Ready:
    """A job with its tag rules and NL lookup table."""

    spec: CaptionSpec
    rules: TagRules
    nl: NLTexts | None
    thresholds: Thresholds
    columns: tuple[str, ...]


def _caption_batch(
    frame: pl.DataFrame,
    jobs: list[_Ready],
    rarity: pl.DataFrame | None,
    implied: pl.DataFrame | None,
    captioning: Captioning,
) -> list[pl.DataFrame]:
    """Each job's captions of one batch of rows; jobs whose texts and pruning agree share
    the rows as prepared, and what they share beyond (:func:`_tag_lists`)."""
    prepared: Memo = {}
    memos: dict[tuple[int, int], Memo] = {}
    out = []
    for job in jobs:
        prune = implied if job.spec.prune_implied else None
        key = (id(prune), id(job.nl))
        rows = _shared(prepared, key, lambda: _with_texts(frame, job.nl, prune))  # noqa: B023
        captioned = _caption_sites(rows, job, rarity, captioning, memos.setdefault(key, {}))
        out.append(captioned.select(job.columns) if job.columns else captioned)
    return out


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
    frame: pl.DataFrame,
    job: _Ready,
    rarity: pl.DataFrame | None,
    captioning: Captioning,
    memo: Memo,
) -> pl.DataFrame:
    sites = frame["site"].unique(maintain_order=True).to_list() if len(frame) else ["danbooru"]
    context = (job, rarity, captioning)
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
    rarity: pl.DataFrame | None,
    captioning: Captioning,
    memo: Memo,
) -> pl.DataFrame:
    spec, rules = job.spec, job.rules
    lists = _tag_lists(frame, spec, site, rules, job.thresholds, memo)
    whole = lists["whole"]
    if spec.max_tokens:
        with_nl = spec.merge_mode == "tags+nl"
        key = ("ranked", _lists_key(spec, job.thresholds), with_nl, spec.token_priority)
        nl = frame["caption_nl"].list.join(" ") if with_nl else None
        ranked = _shared(memo, key, lambda: rank_lists(lists, rules, spec.token_priority,
                                                       rarity, nl, captioning))  # fmt: skip
        return fit_budget(frame, ranked, spec, rarity)
    if spec.merge_mode == "tags+nl" and not spec.keep_tokens_separator and not nl_in_head(spec):
        # the NL text joins the tags in the same buffer: one copy of every caption
        tags, caption = whole.joined(rules, after=frame["caption_nl"].list.join(" "))
        return frame.with_columns(caption_tags=tags, caption=caption)
    split = None
    if "head" in lists:
        split = np.minimum(lists["head"].lengths(), whole.lengths())
    texts = dict(zip(("_fixed", "_rest"), whole.joined(rules, split), strict=False))
    return render(frame.with_columns(**texts), spec).drop(texts)


def caption_rarity(vocabulary: pl.DataFrame, spec: CaptionSpec) -> pl.DataFrame:
    """``tag`` as captions write it, and on how many ``posts`` of the dataset it is: the
    priority of a token budget (``vocabulary``: ``tag``, ``posts``, as the dataset has it)."""
    return (
        vocabulary.select(rewrite(spec, pl.col("tag")).alias("tag"), "posts")
        .group_by("tag")
        .agg(pl.col("posts").sum())
    )
