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

Tags keep their caption order; only which of them stay depends on the priority. The fitting
works on the batch's written tag numbers (:class:`~.codes.Lists`) with numpy: each tag's
cost is looked up by its number (:meth:`.Captioning.text_costs`, counted once per distinct
tag), and what each row spends up to each tag, in priority order, is a running sum per
class. CLIP's pre-tokens never span whitespace, so with a separator ending in a space
(``", "``) a line's count is the sum of its tags' costs (the last without the mark) plus its
NL text's (itself the sum of its pieces' costs), exactly, and such lines are not tokenised
again. Other lines (NL text in the head, a keep-tokens separator, a separator without a
space) are counted whole; the rare line still over loses its last tags until it fits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from e6ingest.arrays import running_count, stable_argsort
from e6ingest.captions.codes import Lists, TagRules
from e6ingest.captions.render import nl_in_head, render
from e6ingest.captions.repair import (
    CLASS_HEAD,
    CLASS_META,
    CLASS_TAG,
    first_lines,
    repair_lines,
    repair_rows,
)
from e6ingest.captions.tokens import WordCounts, count_tokens

if TYPE_CHECKING:
    from e6ingest.captions.session import Captioning
    from e6ingest.captions.spec import CaptionSpec

UNKNOWN = -1  # a line's count that does not follow from its parts
REPAIR_ROUNDS = 4  # tags dropped one at a time from lines counted exactly, at most


def _member(whole: Lists, other: Lists, width: int) -> np.ndarray:
    """Per item of ``whole``: whether its row's list in ``other`` holds the same number
    (``width``: more than any number). A number in no list of ``other`` is in none of
    them: only the items whose number is somewhere in ``other`` are looked up by row."""
    found = np.zeros(len(whole.numbers), bool)
    if not len(other.numbers) or not len(whole.numbers):
        return found
    listed = np.zeros(width, bool)
    listed[other.numbers] = True
    maybe = np.flatnonzero(listed[whole.numbers])
    if len(maybe):
        mine = whole.rows()[maybe] * width + whole.numbers[maybe]
        theirs = other.rows() * width + other.numbers
        found[maybe] = pl.Series(mine).is_in(pl.Series(theirs).implode()).to_numpy()
    return found


def _priority_keys(
    whole: Lists,
    rules: TagRules,
    rarity: pl.DataFrame | None,
    priority: str,
    captioning: Captioning,
) -> np.ndarray | None:
    """Per item: the key that orders tags of a class (fewest posts first for ``rare``,
    most for ``common``); None for caption order."""
    if rarity is None or priority == "order" or not len(whole.numbers):
        return None
    keys: np.ndarray = captioning.text_posts(rules, rarity)[whole.numbers]
    return keys if priority == "rare" else -keys


