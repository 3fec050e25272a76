"""Captions for a whole frame of posts at once, as polars expressions (no loop per post).

Input: canonical metadata columns (``id``, ``site``, ``rating``, ``tags_<category>`` lists,
``score``, ``created_at``). Output columns: ``caption`` (the text a trainer reads),
``caption_tags`` (the tag part) and ``caption_nl`` (the natural-language texts, a list).

Per tag: alias, then drop (blacklist and meta filter, matched on the raw tag), then rewrite
(underscores to spaces, parentheses escaped). Per post: people-count tags first when asked,
categories in order (the fixed head before ``keep_tokens_separator``), extra tags (rating,
quality, date) at the end or the front, duplicates removed, at most ``max_tags``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import polars as pl

from e6ingest.captions.budget import fit_budget
from e6ingest.captions.implications import prune_implied
from e6ingest.captions.render import render
from e6ingest.captions.spec import CaptionSpec

EMPTY = pl.lit([], pl.List(pl.String))
# Tags giving the number of people: 1girl, 2boys, 6+others, solo, duo, multiple_girls...
PEOPLE_PATTERN = (
    r"^(?:\d+\+?(?:girl|boy|other)s?|solo|duo|trio|group|multiple_(?:girls|boys|others)"
    r"|no_humans|zero_pictured)$"
)
# Tags kept as they are by the underscore rewrite: short ones and those without letters
# (emoticons such as ^_^, >_<, o_o, :3, ^_^;).
EMOTICON_MAX_LEN = 3
BATCH_ROWS = 50_000


def glob_regex(patterns: tuple[str, ...]) -> str:
    """One anchored regex matching any of the glob ``patterns`` (``*`` and ``?``)."""
    parts = []
    for pattern in patterns:
        escaped = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
        parts.append(f"^{escaped}$")
    return "|".join(parts)


def _rewrite(spec: CaptionSpec) -> pl.Expr:
    tag = pl.element()
    if spec.underscores_to_spaces:
        keep = (tag.str.len_chars() <= EMOTICON_MAX_LEN) | ~tag.str.contains("[A-Za-z]")
        tag = pl.when(keep).then(tag).otherwise(tag.str.replace_all("_", " ", literal=True))
    if spec.escape_parentheses:
        tag = tag.str.replace_all("(", r"\(", literal=True).str.replace_all(
            ")", r"\)", literal=True
        )
    return tag


def _clean(tags: pl.Expr | None, aliases: Mapping[str, str], drop: tuple[str, ...]):
    """Aliases applied, then tags matching ``drop`` (names or globs) removed."""
    if tags is None:
        return None
    tag = pl.element()
    if aliases:
        tags = tags.list.eval(tag.replace(dict(aliases)))
    names = [p for p in drop if "*" not in p and "?" not in p]
    globs = tuple(p for p in drop if p not in names)
    keep = None
    if names:  # a hash lookup per tag, far cheaper than a regex
        keep = ~tag.is_in(names)
    if globs:
        matches = ~tag.str.contains(glob_regex(globs))
        keep = matches if keep is None else keep & matches
    return tags if keep is None else tags.list.eval(tag.filter(keep))


def _category_lists(categories: tuple[str, ...], names: set[str]) -> list[pl.Expr]:
    return [pl.col(f"tags_{c}").fill_null(EMPTY) for c in categories if f"tags_{c}" in names]


def _concat(lists: list[pl.Expr | None]) -> pl.Expr | None:
    """The lists one after the other per row; ``None`` (no list at all) when there are none:
    empty parts are left out rather than concatenated, which would copy every tag again."""
    lists = [item for item in lists if item is not None]
    if not lists:
        return None
    return lists[0] if len(lists) == 1 else pl.concat_list(lists)


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


def _tag_lists(spec: CaptionSpec, site: str, names: set[str], aliases, thresholds):
    """The caption's lists, as expressions: ``_head`` (the part fixed before the
    keep-tokens separator), ``_whole`` (every tag, in order), ``_keep`` (what a token budget
    keeps first: people-count tags, artist/character/copyright, the extra tags asked for)
    and ``_meta`` (meta tags, which a budget drops first)."""
    categories = spec.categories(site)
    split = bool(spec.keep_tokens_separator)
    fixed = tuple(c for c in categories if c in spec.fixed_categories) if split else categories
    rest = tuple(c for c in categories if c not in fixed)
    drop = spec.blacklist + spec.meta_filter
    head = _clean(_concat(_category_lists(fixed, names)), aliases, drop)
    tail = _clean(_concat(_category_lists(rest, names)), aliases, drop)
    front: list[pl.Expr | None] = []
    is_people = pl.element().str.contains(PEOPLE_PATTERN)
    everything = _concat([head, tail])
    if spec.people_first and everything is not None:
        front.append(everything.list.eval(pl.element().filter(is_people)))
        head, tail = (None if t is None else t.list.eval(pl.element().filter(~is_people))
                      for t in (head, tail))  # fmt: skip
    rewrite = _rewrite(spec)
    head_parts = [None if t is None else t.list.eval(rewrite) for t in (*front, head)]
    tail_parts = [None if tail is None else tail.list.eval(rewrite)]
    extras = _extras(spec, site, thresholds)
    if spec.extras_first:
        head_parts.insert(len(front), extras)
    else:
        tail_parts.append(extras)
    whole = _concat(head_parts + tail_parts)
    whole = EMPTY if whole is None else whole
    if spec.dedupe:
        whole = whole.list.unique(maintain_order=True)
    if spec.max_tags:
        whole = whole.list.head(spec.max_tags)
    lists = {"_whole": whole}
    if spec.keep_tokens_separator:  # only the separator's placement reads the head
        head_list = _concat(head_parts)
        head_list = EMPTY if head_list is None else head_list
        lists["_head"] = head_list.list.unique(maintain_order=True) if spec.dedupe else head_list
    if spec.max_tokens:
        named = [c for c in categories if c in spec.fixed_categories]
        kept = _clean(_concat(_category_lists(tuple(named), names)), aliases, drop)
        people = None if everything is None else everything.list.eval(
            pl.element().filter(is_people)
        )  # fmt: skip
        keep = _concat([None if t is None else t.list.eval(rewrite) for t in (people, kept)]
                       + [extras])  # fmt: skip
        lists["_keep"] = EMPTY if keep is None else keep
        meta = _clean(_concat(_category_lists(("meta",) if "meta" in categories else (), names)),
                      aliases, drop)  # fmt: skip
        lists["_meta"] = EMPTY if meta is None else meta.list.eval(rewrite)
    return lists


def build_captions(
    frame: pl.DataFrame,
    spec: CaptionSpec,
    nl: pl.DataFrame | None = None,
    thresholds: Mapping[str, list] | None = None,
    aliases: Mapping[str, str] | None = None,
    batch_rows: int = BATCH_ROWS,
    rarity: pl.DataFrame | None = None,
    implied: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """``frame`` with ``caption``, ``caption_tags`` and ``caption_nl`` added, in order.

    ``nl``: ``id`` and ``nl`` (list of texts), from :func:`read_nl_captions`.
    ``thresholds``: from :func:`score_thresholds` over the whole selection (computed from
    ``frame`` itself when quality tags are asked for and none are given).
    ``aliases``: old -> new tag names, from :func:`read_aliases`.
    ``rarity``: ``tag`` (as in captions), ``posts``, for a token budget's priority.
    ``implied``: ``antecedent``, ``implied`` pairs (closed), for ``prune_implied``.
    Rows are captioned ``batch_rows`` at a time, bounding the intermediate lists in memory.
    """
    if frame.schema.get("created_at") == pl.Null:  # a frame whose dates are all missing
        frame = frame.with_columns(pl.col("created_at").cast(pl.Datetime("us", "UTC")))
    if spec.quality_tag and thresholds is None:
        thresholds = score_thresholds(frame, spec)
    nl = nl.rename({"nl": "caption_nl"}) if nl is not None else None
    names = set(frame.columns)
    sites = frame["site"].unique(maintain_order=True).to_list() if len(frame) else ["danbooru"]
    lists = {site: _tag_lists(spec, site, names, aliases or {}, thresholds or {})
             for site in sites}  # fmt: skip
    context = (spec, lists, nl, rarity, implied if spec.prune_implied else None)
    batches = [
        _caption_batch(frame.slice(start, batch_rows), *context)
        for start in range(0, max(len(frame), 1), batch_rows)
    ]
    return pl.concat(batches) if len(batches) > 1 else batches[0]


def _caption_batch(frame, spec, lists, nl, rarity, implied) -> pl.DataFrame:
    if implied is not None:
        frame = prune_implied(frame, implied)
    if nl is not None:
        frame = frame.join(nl, on="id", how="left", maintain_order="left")
        frame = frame.with_columns(pl.col("caption_nl").fill_null(EMPTY))
    else:
        frame = frame.with_columns(caption_nl=EMPTY)
    if len(lists) == 1:
        frame = frame.with_columns(**next(iter(lists.values())))
    else:
        frame = frame.with_row_index("_order")
        parts = [frame.filter(pl.col("site") == site).with_columns(**exprs)
                 for site, exprs in lists.items()]  # fmt: skip
        frame = pl.concat(parts).sort("_order").drop("_order")
    frame = fit_budget(frame, spec, rarity) if spec.max_tokens else render(frame, spec)
    return frame.drop(c for c in ("_head", "_whole", "_keep", "_meta") if c in frame.columns)


def caption_rarity(vocabulary: pl.DataFrame, spec: CaptionSpec) -> pl.DataFrame:
    """``tag`` as captions write it, and on how many ``posts`` of the dataset it is: the
    priority of a token budget (``vocabulary``: ``tag``, ``posts``, as the dataset has it)."""
    rewritten = pl.concat_list("tag").list.eval(_rewrite(spec)).list.first().alias("tag")
    return vocabulary.select(rewritten, "posts").group_by("tag").agg(pl.col("posts").sum())
