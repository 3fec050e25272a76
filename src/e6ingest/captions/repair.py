"""The lines a token budget's sums could not settle (a separator merging into a tag's last
token, a keep-tokens separator, NL text in the head), counted whole and fixed one at a time:
each loses its last kept tag in priority order until it fits; once only the head is left,
the NL text loses its last word, then the head its last tag."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from e6ingest.captions.codes import Lists, TagRules
from e6ingest.captions.render import render
from e6ingest.captions.tokens import count_tokens, cut_to_tokens

if TYPE_CHECKING:
    from e6ingest.captions.budget import Fitted
    from e6ingest.captions.spec import CaptionSpec

# The classes a budget keeps tags by, first kept first.
CLASS_HEAD, CLASS_NL, CLASS_TAG, CLASS_META = 0, 1, 2, 3


def first_lines(lines: list[str], mode: str) -> list[str]:
    """The line of each caption that holds the tags (the first, with alternatives)."""
    return [line.split("\n", 1)[0] for line in lines] if mode == "alternatives" else lines


def repair_rows(
    frame: pl.DataFrame, fit: Fitted, lists: dict[str, Lists], rules: TagRules, over: list[int]
) -> pl.DataFrame:
    """The rows ``over`` the budget with their kept tags (``_whole``, ``_n_head``), head
    (``_keep``) and meta tags (``_meta``) as lists of strings."""
    at = np.array(over)
    named = {
        "_whole": fit.lists.take(at).strings(rules, "_whole"),
        "_keep": lists["keep"].take(at).strings(rules, "_keep"),
        "_meta": lists["meta"].take(at).strings(rules, "_meta"),
        "_n_head": pl.Series("_n_head", fit.n_head[at], pl.Int64),
    }
    return frame[over].with_columns(**named)


def repair_lines(
    rows: pl.DataFrame,
    spec: CaptionSpec,
    over: list[int],
    lines: list[str],
    tag_lines: list[str],
    rarity: pl.DataFrame | None,
) -> None:
    """Rows whose line is still over the budget (counted whole) lose, one at a time, the
    last kept tag in priority order; once only the head is left, the NL text loses its last
    word, then the head its last tag (module doc)."""
    posts = dict(rarity.iter_rows()) if rarity is not None else None
    for k, i in enumerate(over):
        row = rows.slice(k, 1)
        tags, n_head = list(row["_whole"][0]), row["_n_head"][0]
        keep, meta = set(row["_keep"][0]), set(row["_meta"][0])
        texts = list(row["caption_nl"][0]) if spec.merge_mode in ("tags+nl", "nl") else None
        order = _priority(tags, keep, meta, posts, spec.token_priority)
        while True:
            fitted = render(_as_row(row, spec, tags, n_head, texts), spec)
            line, tag_line = fitted["caption"][0], fitted["caption_tags"][0]
            if count_tokens(first_lines([line], spec.merge_mode))[0] <= spec.max_tokens:
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


def _priority(
    tags: list[str], keep: set[str], meta: set[str], posts: dict[str, int] | None, priority: str
) -> list[tuple[int, int]]:
    """(class, index) of each tag of a caption, in the order a budget keeps them (the
    head in caption order)."""
    ranked = []
    for at, tag in enumerate(tags):
        cls = CLASS_HEAD if tag in keep else CLASS_META if tag in meta else CLASS_TAG
        key = at
        if posts is not None and priority != "order" and cls != CLASS_HEAD:
            key = posts.get(tag, 0) * (1 if priority == "rare" else -1)
        ranked.append((cls, key, at))
    return [(cls, at) for cls, _, at in sorted(ranked)]


def _as_row(
    row: pl.DataFrame, spec: CaptionSpec, tags: list[str], n_head: int, texts: list[str] | None
) -> pl.DataFrame:
    """One row's columns for ``render``: its tags (``n_head`` of them in the fixed head)
    joined, and its NL texts."""
    sep = spec.separator
    columns: dict[str, pl.Expr | pl.Series] = {
        "_fixed": pl.lit(sep.join(tags[:n_head] if spec.keep_tokens_separator else tags)),
        "_rest": pl.lit(sep.join(tags[n_head:])),
    }
    if texts is not None:
        columns["caption_nl"] = pl.Series([texts], dtype=pl.List(pl.String))
    return row.with_columns(**columns)
