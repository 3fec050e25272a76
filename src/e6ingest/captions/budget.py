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
costs are counted once per distinct tag, with and without the separator's mark after it:
CLIP's pre-tokens never span whitespace, so with a separator ending in a space (``", "``)
a line's count is the sum of its tags' costs (the last without the mark) plus its NL
text's, exactly, and such lines are not tokenised again. Other lines (NL text in the head,
a keep-tokens separator, a separator without a space) are counted whole; the rare line
still over loses its last tags until it fits.
"""

from __future__ import annotations

import polars as pl

from e6ingest.captions.tokens import clip_tokenizer, count_tokens

CLASS_HEAD, CLASS_NL, CLASS_TAG, CLASS_META = 0, 1, 2, 3


def _costs(tags: pl.Series, mark: str, captioning) -> pl.DataFrame:
    """Per distinct tag: ``_alone`` (its CLIP tokens) and ``_cost`` (with the separator's
    ``mark`` right after it, as every tag but a line's last is written), each counted once
    per ``captioning`` (a plan's batches share it)."""
    distinct = tags.unique().drop_nulls().to_list()
    costs = captioning.costs(distinct, mark, count_tokens)
    return pl.DataFrame(
        {"tag": distinct, "_alone": [c[0] for c in costs], "_cost": [c[1] for c in costs]},
        schema={"tag": pl.String, "_alone": pl.Int64, "_cost": pl.Int64},
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


def _as_lists(texts: pl.Series) -> pl.Series:
    """Each text as a one-element list, an empty text as an empty list."""
    frame = texts.alias("t").to_frame()
    return frame.select(
        pl.when(pl.col("t") != "")
        .then(pl.concat_list("t"))
        .otherwise(pl.lit([], pl.List(pl.String)))
    ).to_series()


def _nl_fitted(nl: pl.Series, cost: pl.Series, room: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Each NL text kept whole when it fits its ``room`` of tokens, else cut to it (empty
    without room), and the tokens of what is kept: only the texts cut are tokenised again."""
    frame = pl.DataFrame({"text": nl, "cost": cost, "room": room}).with_row_index("_i")
    cut = frame.filter((pl.col("room") > 0) & (pl.col("room") < pl.col("cost")))
    texts = cut_to_tokens(cut["text"].to_list(), cut["room"].to_list())
    cut = cut.select("_i", pl.Series("_text", texts), pl.Series("_cost", count_tokens(texts),
                                                                 dtype=pl.Int64))  # fmt: skip
    fitted = frame.join(cut, on="_i", how="left", maintain_order="left").select(
        pl.when(pl.col("room") <= 0).then(pl.lit(""))
        .otherwise(pl.col("_text").fill_null(pl.col("text"))).alias("text"),
        pl.when(pl.col("room") <= 0).then(0)
        .otherwise(pl.col("_cost").fill_null(pl.col("cost"))).alias("cost"),
    )  # fmt: skip
    return fitted["text"], fitted["cost"]


def fit_lists(
    frame: pl.DataFrame, budget: int, separator: str, priority: str,
    rarity: pl.DataFrame | None, nl: pl.Series | None, captioning,
) -> tuple[pl.DataFrame, pl.Series | None, pl.Series]:  # fmt: skip
    """The tag lists (``_whole``) fitted to ``budget`` tokens with their separators, with
    how many of the kept tags belong to the fixed head (``_n_head``), the natural-language
    texts (``nl``, one per row, joined) cut to what the head leaves, and each line's exact
    token count where it follows from the parts (``null`` where the line must be counted
    whole: module doc).

    ``frame`` holds ``_whole`` (the caption's tags, in order), ``_keep`` (tags of the
    head) and ``_meta`` (meta tags) per row; ``rarity``: ``tag``, ``posts``."""
    mark = separator.strip()
    additive = separator[-1:].isspace()  # CLIP pre-tokens end at the separator's space
    sep_cost = count_tokens([mark])[0] if mark else 0
    head_end = (
        pl.min_horizontal(pl.col("_head").list.len(), pl.col("_whole").list.len())
        if "_head" in frame.columns else pl.lit(0, pl.UInt32)
    )  # fmt: skip
    rows = frame.select("_whole", "_keep", "_meta", head_end.alias("_head_end")).with_row_index(
        "_row"
    )
    long = rows.select("_row", pl.col("_whole").alias("tag")).explode("tag").drop_nulls("tag")
    long = long.with_row_index("_pos").with_columns(
        (pl.col("_pos") - pl.col("_pos").min().over("_row")).alias("_at")
    )
    flags = [
        rows.select("_row", pl.col(c).alias("tag")).explode("tag").drop_nulls().unique()
        .with_columns(pl.lit(True).alias(flag))
        for c, flag in (("_keep", "_is_keep"), ("_meta", "_is_meta"))
    ]  # fmt: skip
    for table in flags:
        long = long.join(table, on=["_row", "tag"], how="left")
    costs = _costs(long["tag"], mark if additive else "", captioning)
    long = long.join(costs, on="tag", how="left").with_columns(
        pl.col("_cost") + (0 if additive else sep_cost),
        pl.when(pl.col("_is_keep")).then(CLASS_HEAD)
        .when(pl.col("_is_meta")).then(CLASS_META).otherwise(CLASS_TAG).alias("_class"),
    )  # fmt: skip
    if rarity is not None and priority != "order":
        long = long.join(rarity.rename({"posts": "_posts"}), on="tag", how="left")
        key = pl.col("_posts").fill_null(0) * (1 if priority == "rare" else -1)
    else:
        key = pl.col("_pos")
    items = long.select("_row", "_pos", "_cost", "_alone", "_class", key.alias("_key"))
    if nl is not None:  # the NL text is one item, right after the head
        nl_cost = pl.Series(count_tokens(nl.to_list()), dtype=pl.Int64)
        items = pl.concat([items, pl.DataFrame({
            "_row": pl.int_range(len(nl), eager=True, dtype=pl.UInt32), "_pos": -1,
            "_cost": nl_cost + sep_cost, "_alone": nl_cost, "_class": CLASS_NL, "_key": 0,
        }).filter(pl.col("_alone") > 0)], how="vertical_relaxed")  # fmt: skip
    ranked = items.sort("_row", "_class", "_key", "_pos").with_columns(
        pl.col("_cost").cum_sum().over("_row").alias("_spent")
    )
    limit = budget + sep_cost  # the last item has no separator after it
    kept_tags = ranked.filter((pl.col("_class") != CLASS_NL) & (pl.col("_spent") <= limit))
    whole = (
        long.join(kept_tags.select("_row", "_pos"), on=["_row", "_pos"], how="semi")
        .join(rows.select("_row", "_head_end"), on="_row", how="left")
        .sort("_pos")
        .group_by("_row", maintain_order=True)
        .agg(
            pl.col("tag").alias("_whole"),
            (pl.col("_at") < pl.col("_head_end")).sum().alias("_n_head"),
        )
    )
    sums = kept_tags.sort("_pos").group_by("_row").agg(
        pl.col("_cost").sum().alias("_sum"),
        (pl.col("_cost").sum() - pl.col("_cost").last() + pl.col("_alone").last()).alias("_line"),
    )  # fmt: skip
    fitted = rows.select("_row").join(whole, on="_row", how="left", maintain_order="left")
    fitted = fitted.join(sums, on="_row", how="left", maintain_order="left")
    fitted_lists = fitted.select(pl.col("_whole").fill_null([]), pl.col("_n_head").fill_null(0))
    tags_line = fitted["_line"].fill_null(0)
    if nl is None:
        return fitted_lists, None, tags_line if additive else tags_line.clear(len(tags_line))
    before = ranked.with_columns((pl.col("_spent") - pl.col("_cost")).alias("_before"))
    left = before.filter(pl.col("_class") == CLASS_NL).select(
        "_row", (limit - pl.col("_before") - sep_cost).alias("_left")
    )  # fmt: skip
    room = rows.select("_row").join(left, on="_row", how="left", maintain_order="left")
    cost = pl.DataFrame({"_row": rows["_row"], "c": nl_cost})
    texts, kept_cost = _nl_fitted(nl, cost["c"], room["_left"].fill_null(0))
    exact = pl.DataFrame({"n": fitted["_sum"], "line": tags_line, "nl": kept_cost}).select(
        pl.when(pl.col("nl") == 0).then(pl.col("line"))  # tags only
        .when(pl.col("n").is_not_null()).then(pl.col("n") + pl.col("nl"))  # tags, NL
        .otherwise(None)  # NL only: counted whole
    ).to_series()  # fmt: skip
    return fitted_lists, texts, exact if additive else exact.clear(len(exact))


def _cut_lists(texts: pl.Series, budget: int) -> pl.Series:
    """Each list of NL texts with every text cut to ``budget`` tokens (empty ones gone)."""
    lists = texts.to_list()
    flat = [t for texts_ in lists for t in texts_]
    cut = iter(cut_to_tokens(flat, [budget] * len(flat)))
    kept = [[c for c in (next(cut) for _ in texts_) if c] for texts_ in lists]
    return pl.Series(texts.name, kept, dtype=pl.List(pl.String))


def fit_budget(frame: pl.DataFrame, spec, rarity: pl.DataFrame | None, captioning) -> pl.DataFrame:
    """``frame`` (with ``_head``, ``_whole``, ``_keep``, ``_meta``, ``caption_nl``) rendered
    with every line of every caption within ``spec.max_tokens`` CLIP tokens (module doc)."""
    from e6ingest.captions.render import joined_lists, nl_in_head, render

    budget, mode = spec.max_tokens, spec.merge_mode
    joined = frame["caption_nl"].list.join(" ")
    fit = (frame, budget, spec.separator, spec.token_priority, rarity)
    if mode == "tags+nl":
        lists, nl_cut, exact = fit_lists(*fit, joined, captioning)
        frame = frame.with_columns(*lists.iter_columns(), _as_lists(nl_cut).alias("caption_nl"))
    else:
        lists, _, exact = fit_lists(*fit, None, captioning)
        frame = frame.with_columns(*lists.iter_columns())
        if mode == "nl":
            cut = pl.Series(cut_to_tokens(joined.to_list(), [budget] * len(joined)))
            frame = frame.with_columns(_as_lists(cut).alias("caption_nl"))
            exact = exact.clear(len(exact))  # a line is the NL text or the tags
        elif mode == "alternatives":
            frame = frame.with_columns(_cut_lists(frame["caption_nl"], budget))
    if spec.keep_tokens_separator or nl_in_head(spec):
        exact = exact.clear(len(exact))  # lines not written as tags joined by the separator
    frame = render(frame.with_columns(**joined_lists(spec, fitted=True)), spec)
    lines = frame["caption"].to_list()
    tag_lines = frame["caption_tags"].to_list()
    unsure = [i for i, n in enumerate(exact.to_list()) if n is None or n > budget]
    counts = count_tokens(_first_lines([lines[i] for i in unsure], mode))
    over = [i for i, n in zip(unsure, counts, strict=True) if n > budget]
    if over:
        lines, tag_lines = _repair(frame, spec, over, lines, tag_lines, rarity)
        frame = frame.with_columns(pl.Series("caption", lines), pl.Series("caption_tags",
                                                                          tag_lines))  # fmt: skip
    return frame.drop("_n_head")


def _first_lines(lines: list[str], mode: str) -> list[str]:
    """The line of each caption that holds the tags (the first, with alternatives)."""
    return [line.split("\n", 1)[0] for line in lines] if mode == "alternatives" else lines


def _repair(frame, spec, over, lines, tag_lines, rarity):
    """Rows whose line is still over the budget (counted whole) lose, one at a time, the
    last kept tag in priority order; once only the head is left, the NL text loses its last
    word, then the head its last tag (module doc)."""
    from e6ingest.captions.render import render

    posts = dict(rarity.iter_rows()) if rarity is not None else None
    for i in over:
        row = frame.slice(i, 1)
        tags, n_head = list(row["_whole"][0]), row["_n_head"][0]
        keep, meta = set(row["_keep"][0]), set(row["_meta"][0])
        texts = list(row["caption_nl"][0]) if spec.merge_mode in ("tags+nl", "nl") else None
        order = _priority(tags, keep, meta, posts, spec.token_priority)
        while True:
            fitted = render(_as_row(row, spec, tags, n_head, texts), spec)
            line, tag_line = fitted["caption"][0], fitted["caption_tags"][0]
            if count_tokens(_first_lines([line], spec.merge_mode))[0] <= spec.max_tokens:
                break
            others = [at for at in order if at[0] != CLASS_HEAD]
            if others or (not texts and order):  # a tag, or the head's last once NL is gone
                cls, at = (others or order)[-1]
                order.remove((cls, at))
                n_head -= at < n_head
                tags = [t for j, t in enumerate(tags) if j != at]
                order = [(c, j - (j > at)) for c, j in order]
            elif texts:
                fewer = cut_to_tokens(texts[:1], [count_tokens(texts[:1])[0] - 1])[0]
                texts = [fewer] if fewer else []
            else:
                break
        lines[i], tag_lines[i] = line, tag_line
    return lines, tag_lines


def _priority(tags, keep, meta, posts, priority) -> list[tuple[int, int]]:
    """(class, index) of each tag of a caption, in the order a budget keeps them."""
    ranked = []
    for at, tag in enumerate(tags):
        cls = CLASS_HEAD if tag in keep else CLASS_META if tag in meta else CLASS_TAG
        key = at
        if posts is not None and priority != "order":
            key = posts.get(tag, 0) * (1 if priority == "rare" else -1)
        ranked.append((cls, key, at))
    return [(cls, at) for cls, _, at in sorted(ranked)]


def _as_row(row: pl.DataFrame, spec, tags: list[str], n_head: int, texts) -> pl.DataFrame:
    """One row's columns for ``render``: its tags (``n_head`` of them in the fixed head)
    joined, and its NL texts."""
    sep = spec.separator
    columns = {"_fixed": sep.join(tags[:n_head] if spec.keep_tokens_separator else tags),
               "_rest": sep.join(tags[n_head:])}  # fmt: skip
    if texts is not None:
        columns["caption_nl"] = pl.Series([texts], dtype=pl.List(pl.String))
    return row.with_columns(**{k: (pl.lit(v) if isinstance(v, str) else v)
                               for k, v in columns.items()})  # fmt: skip
