"""A CLIP-token budget: every caption fits ``max_tokens`` as SD/SDXL trainers count them.

When a caption is over budget, tags are dropped by priority, never cut at the tail:

1. the head is kept first, in caption order: the people-count tags, the categories before a
   keep-tokens separator (artist, character, copyright by default; with no separator, the
   artist, character and copyright tags), and the rating/quality/year tags asked for;
2. then, with ``tags+nl``, the natural-language text (cut at a word boundary to what is
   left of the budget);
3. then the other tags by ``token_priority``: ``rare`` (the tags on fewest posts of the
   dataset first: the most specific), ``common``, or ``order`` (caption order);
4. meta tags last.

Tags keep their caption order; only which of them stay depends on the priority. Token
costs are counted once per distinct tag; every fitted caption is then counted whole, and
the rare caption still over (punctuation running into a separator) loses its last tags
until it fits.
"""

from __future__ import annotations

import polars as pl

from e6ingest.captions.tokens import clip_tokenizer, count_tokens

CLASS_HEAD, CLASS_NL, CLASS_TAG, CLASS_META = 0, 1, 2, 3


def _costs(tags: pl.Series) -> pl.DataFrame:
    distinct = tags.unique().drop_nulls()
    return pl.DataFrame(
        {"tag": distinct, "_cost": pl.Series(count_tokens(distinct.to_list()), dtype=pl.Int64)}
    )


def cut_to_tokens(texts: list[str], limits: list[int]) -> list[str]:
    """Each text cut at the last word boundary within its ``limit`` of CLIP tokens."""
    encodings = clip_tokenizer().encode_batch(texts, add_special_tokens=False) if texts else []
    out = []
    for text, limit, encoding in zip(texts, limits, encodings, strict=True):
        if len(encoding.ids) <= limit:
            out.append(text if limit > 0 else "")
            continue
        end = encoding.offsets[max(limit, 0)][0]  # where the first token too many starts
        head = text[:end]
        cut = head.rsplit(" ", 1)[0] if " " in head.strip() else ""
        out.append(cut.rstrip(" ,;:") if limit > 0 else "")
    return out


def _as_lists(texts: list[str]) -> pl.Series:
    return pl.Series([[t] if t else [] for t in texts], dtype=pl.List(pl.String))


def fit_lists(
    frame: pl.DataFrame, budget: int, separator: str, priority: str,
    rarity: pl.DataFrame | None, nl: pl.Series | None,
) -> tuple[pl.Series, pl.Series | None]:  # fmt: skip
    """The tag lists (``_whole``) fitted to ``budget`` tokens with their separators, and the
    natural-language texts (``nl``, one per row, joined) cut to what the head leaves.

    ``frame`` holds ``_whole`` (the caption's tags, in order), ``_keep`` (tags of the
    head) and ``_meta`` (meta tags) per row; ``rarity``: ``tag``, ``posts``."""
    sep_cost = count_tokens([separator.strip() or separator])[0] if separator.strip() else 0
    rows = frame.select("_whole", "_keep", "_meta").with_row_index("_row")
    long = rows.select("_row", pl.col("_whole").alias("tag")).explode("tag").drop_nulls("tag")
    long = long.with_row_index("_pos")
    flags = [
        rows.select("_row", pl.col(c).alias("tag")).explode("tag").drop_nulls().unique()
        .with_columns(pl.lit(True).alias(flag))
        for c, flag in (("_keep", "_is_keep"), ("_meta", "_is_meta"))
    ]  # fmt: skip
    for table in flags:
        long = long.join(table, on=["_row", "tag"], how="left")
    long = long.join(_costs(long["tag"]), on="tag", how="left").with_columns(
        (pl.col("_cost") + sep_cost).alias("_cost"),
        pl.when(pl.col("_is_keep")).then(CLASS_HEAD)
        .when(pl.col("_is_meta")).then(CLASS_META).otherwise(CLASS_TAG).alias("_class"),
    )  # fmt: skip
    if rarity is not None and priority != "order":
        long = long.join(rarity.rename({"posts": "_posts"}), on="tag", how="left")
        key = pl.col("_posts").fill_null(0) * (1 if priority == "rare" else -1)
    else:
        key = pl.col("_pos")
    items = long.select("_row", "_pos", "_cost", "_class", key.alias("_key"))
    if nl is not None:  # the NL text is one item, right after the head
        nl_cost = count_tokens(nl.to_list())
        items = pl.concat([items, pl.DataFrame({
            "_row": pl.int_range(len(nl), eager=True, dtype=pl.UInt32), "_pos": -1,
            "_cost": pl.Series(nl_cost, dtype=pl.Int64) + sep_cost, "_class": CLASS_NL,
            "_key": 0,
        }).filter(pl.col("_cost") > sep_cost)], how="vertical_relaxed")  # fmt: skip
    ranked = items.sort("_row", "_class", "_key", "_pos").with_columns(
        pl.col("_cost").cum_sum().over("_row").alias("_spent")
    )
    limit = budget + sep_cost  # the first item has no separator before it
    kept_tags = ranked.filter((pl.col("_class") != CLASS_NL) & (pl.col("_spent") <= limit))
    whole = (
        long.join(kept_tags.select("_row", "_pos"), on=["_row", "_pos"], how="semi")
        .sort("_pos")
        .group_by("_row", maintain_order=True)
        .agg(pl.col("tag").alias("_whole"))
    )
    fitted = rows.select("_row").join(whole, on="_row", how="left", maintain_order="left")
    fitted_lists = fitted["_whole"].fill_null([])
    if nl is None:
        return fitted_lists, None
    before = ranked.with_columns((pl.col("_spent") - pl.col("_cost")).alias("_before"))
    left = before.filter(pl.col("_class") == CLASS_NL).select(
        "_row", (limit - pl.col("_before") - sep_cost).alias("_left")
    )  # fmt: skip
    room = rows.select("_row").join(left, on="_row", how="left", maintain_order="left")
    return fitted_lists, pl.Series(
        cut_to_tokens(nl.to_list(), room["_left"].fill_null(0).to_list())
    )


