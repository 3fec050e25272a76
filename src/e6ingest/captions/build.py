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

from collections.abc import Mapping

import numpy as np
import polars as pl
import pyarrow as pa

from e6ingest.captions.budget import fit_budget
from e6ingest.captions.codes import Lists, TagBatch, TagRules, extra_part, rewrite
from e6ingest.captions.implications import prune_implied
from e6ingest.captions.render import nl_in_head, render
from e6ingest.captions.session import Captioning
from e6ingest.captions.spec import CaptionSpec

EMPTY = pl.lit([], pl.List(pl.String))
BATCH_ROWS = 25_000


def score_thresholds(frame: pl.LazyFrame | pl.DataFrame, spec: CaptionSpec) -> dict:
    """Per rating, the score each quality tier starts at: percentiles over ``frame``."""
    if not spec.quality_tag:
        return {}
    table = (
        frame.lazy()
        .group_by("rating")
        .agg(
            pl.col("score").quantile(p, "higher").alias(str(i))
            for i, (_, p) in enumerate(spec.quality_tiers)
        )
        .collect()
    )
    return {
        row["rating"]: [row[str(i)] for i in range(len(spec.quality_tiers))]
        for row in table.to_dicts()
    }


def _quality_tag(spec: CaptionSpec, thresholds: Mapping[str, list]) -> pl.Expr:
    tier = pl.lit(None, pl.String)
    for i, (name, _) in reversed(list(enumerate(spec.quality_tiers))):
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
    for name, first_year in spec.periods:
        tag = pl.when(year >= first_year).then(pl.lit(name)).otherwise(tag)
    return tag


def _extras(spec: CaptionSpec, site: str, thresholds: Mapping[str, list]) -> pl.Expr:
    extras = []
    if spec.rating_tag:
        names = spec.ratings(site)
        extras.append(pl.col("rating").replace_strict(names, default=None, return_dtype=pl.String))
    if spec.quality_tag:
        extras.append(_quality_tag(spec, thresholds))
    if spec.date_tag != "none":
        extras.append(_date_tag(spec))
    return pl.concat_list(extras).list.drop_nulls() if extras else None


def _tag_lists(frame: pl.DataFrame, spec: CaptionSpec, site: str, rules: TagRules,
               thresholds: Mapping[str, list]) -> dict[str, Lists]:  # fmt: skip
    """The caption's tags, per row, as written numbers: ``whole`` (every tag, in caption
    order, deduplicated, at most ``max_tags``) and, as the spec needs them, ``head`` (the
    part fixed before the keep-tokens separator), ``keep`` (what a token budget keeps
    first: people-count tags, artist/character/copyright, the extra tags asked for) and
    ``meta`` (meta tags, which a budget drops first)."""
    categories = spec.categories(site)
    split = bool(spec.keep_tokens_separator)
    fixed = tuple(c for c in categories if c in spec.fixed_categories) if split else categories
    ordered = fixed + tuple(c for c in categories if c not in fixed)
    batch = TagBatch(frame, ordered, rules)
    extras = _extras(spec, site, thresholds)
    extra = None if extras is None else extra_part(frame.select(extras).to_series(), rules)
    people = []  # people-count tags of every category, when first or for a budget
    if spec.people_first or spec.max_tokens:
        people = [batch.part(c, people=True) for c in ordered]
    placed = False if spec.people_first else None  # people-count tags in place, or first
    head = (people if spec.people_first else []) + ([extra] if spec.extras_first else [])
    head += [batch.part(c, placed) for c in fixed]
    tail = [batch.part(c, placed) for c in ordered[len(fixed) :]]
    tail += [] if spec.extras_first else [extra]
    lists = {"whole": batch.lists(head + tail).deduplicated(spec.max_tags, spec.dedupe)}
    if split:
        lists["head"] = batch.lists(head).deduplicated(0, spec.dedupe)
    if spec.max_tokens:
        heads = (*spec.fixed_categories, *spec.subject_categories)
        named = [batch.part(c) for c in categories if c in heads]
        subjects = [batch.part(c, subject=True) for c in ordered]
        lists["keep"] = batch.lists(people + named + subjects + [extra])
        lists["meta"] = batch.lists([batch.part("meta")] if "meta" in categories else [])
    return lists


