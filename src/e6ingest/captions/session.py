"""What captioning keeps from one batch of posts to the next: each distinct tag's rules and
token costs, and the threads batches are captioned in. One :class:`Captioning` lives as long
as the work it serves (a plan, a ``captions`` command) and is closed with it; nothing is
kept per process."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import polars as pl

from e6ingest.captions.codes import TagRules
from e6ingest.captions.lookup import Numbering, SortedTable
from e6ingest.captions.spec import CaptionSpec
from e6ingest.captions.tokens import (
    PLAIN_TEXT,
    WordCounts,
    count_tokens,
    count_with_mark,
    cut_at_words,
    cut_to_tokens,
    per_text,
    pre_tokens,
)
from e6ingest.core import available_cores

TEXTS_KEPT = 2_000_000  # distinct texts whose token counts are kept; past it, kept anew
_NONE = np.zeros(0, np.int64)
Item = TypeVar("Item")
Result = TypeVar("Result")


class TextTokens:
    """The CLIP tokens of texts, each distinct text counted once (by ``count``, given the
    texts not seen before) for as long as the object lives: the texts are numbered as they
    come (:class:`~.lookup.Numbering`), and each number's tokens kept in an array. Any
    thread may call :meth:`of` (two threads meeting a new text at once may both count it)."""

    def __init__(self, count: Callable[[list[str]], list[int]]) -> None:
        self._count = count
        self._lock = threading.Lock()
        self._numbering, self._tokens = Numbering(), _NONE

    def of(self, texts: pl.Series) -> np.ndarray:
        """The tokens of each of ``texts`` (none missing)."""
        with self._lock:
            numbering, tokens = self._numbering, self._tokens
        numbers = numbering.numbers(texts)
        found = np.full(len(numbers), -1, np.int64)
        known = numbers < len(tokens)
        found[known] = tokens[numbers[known]]  # -1 where another thread is counting it
        missing = np.flatnonzero(found < 0)
        if not len(missing):
            return found
        new, first, back = np.unique(numbers[missing], return_index=True, return_inverse=True)
        counted = np.asarray(self._count(texts.gather(missing[first]).to_list()), np.int64)
        found[missing] = counted[back]
        self._keep(numbering, new, counted)
        return found

    def _keep(self, numbering: Numbering, numbers: np.ndarray, counted: np.ndarray) -> None:
        """Keep the tokens of the texts of ``numbers`` (in ``numbering``): in place, as an
        entry only ever goes from -1 to its count, or in a larger array; past
        ``TEXTS_KEPT`` texts, numbering starts afresh."""
        with self._lock:
            if numbering is not self._numbering:  # started afresh meanwhile
                return
            size = int(numbers.max()) + 1
            if size > TEXTS_KEPT:
                self._numbering, self._tokens = Numbering(), _NONE
                return
            if size > len(self._tokens):
                grown = np.full(max(size, 2 * len(self._tokens)), -1, np.int64)
                grown[: len(self._tokens)] = self._tokens
                self._tokens = grown
            self._tokens[numbers] = counted


class Captioning:
    """Tag rules per spec, token costs and a pool of ``threads`` (default: the cores this
    process may use) for the captions of many batches; a context manager that stops its
    threads when the work is done."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = max(1, threads or available_cores())
        self._rules: dict[tuple[Hashable, ...], TagRules] = {}
        self._texts = TextTokens(count_tokens)  # by the tokenizer
        self._words = TextTokens(self.word_tokens)  # words, by their pre-tokens
        self._text_costs: dict[tuple[TagRules, str], tuple[np.ndarray, np.ndarray]] = {}
        self._posts: dict[tuple[TagRules, int], tuple[pl.DataFrame, SortedTable, np.ndarray]] = {}
        self._text_lock = threading.Lock()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def rules(self, spec: CaptionSpec, aliases: Mapping[str, str]) -> TagRules:
        """The rules for ``spec`` and ``aliases``: each distinct tag handled once across
        batches (the same object for every spec that writes tags alike)."""
        key = (spec.underscores_to_spaces, spec.escape_parentheses, spec.blacklist,
               spec.meta_filter, spec.separator, spec.subject_tags,
               frozenset(aliases.items()))  # fmt: skip
        with self._lock:
            if key not in self._rules:
                self._rules[key] = TagRules(spec, aliases)
            return self._rules[key]

    def tokens(self, text: str) -> int:
        """The CLIP tokens of ``text``, counted once."""
        return int(self._texts.of(pl.Series([text], dtype=pl.String))[0])

    def text_costs(self, rules: TagRules, mark: str) -> tuple[np.ndarray, np.ndarray]:
        """Per written text of ``rules`` (by number): its CLIP tokens alone and with
        ``mark`` after it, as arrays covering every text numbered so far."""
        with self._text_lock:
            alone, marked = self._text_costs.get((rules, mark), (_NONE, _NONE))
            texts = rules.texts[len(alone) :]  # numbered since the last call
            if texts:
                new = self.text_tokens(pl.Series(texts, dtype=pl.String))
                with_mark = count_with_mark(texts, new.tolist(), mark) if mark else new
                alone = np.concatenate([alone, new])
                marked = np.concatenate([marked, np.asarray(with_mark, np.int64)])
                self._text_costs[(rules, mark)] = (alone, marked)
            return alone, marked

    def cut_texts(
        self, texts: pl.Series, limits: int | np.ndarray, words: WordCounts | None = None
    ) -> tuple[pl.Series, np.ndarray]:
        """Each text cut to its limit of CLIP tokens (``limits``: one for all, or one per
        text), as :func:`~.tokens.cut_to_tokens` cuts it, and the tokens of each text it
        gives, as :func:`~.tokens.count_tokens` counts them. A text of printable ASCII
        without ``&`` or a space at an end is cut at its words, whose tokens are known
        (:meth:`word_counts`, or ``words``: those of these texts); any other is encoded
        whole, and its count is -1."""
        texts = texts.fill_null("")
        limits = np.broadcast_to(np.asarray(limits, np.int64), (len(texts),))
        edges = texts.str.starts_with(" ") | texts.str.ends_with(" ")
        plain = (texts.str.contains(PLAIN_TEXT) & ~edges).to_numpy()
        rows, other = np.flatnonzero(plain), np.flatnonzero(~plain)
        counts = np.full(len(texts), -1, np.int64)
        given = self.word_counts(texts.gather(rows)) if words is None else words.gather(rows)
        cut, known = cut_at_words(given, limits[rows])
        recount = np.flatnonzero(known < 0)  # the texts cut within a word
        known[recount] = self.text_tokens(cut.gather(recount))
        counts[rows] = known
        shorter = cut_to_tokens(texts.gather(other).to_list(), limits[other].tolist())
        out = _scattered(texts, rows, cut)
        return _scattered(out, other, pl.Series(shorter, dtype=pl.String)), counts

    def text_posts(self, rules: TagRules, rarity: pl.DataFrame) -> np.ndarray:
        """Per written text of ``rules`` (by number): on how many posts it is, by ``rarity``
        (``tag``, ``posts``, one row per tag; 0 for a text it lacks), covering every text
        numbered so far; each call finds only the texts numbered since the last."""
        with self._text_lock:
            key = (rules, id(rarity))  # the table is kept here: its id names no other
            if key not in self._posts:
                posts = rarity["posts"].fill_null(0).cast(pl.Int64)
                self._posts[key] = (rarity, SortedTable(rarity["tag"], posts), _NONE)
            _, table, known = self._posts[key]
            texts = rules.texts[len(known) :]
            if texts:
                posts, found = table.find(pl.Series(texts, dtype=pl.String))
                new = np.where(found, posts.to_numpy(), 0).astype(np.int64)
                known = np.concatenate([known, new])
                self._posts[key] = (rarity, table, known)
            return known

    def text_tokens(self, texts: pl.Series) -> np.ndarray:
        """The CLIP tokens of each text, as the sum of its words' (split on spaces: CLIP's
        pre-tokens never span one), each distinct word counted once (:meth:`word_tokens`)."""
        return self.word_counts(texts).tokens

    def word_counts(self, texts: pl.Series) -> WordCounts:
        """The texts (a missing one empty), each split on single spaces, with the CLIP
        tokens of each word, each distinct word counted once (:meth:`word_tokens`)."""
        texts = texts.fill_null("")
        words = texts.str.split(" ")
        every = words.explode(empty_as_null=False, keep_nulls=False)
        size = every.str.len_bytes().cast(pl.Int64).to_numpy()
        lengths = words.list.len().cast(pl.Int64).to_numpy()
        return WordCounts.of(texts, self._words.of(every), size, lengths)

    def word_tokens(self, words: Sequence[str]) -> list[int]:
        """The CLIP tokens of each word (a text without a space): the sum of CLIP's own
        pre-tokens' (:func:`~.tokens.pre_tokens`), each distinct one counted once, for a
        word of printable ASCII holding no ``&``; the tokenizer's count for any other."""
        series = pl.Series(words, dtype=pl.String)
        plain = series.str.contains(PLAIN_TEXT).to_numpy()
        tokens = np.zeros(len(series), np.int64)
        other = np.flatnonzero(~plain)
        tokens[other] = count_tokens(series.gather(other).to_list())
        rows = np.flatnonzero(plain)
        pieces = series.gather(rows).to_frame("w").select(pre_tokens(pl.col("w")))["w"]
        every = pieces.explode(empty_as_null=False, keep_nulls=False)
        lengths = pieces.list.len().fill_null(0).cast(pl.Int64).to_numpy()
        tokens[rows] = per_text(self._texts.of(every), lengths)
        counts: list[int] = tokens.tolist()
        return counts

    def map(self, work: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
        """``work`` over ``items`` on the threads, results in order (in this thread when
        there is one item or one thread)."""
        if len(items) <= 1 or self.threads == 1:
            return [work(item) for item in items]
        with self._lock:
            if self._pool is None:  # the same threads for every call: each keeps its
                # malloc arena, so a batch reuses the memory the one before freed
                self._pool = ThreadPoolExecutor(self.threads, "e6ingest-captions")
        return list(self._pool.map(work, items))

    def close(self) -> None:
        """Stop the threads (the caches go with the object)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> Captioning:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _scattered(texts: pl.Series, rows: np.ndarray, values: pl.Series) -> pl.Series:
    """``texts`` with ``values`` at ``rows``."""
    return texts.scatter(rows, values) if len(rows) else texts