def _cut_lists(texts: pl.Series, budget: int) -> pl.Series:
    """Each list of NL texts with every text cut to ``budget`` tokens (empty ones gone)."""
    lists = texts.to_list()
    flat = [t for texts_ in lists for t in texts_]
    cut = iter(cut_to_tokens(flat, [budget] * len(flat)))
    kept = [[c for c in (next(cut) for _ in texts_) if c] for texts_ in lists]
    return pl.Series(texts.name, kept, dtype=pl.List(pl.String))


def fit_budget(frame: pl.DataFrame, spec, rarity: pl.DataFrame | None) -> pl.DataFrame:
    """``frame`` (with ``_head``, ``_whole``, ``_keep``, ``_meta``, ``caption_nl``) rendered
    with every line of every caption within ``spec.max_tokens`` CLIP tokens (module doc)."""
    from e6ingest.captions.render import render

    budget, mode = spec.max_tokens, spec.merge_mode
    joined = frame["caption_nl"].list.join(" ")
    if mode == "tags+nl":
        lists, nl_cut = fit_lists(frame, budget, spec.separator, spec.token_priority, rarity,
                                  joined)  # fmt: skip
        frame = frame.with_columns(
            lists.alias("_whole"), _as_lists(nl_cut.to_list()).alias("caption_nl")
        )
    else:
        lists, _ = fit_lists(frame, budget, spec.separator, spec.token_priority, rarity, None)
        frame = frame.with_columns(lists.alias("_whole"))
        if mode == "nl":
            cut = cut_to_tokens(joined.to_list(), [budget] * len(joined))
            frame = frame.with_columns(_as_lists(cut).alias("caption_nl"))
        elif mode == "alternatives":
            frame = frame.with_columns(_cut_lists(frame["caption_nl"], budget))
    frame = render(frame, spec)
    lines = frame["caption"].to_list()
    tag_lines = frame["caption_tags"].to_list()
    over = [i for i, n in enumerate(count_tokens(_first_lines(lines, mode))) if n > budget]
    if over:
        lines, tag_lines = _trim(frame, spec, over, lines, tag_lines)
        frame = frame.with_columns(pl.Series("caption", lines), pl.Series("caption_tags",
                                                                          tag_lines))  # fmt: skip
    return frame


def _first_lines(lines: list[str], mode: str) -> list[str]:
    """The line of each caption that holds the tags (the first, with alternatives)."""
    return [line.split("\n", 1)[0] for line in lines] if mode == "alternatives" else lines


def _trim(frame, spec, over, lines, tag_lines):
    """Rows whose line is still over the budget lose their last tags one by one."""
    from e6ingest.captions.render import render

    budget = spec.max_tokens
    for i in over:
        row = frame.slice(i, 1)
        tags = list(row["_whole"][0])
        while tags:
            tags.pop()
            fitted = render(row.with_columns(pl.Series("_whole", [tags])), spec)
            line, tag_line = fitted["caption"][0], fitted["caption_tags"][0]
            if count_tokens(_first_lines([line], spec.merge_mode))[0] <= budget:
                break
        lines[i], tag_lines[i] = line, tag_line
    return lines, tag_lines