def _running_sums(offsets: np.ndarray, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For values in row order (row ``i``'s from ``offsets[i]``; ``rows``: each item's
    row): the running sum of each item within its row, itself included."""
    running = np.cumsum(values)
    before = np.concatenate([[0], running])[offsets[:-1]]  # what the rows before spent
    within: np.ndarray = running - before[rows]
    return within


@dataclass(frozen=True)
class Fitted:
    """Tags fitted to a budget: the kept ones per row (in caption order), how many of each
    row's belong to its fixed head, the NL texts cut to what is left (``tags+nl``), and each
    line's exact token count where it follows from the parts (``UNKNOWN`` elsewhere)."""

    lists: Lists
    n_head: np.ndarray
    nl: pl.Series | None
    exact: np.ndarray


def _classes(lists: dict[str, Lists], width: int) -> np.ndarray:
    """Per tag of ``whole``: head (kept first), meta (dropped first) or another tag."""
    whole = lists["whole"]
    is_keep = _member(whole, lists["keep"], width)
    is_meta = _member(whole, lists["meta"], width) & ~is_keep
    return np.where(is_keep, CLASS_HEAD, np.where(is_meta, CLASS_META, CLASS_TAG))


def _row_order(rows: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The items (in row order) ordered by row, then key, ties in caption order: one stable
    sort of a key made of both."""
    if not len(keys):
        return np.zeros(0, np.int64)
    keys, span = _from_zero(keys, int(rows[-1]) + 1)
    return stable_argsort(rows.astype(np.int64) * span + keys)


def _from_zero(keys: np.ndarray, times: int) -> tuple[np.ndarray, int]:
    """``keys`` less their minimum, and their range: in the same order, each below the
    range, so that ``times`` ranges fit an int64 (their ranks when the range is too wide)."""
    low, high = int(keys.min()), int(keys.max())
    if (high - low + 1) * times < 2**62:
        return keys - low, high - low + 1
    ranks: np.ndarray = np.unique(keys, return_inverse=True)[1]
    return ranks, len(keys)


def _priority_order(rows: np.ndarray, classes: np.ndarray, keys: np.ndarray | None) -> np.ndarray:
    """The items ordered as a budget keeps them: by row, then class (head, other tags,
    meta), then ``keys`` when given, ties in caption order."""
    if not len(classes):
        return np.zeros(0, np.int64)
    key = classes.astype(np.int64)
    if keys is not None:
        keys, span = _from_zero(keys, CLASS_META + 1)
        key = key * span + keys
    return _row_order(rows, key)


def _spent(
    offsets: np.ndarray,
    rows: np.ndarray,
    classes: np.ndarray,
    cost: np.ndarray,
    keys: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """What each row has spent up to and including each tag, tags taken in priority order
    (:func:`_priority_order`): one running sum in that order; and each row's cost of its
    head."""
    order = _priority_order(rows, classes, keys)
    in_order = cost[order]
    is_head = classes[order] == CLASS_HEAD
    within = _running_sums(offsets, rows, in_order)
    # the order moves items only within their row, the head first: each row's head is
    # its first items, what they spend the running sum at the last of them
    heads = running_count(is_head)
    n_head = heads[offsets[1:]] - heads[offsets[:-1]]
    has_head = n_head > 0
    head = np.zeros(len(n_head), np.int64)
    head[has_head] = within[(offsets[:-1] + n_head - 1)[has_head]]
    spent = np.empty_like(within)
    spent[order] = within
    return spent, head


@dataclass(frozen=True)
class Ranked:
    """Tag lists ranked for a token budget: what each row spends up to each tag, in the
    order a budget keeps them, whatever the budget (:meth:`fit` applies one). Captions
    that differ only in their budget (variants) share one."""

    lists: dict[str, Lists]
    rules: TagRules
    spent: np.ndarray  # per tag: the row's tokens up to and including it, in priority order
    head: np.ndarray  # per row: its head's tokens
    cost: np.ndarray  # per tag: its tokens with the separator after it
    alone: np.ndarray  # per tag: its tokens alone (the last of a line)
    sep_cost: int
    nl: WordCounts | None  # per row: its natural-language text (tags+nl), or none
    nl_cost: np.ndarray
    classes: np.ndarray  # per tag: CLASS_HEAD, CLASS_TAG or CLASS_META

    def reordered(self, lists: dict[str, Lists], order: np.ndarray) -> Ranked:
        """The same tags ranked for ``lists``, whose ``whole`` holds each row's tags of
        this ranking in another caption order (``order``: for each of its tags, the index
        of the same tag here, only head tags moving) and whose other lists are these. The
        tags of the other classes keep their order among themselves, hence what each row
        spends up to each; what it spends up to each head tag is summed again."""
        classes, cost, alone = self.classes[order], self.cost[order], self.alone[order]
        rows, spent = lists["whole"].rows(), self.spent[order]
        head = np.flatnonzero(classes == CLASS_HEAD)  # in caption order, as a budget keeps it
        counts = np.bincount(rows[head], minlength=len(self.head))
        offsets = np.concatenate([[0], np.cumsum(counts)])
        spent[head] = _running_sums(offsets, rows[head], cost[head])
        return replace(self, lists=lists, spent=spent, cost=cost, alone=alone, classes=classes)

    def with_text(self, nl: WordCounts) -> Ranked:
        """These tags ranked with a natural-language text per row (``nl``, with its
        tokens), kept right after the head (``tags+nl``): each row spends its text and a
        separator before any tag past its head."""
        nl_cost = nl.tokens
        nl_item = np.where(nl_cost > 0, nl_cost + self.sep_cost, 0)
        past_head = np.where(self.classes != CLASS_HEAD, nl_item[self.lists["whole"].rows()], 0)
        return replace(self, spent=self.spent + past_head, nl=nl, nl_cost=nl_cost)

    def fit(self, budget: int, captioning: Captioning, lines_as_counted: bool = False) -> Fitted:
        """The tags fitted to ``budget`` tokens (module doc), the NL texts cut to the room
        left after the head by ``captioning``. With ``lines_as_counted`` (each line written
        as its counted parts: no keep-tokens separator, NL text at the end), a line whose
        exact count is still over (a tag whose separator merges into its last token) loses
        its last kept tag in priority order here, as the repair of a line counted whole
        would."""
        limit = budget + self.sep_cost  # the last item has no separator after it
        room = limit - self.head - self.sep_cost  # for the NL text, after the head
        kept = self.spent <= limit
        nl = None if self.nl is None else _nl_fitted(self.nl, self.nl_cost, room, captioning)
        context = (self.cost, self.alone, nl)
        fitted = _fitted(self.lists, self.rules, kept, *context)
        for _ in range(REPAIR_ROUNDS if lines_as_counted else 0):
            drop = self._last_kept(kept, fitted, budget)
            if not len(drop):
                break
            kept[drop] = False
            fitted = _fitted(self.lists, self.rules, kept, *context)
        return fitted

    def _last_kept(self, kept: np.ndarray, fitted: Fitted, budget: int) -> np.ndarray:
        """Per row whose exact count is over ``budget``: its last kept tag in priority
        order, unless that is a head tag while NL text is kept (the text is cut first)
        or the row has a tag of no tokens (left to the repair of whole lines)."""
        over = (fitted.exact != UNKNOWN) & (fitted.exact > budget)
        if not over.any():
            return np.zeros(0, np.int64)
        rows = self.lists["whole"].rows()
        candidate = kept & over[rows]
        n = len(over)
        odd = np.bincount(rows[candidate & (self.cost <= 0)], minlength=n) > 0
        items = np.flatnonzero(candidate & ~odd[rows])
        if not len(items):
            return items
        width = len(self.spent) + 1
        key = (self.spent[items] * 4 + self.classes[items]) * width + items  # priority order
        best = np.full(n, -1, np.int64)
        np.maximum.at(best, rows[items], key)
        last: np.ndarray = items[key == best[rows[items]]]
        if fitted.nl is not None:
            has_text = (fitted.nl.str.len_chars() > 0).to_numpy()
            last = last[~((self.classes[last] == CLASS_HEAD) & has_text[rows[last]])]
        return last


def rank_lists(
    lists: dict[str, Lists],
    rules: TagRules,
    priority: str,
    rarity: pl.DataFrame | None,
    nl: pl.Series | None,
    captioning: Captioning,
) -> Ranked:
    """The tag lists ranked for a budget (:class:`Ranked`).

    ``lists``: ``whole`` (the caption's tags, in order), ``keep`` (the head a budget keeps
    first), ``meta`` and, with a keep-tokens separator, ``head``; ``rarity``: ``tag``,
    ``posts``; ``nl``: the natural-language text of each row (``tags+nl``), or None."""
    whole, separator = lists["whole"], rules.spec.separator
    mark, additive = separator.strip(), separator[-1:].isspace()
    sep_cost = captioning.tokens(mark) if mark else 0
    alone, marked = captioning.text_costs(rules, mark if additive else "")
    alone, cost = alone[whole.numbers], marked[whole.numbers] + (0 if additive else sep_cost)
    classes = _classes(lists, len(rules.texts) + 1)
    keys = _priority_keys(whole, rules, rarity, priority, captioning)
    if keys is not None:  # the head is kept in caption order, whatever the priority
        keys = np.where(classes == CLASS_HEAD, 0, keys)
    spent, head = _spent(whole.offsets, whole.rows(), classes, cost, keys)
    no_text = np.zeros(len(whole.offsets) - 1, np.int64)
    ranked = Ranked(lists, rules, spent, head, cost, alone, sep_cost, None, no_text, classes)
    return ranked if nl is None else ranked.with_text(captioning.word_counts(nl))


def fit_lists(
    lists: dict[str, Lists],
    rules: TagRules,
    budget: int,
    priority: str,
    rarity: pl.DataFrame | None,
    nl: pl.Series | None,
    captioning: Captioning,
) -> Fitted:
    """The tag lists fitted to ``budget`` tokens with their separators (as
    :func:`rank_lists` takes them)."""
    return rank_lists(lists, rules, priority, rarity, nl, captioning).fit(budget, captioning)


def _fitted(
    lists: dict[str, Lists],
    rules: TagRules,
    kept: np.ndarray,
    cost: np.ndarray,
    alone: np.ndarray,
    nl: tuple[pl.Series, np.ndarray] | None,
) -> Fitted:
    """The kept tags as :class:`Fitted`, with ``nl``: the NL texts as cut to their room
    and their tokens (:func:`_nl_fitted`)."""
    whole = lists["whole"]
    n = len(whole.offsets) - 1
    items = np.flatnonzero(kept)
    offsets = running_count(kept)[whole.offsets].astype(np.int64)
    counts = np.diff(offsets)
    fitted = Lists(offsets, whole.numbers[items])
    n_head = _head_counts(lists, whole.rows(), kept)
    kept_cost = cost[items]
    summed = np.concatenate([[0], np.cumsum(kept_cost)])
    total = summed[offsets[1:]] - summed[offsets[:-1]]
    has = counts > 0
    last = offsets[1:][has] - 1  # each row's last kept tag
    line = total.copy()
    line[has] += alone[items[last]] - kept_cost[last]
    additive = rules.spec.separator[-1:].isspace()
    if nl is None:
        exact = line if additive else np.full(n, UNKNOWN)
        return Fitted(fitted, n_head, None, exact)
    texts, kept_cost = nl
    exact = np.where(kept_cost == 0, line, np.where(has, total + kept_cost, UNKNOWN))
    return Fitted(fitted, n_head, texts, exact if additive else np.full(n, UNKNOWN))


def _head_counts(lists: dict[str, Lists], rows: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Per row, how many of its ``kept`` tags belong to its fixed head (none without one)."""
    whole, head = lists["whole"], lists.get("head")
    if head is None:
        return np.zeros(len(whole.offsets) - 1, np.int64)
    head_end = np.minimum(head.lengths(), whole.lengths())
    at = np.arange(len(kept)) - whole.offsets[rows]  # each item's place in its row
    counts: np.ndarray = np.bincount(rows[kept & (at < head_end[rows])], minlength=len(head_end))
    return counts


def _nl_fitted(
    nl: WordCounts, cost: np.ndarray, room: np.ndarray, captioning: Captioning
) -> tuple[pl.Series, np.ndarray]:
    """Each NL text (of ``cost`` tokens) kept whole when it fits its ``room`` of tokens,
    else cut to it (empty without room), and the tokens of what is kept: only the texts
    cut are counted again."""
    room = np.where(cost > 0, room, 0)
    kept = np.where(room <= 0, 0, cost)
    texts = nl.texts.alias("caption_nl").scatter(np.flatnonzero(room <= 0), "")
    cut = np.flatnonzero((room > 0) & (room < cost))
    if not len(cut):
        return texts, kept
    shorter, counts = captioning.cut_texts(nl.texts.gather(cut), room[cut], nl.gather(cut))
    unknown = np.flatnonzero(counts < 0)  # cut by the tokenizer: counted by it
    counts[unknown] = count_tokens(shorter.gather(unknown).to_list())
    kept[cut] = counts
    return texts.scatter(cut, shorter), kept


def _as_lists(texts: pl.Series) -> pl.Series:
    """Each text as a one-element list, an empty text as an empty list."""
    frame = texts.alias("t").to_frame()
    return frame.select(
        pl.when(pl.col("t") != "")
        .then(pl.concat_list("t"))
        .otherwise(pl.lit([], pl.List(pl.String)))
    ).to_series()


def _cut_lists(texts: pl.Series, budget: int, captioning: Captioning) -> pl.Series:
    """Each list of NL texts with every text cut to ``budget`` tokens (empty ones gone)."""
    rows = np.repeat(np.arange(len(texts)), texts.list.len().fill_null(0).to_numpy())
    cut, _ = captioning.cut_texts(pl.Series(texts.to_arrow().flatten()), budget)
    kept = pl.DataFrame({"row": rows, "t": cut}).filter(pl.col("t") != "")
    lists = kept.group_by("row", maintain_order=True).agg("t")
    every = pl.DataFrame({"row": np.arange(len(texts))}).join(
        lists, on="row", how="left", maintain_order="left"
    )
    return every["t"].fill_null(pl.lit([], pl.List(pl.String))).alias(texts.name)


def fit_budget(
    frame: pl.DataFrame,
    ranked: Ranked,
    spec: CaptionSpec,
    rarity: pl.DataFrame | None,
    captioning: Captioning,
) -> pl.DataFrame:
    """``frame`` (with ``caption_nl``) with ``caption`` and ``caption_tags`` made of its
    ``ranked`` tag lists (:func:`rank_lists`, with this spec's NL texts when ``tags+nl``),
    every line of every caption within ``spec.max_tokens`` CLIP tokens (module doc);
    ``captioning`` counts and cuts NL texts that make lines alone (``nl``, ``alternatives``)."""
    budget, mode = spec.max_tokens, spec.merge_mode
    lists, rules = ranked.lists, ranked.rules
    as_counted = mode != "nl" and not spec.keep_tokens_separator and not nl_in_head(spec)
    fit = ranked.fit(budget, captioning, as_counted)
    exact = fit.exact
    if mode == "tags+nl" and fit.nl is not None:
        frame = frame.with_columns(_as_lists(fit.nl).alias("caption_nl"))
    elif mode == "nl":  # a line is the NL text, or else the tags, as fitted
        nl, nl_tokens = captioning.cut_texts(frame["caption_nl"].list.join(" "), budget)
        frame = frame.with_columns(_as_lists(nl).alias("caption_nl"))
        exact = np.where((nl != "").to_numpy(), nl_tokens, exact)
    elif mode == "alternatives":
        frame = frame.with_columns(_cut_lists(frame["caption_nl"], budget, captioning))
    if spec.keep_tokens_separator or nl_in_head(spec):
        exact = np.full(len(exact), UNKNOWN)  # lines not written as tags joined by the separator
    split = fit.n_head if spec.keep_tokens_separator else None
    texts = dict(zip(("_fixed", "_rest"), fit.lists.joined(rules, split), strict=False))
    frame = render(frame.with_columns(**texts), spec).drop(texts)
    unsure = np.flatnonzero((exact == UNKNOWN) | (exact > budget))
    if not len(unsure):
        return frame
    lines, tag_lines = frame["caption"].to_list(), frame["caption_tags"].to_list()
    counts = count_tokens(first_lines([lines[i] for i in unsure], mode))
    over = [int(i) for i, n in zip(unsure, counts, strict=True) if n > budget]
    if over:
        rows = repair_rows(frame, fit, lists, rules, over)
        repair_lines(rows, spec, over, lines, tag_lines, rarity)
        frame = frame.with_columns(pl.Series("caption", lines), pl.Series("caption_tags",
                                                                          tag_lines))  # fmt: skip
    return frame