class NLTexts:
    """Natural-language texts by post id, looked up by binary search (a batch's posts in a
    table of millions, without hashing the table again for every batch)."""

    def __init__(self, nl: pl.DataFrame):
        if nl["id"].null_count():
            nl = nl.drop_nulls("id")
        if not nl["id"].is_sorted():
            nl = nl.sort("id", maintain_order=True)
        ids = nl["id"].to_numpy()
        last = np.append(ids[1:] != ids[:-1], True)  # a later row wins for a repeated id
        if not last.all():
            nl, ids = nl.filter(pl.Series(last)), ids[last]
        self.ids, self.texts = ids, nl["nl"].alias("caption_nl")

    def of(self, ids: pl.Series) -> pl.Series:
        """The texts of each of ``ids``, in order (an empty list for a post without)."""
        keys = ids.fill_null(-1).to_numpy()
        if not len(self.ids):
            return pl.Series("caption_nl", [[]] * len(ids), pl.List(pl.String))
        at = np.minimum(np.searchsorted(self.ids, keys), len(self.ids) - 1)
        found = pl.Series(self.ids[at] == keys)
        gathered = self.texts.gather(at)
        return pl.select(pl.when(found).then(gathered).otherwise(EMPTY).alias("caption_nl"))[
            "caption_nl"
        ]


def build_captions(
    frame: pl.DataFrame,
    spec: CaptionSpec,
    nl: pl.DataFrame | None = None,
    thresholds: Mapping[str, list] | None = None,
    aliases: Mapping[str, str] | None = None,
    batch_rows: int = BATCH_ROWS,
    rarity: pl.DataFrame | None = None,
    implied: pl.DataFrame | None = None,
    captioning: Captioning | None = None,
) -> pl.DataFrame:
    """``frame`` with ``caption``, ``caption_tags`` and ``caption_nl`` added, in order.

    ``nl``: ``id`` and ``nl`` (list of texts), from :func:`read_nl_captions`.
    ``thresholds``: from :func:`score_thresholds` over the whole selection (computed from
    ``frame`` itself when quality tags are asked for and none are given).
    ``aliases``: old -> new tag names, from :func:`read_aliases`.
    ``rarity``: ``tag`` (as in captions), ``posts``, for a token budget's priority.
    ``implied``: ``antecedent``, ``implied`` pairs (closed), for ``prune_implied``.
    ``captioning``: the caches and threads kept across calls (a plan's batches share one);
    without it, this call's own. Rows are captioned ``batch_rows`` at a time, bounding the
    intermediate lists in memory, as many batches at once as it has threads (the heavy steps
    release the GIL).
    """
    if captioning is None:
        with Captioning() as own:
            return build_captions(frame, spec, nl, thresholds, aliases, batch_rows, rarity,
                                  implied, own)  # fmt: skip
    if frame.schema.get("created_at") == pl.Null:  # a frame whose dates are all missing
        frame = frame.with_columns(pl.col("created_at").cast(pl.Datetime("us", "UTC")))
    if spec.quality_tag and thresholds is None:
        thresholds = score_thresholds(frame, spec)
    nl = NLTexts(nl) if nl is not None else None
    rules = captioning.rules(spec, aliases or {})
    context = (spec, rules, nl, rarity, implied if spec.prune_implied else None, thresholds or {},
               captioning)  # fmt: skip
    starts = list(range(0, max(len(frame), 1), batch_rows))
    batches = captioning.map(lambda s: _caption_batch(frame.slice(s, batch_rows), *context),
                             starts)  # fmt: skip
    for pool in (pa.default_memory_pool(), pa.system_memory_pool()):
        pool.release_unused()  # what the batches' arrow arrays left behind
    return pl.concat(batches) if len(batches) > 1 else batches[0]


def _caption_batch(frame, spec, rules, nl, rarity, implied, thresholds, captioning):
    if implied is not None:
        frame = prune_implied(frame, implied)
    if nl is not None:
        frame = frame.with_columns(nl.of(frame["id"]))
    else:
        frame = frame.with_columns(caption_nl=EMPTY)
    sites = frame["site"].unique(maintain_order=True).to_list() if len(frame) else ["danbooru"]
    context = (rules, rarity, thresholds, captioning)
    if len(sites) == 1:
        return _caption_site(frame, spec, sites[0], *context)
    frame = frame.with_row_index("_order")
    parts = [_caption_site(frame.filter(pl.col("site").eq_missing(site)), spec, site, *context)
             for site in sites]  # fmt: skip
    return pl.concat(parts).sort("_order").drop("_order")


def _caption_site(frame, spec, site, rules, rarity, thresholds, captioning) -> pl.DataFrame:
    lists = _tag_lists(frame, spec, site, rules, thresholds)
    whole = lists["whole"]
    if spec.max_tokens:
        return fit_budget(frame, lists, spec, rules, rarity, captioning)
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
