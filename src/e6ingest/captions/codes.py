"""Tags as numbers: the per-tag work done once per distinct tag, the per-post work on arrays.

Every distinct tag a :class:`TagRules` meets gets a code (:mod:`.lookup`, by hash), and the
rules say, per code, what the caption spec makes of the tag (alias, then dropped by the
blacklist or meta filter, people-count or not, then rewritten), computed the first time the
tag is met and never again. A :class:`TagBatch` holds a batch of posts' tags as flat arrays
(per category: each row's count, each tag's code and written number); a caption is then a
list of numbers per post, each the id of a written tag (:attr:`TagRules.texts`): put in
caption order by counting, deduplicated, cut to ``max_tags``, and turned into text by one
``take`` of the written tags (with the separator after each) whose buffer already holds
every caption, one after the other.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from e6ingest.arrays import groups, repeat, running_count, to_arrow, to_numpy
from e6ingest.captions.lookup import SortedTable, StringNumbers
from e6ingest.captions.spec import CaptionSpec

# Tags giving the number of people: 1girl, 2boys, 6+others, solo, duo, multiple_girls...
PEOPLE_PATTERN = (
    r"^(?:\d+\+?(?:girl|boy|other)s?|solo|duo|trio|group|multiple_(?:girls|boys|others)"
    r"|no_humans|zero_pictured)$"
)
# Tags kept as they are by the underscore rewrite: short ones and those without letters
# (emoticons such as ^_^, >_<, o_o, :3, ^_^;).
EMOTICON_MAX_LEN = 3

NUMBER = np.int32  # a written tag's number; rows of a batch are int32 too


def glob_regex(patterns: tuple[str, ...]) -> str:
    """One anchored regex matching any of the glob ``patterns`` (``*`` and ``?``)."""
    parts = []
    for pattern in patterns:
        escaped = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
        parts.append(f"^{escaped}$")
    return "|".join(parts)


def rewrite(spec: CaptionSpec, tag: pl.Expr) -> pl.Expr:
    """``tag`` as captions write it: underscores to spaces (emoticons kept), parentheses
    escaped, as ``spec`` asks."""
    if spec.underscores_to_spaces:
        keep = (tag.str.len_chars() <= EMOTICON_MAX_LEN) | ~tag.str.contains("[A-Za-z]")
        tag = pl.when(keep).then(tag).otherwise(tag.str.replace_all("_", " ", literal=True))
    if spec.escape_parentheses:
        tag = tag.str.replace_all("(", r"\(", literal=True).str.replace_all(
            ")", r"\)", literal=True
        )
    return tag


def _dropped(spec: CaptionSpec, tag: pl.Expr) -> pl.Expr:
    """Whether the blacklist or the meta filter (names or globs) drops ``tag``; an empty tag
    is dropped too."""
    patterns = spec.blacklist + spec.meta_filter
    names = [p for p in patterns if "*" not in p and "?" not in p]
    globs = tuple(p for p in patterns if p not in names)
    dropped = (tag == "") | tag.is_in(names)
    return dropped | tag.str.contains(glob_regex(globs)) if globs else dropped


class TagRules:
    """What ``spec`` and ``aliases`` make of each distinct tag, by code, filled in as tags
    are met; ``texts`` are the written tags, numbered, each once (an extra tag such as a
    rating's name shares the numbering, so equal words deduplicate whatever their origin)."""

    def __init__(self, spec: CaptionSpec, aliases: Mapping[str, str]):
        self.spec = spec
        self._aliased = None  # old -> new tag name, looked up once per new tag
        if aliases:
            old = pl.Series(list(aliases), dtype=pl.String)
            self._aliased = SortedTable(old, pl.Series(list(aliases.values()), dtype=pl.String))
        self.people = np.zeros(0, bool)  # code -> whether a people-count tag
        self.subject = np.zeros(0, bool)  # code -> whether a subject tag (spec.subject_tags)
        self.written = np.full(0, -1, NUMBER)  # code -> number of its written text, -1: dropped
        self.texts: list[str] = []
        self._codes = StringNumbers()  # tag -> code
        self._numbers: dict[str, int] = {}
        self._plain = self._marked = _arrow_strings([])
        self._lock = threading.RLock()  # batches are captioned in threads

    def number(self, texts: list[str]) -> list[int]:
        """The number of each written text, new ones numbered as they come."""
        with self._lock:
            return self._number(texts)

    def _number(self, texts: list[str]) -> list[int]:
        out = []
        for text in texts:
            n = self._numbers.get(text)
            if n is None:
                n = self._numbers[text] = len(self.texts)
                self.texts.append(text)
            out.append(n)
        return out

    def codes(self, tags: pl.Series) -> np.ndarray:
        """The code of each of ``tags``; the rules of those not met before are worked out
        (under the lock, and in place before their codes can be found)."""
        codes = self._codes.find(tags)
        missing = np.flatnonzero(codes < 0)
        if not len(missing):
            return codes
        with self._lock:
            strings = tags.gather(missing)
            numbers, new, table = self._codes.number(strings)
            codes[missing] = numbers
            if len(new):
                grow = len(table) - len(self.written)
                self.people = np.concatenate([self.people, np.zeros(grow, bool)])
                self.subject = np.concatenate([self.subject, np.zeros(grow, bool)])
                self.written = np.concatenate([self.written, np.full(grow, -1, NUMBER)])
                self._learn(numbers[new], strings.gather(new))
                self._codes.publish(table)
        return codes

    def _learn(self, codes: np.ndarray, tags: pl.Series) -> None:
        tag = pl.col("tag")
        if self._aliased is not None:  # each tag its alias's new name
            new, found = self._aliased.find(tags)
            tags = new.zip_with(pl.Series(found), tags)
        rules = (
            tags.alias("tag")
            .to_frame()
            .select(
                _dropped(self.spec, tag).alias("dropped"),
                tag.str.contains(PEOPLE_PATTERN).alias("people"),
                tag.is_in(list(self.spec.subject_tags)).alias("subject"),
                rewrite(self.spec, tag).alias("text"),
            )
        )
        kept = ~rules["dropped"].to_numpy()
        self.people[codes] = rules["people"].to_numpy()
        self.subject[codes] = rules["subject"].to_numpy()
        self.written[codes[kept]] = self._number(rules["text"].filter(pl.Series(kept)).to_list())

    def arrays(self) -> tuple[pa.Array, pa.Array]:
        """The written texts as arrow strings: as they are, and with the separator after;
        grown by the texts numbered since the last call."""
        with self._lock:
            return self._arrays()

    def _arrays(self) -> tuple[pa.Array, pa.Array]:
        done = len(self._plain)
        if done < len(self.texts):
            new = self.texts[done:]
            marked = [t + self.spec.separator for t in new]
            self._plain = pa.concat_arrays([self._plain, _arrow_strings(new)])
            self._marked = pa.concat_arrays([self._marked, _arrow_strings(marked)])
        return self._plain, self._marked


def _take(texts: pa.Array, numbers: np.ndarray) -> pa.Array:
    """``texts[numbers]``, in memory from the system allocator: the taken texts grow by
    reallocation, which it does in place (page remapping) where arrow's default pool
    copies into fresh memory, two to three times slower here."""
    return pc.take(texts, to_arrow(numbers), memory_pool=pa.system_memory_pool())


def _arrow_strings(texts: list[str]) -> pa.Array:
    """Python strings as an arrow ``large_string`` array."""
    return pl.Series(texts, dtype=pl.String).to_arrow(compat_level=pl.CompatLevel.oldest())


def _cut(data: pa.Buffer, edges: list[np.ndarray], end: int, mark: int) -> list[pl.Series]:
    """Texts cut from ``data``: per row, one text between each two ``edges`` (byte
    offsets), less the separator (``mark`` bytes) that ends each non-empty one; what lies
    between a row's last text and the next row's first is skipped (``end``: the last byte)."""
    columns = []  # per row: a text, what follows it[, a text, what follows it]
    for lo, hi in itertools.pairwise(edges):
        columns += [lo, np.where(hi > lo, hi - mark, hi)]
    bounds = np.append(np.column_stack(columns).ravel(), end)
    array = pa.LargeStringArray.from_buffers(len(bounds) - 1, pa.py_buffer(bounds), data)
    texts = pl.Series(pl.from_arrow(array))
    return [texts.gather_every(len(columns), i) for i in range(0, len(columns), 2)]


@dataclass(frozen=True)
class Part:
    """Some tags of a batch, row after row: how many each row has, and their written
    numbers."""

    counts: np.ndarray
    numbers: np.ndarray

    @classmethod
    def kept(cls, counts: np.ndarray, numbers: np.ndarray, kept: np.ndarray) -> Part:
        """The tags ``kept`` (a mask over ``numbers``) of rows holding ``counts`` each."""
        if kept.all():
            return cls(counts, numbers)
        running = running_count(kept)
        ends = np.cumsum(counts)
        kept_counts = (running[ends] - running[ends - counts]).astype(np.int64)
        return cls(kept_counts, numbers[kept])


@dataclass(frozen=True)
class Lists:
    """One list of written numbers per row: row ``i``'s are ``numbers[offsets[i]:offsets[i+1]]``."""

    offsets: np.ndarray
    numbers: np.ndarray

    @classmethod
    def of(cls, parts: list[Part], n: int) -> Lists:
        """Per row, the tags of every part, part after part (order kept within a part)."""
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(sum(p.counts for p in parts) if parts else np.zeros(n, np.int64), out=offsets[1:])
        filled = [p for p in parts if len(p.numbers)]
        if len(filled) == 1:  # one part's tags are row after row already (e621's export
            # without a tags table has only general tags)
            return cls(offsets, filled[0].numbers.astype(NUMBER, copy=False))
        numbers = np.empty(int(offsets[-1]), NUMBER)
        base = offsets[:-1].copy()
        for part in filled:
            first = np.cumsum(part.counts) - part.counts  # where each row's tags start in the part
            at = repeat(base - first, part.counts)
            at += np.arange(len(part.numbers), dtype=np.int32)
            numbers[at] = part.numbers
            base += part.counts
        return cls(offsets, numbers)

    @classmethod
    def from_series(cls, lists: pl.Series) -> Lists:
        """From a polars column of lists of numbers."""
        array = lists.rechunk().to_arrow()
        offsets = to_numpy(array.offsets).astype(np.int64, copy=False)
        numbers = to_numpy(array.values)[offsets[0] : offsets[-1]].astype(NUMBER, copy=False)
        return cls(offsets - offsets[0], numbers)

    def series(self) -> pl.Series:
        """As a polars column of lists of numbers."""
        return pl.Series(
            pl.from_arrow(
                pa.LargeListArray.from_arrays(to_arrow(self.offsets), to_arrow(self.numbers))
            )
        )

    def lengths(self) -> np.ndarray:
        """The number of tags of each row."""
        return np.diff(self.offsets)

    def rows(self) -> np.ndarray:
        """The row of each item (read-only: made once, shared by every caller)."""
        return self._rows

    @cached_property
    def _rows(self) -> np.ndarray:
        rows = groups(self.lengths())
        rows.flags.writeable = False
        return rows

    def reordered(self, order: np.ndarray) -> Lists:
        """These lists with their items in ``order`` (each row's items staying in the row,
        as :meth:`front_first` orders them): the same rows, found once for both."""
        lists = Lists(self.offsets, self.numbers[order])
        lists.__dict__["_rows"] = self._rows  # what the cached property would make again
        return lists

    def front_first(self, front: np.ndarray) -> np.ndarray:
        """The order that puts each row's ``front`` items (a mask over ``numbers``) before
        its others, each group in its order: ``numbers[order]`` are the lists reordered."""
        order: np.ndarray = np.lexsort((~front, self.rows()))
        return order

    def take(self, rows: np.ndarray) -> Lists:
        """The lists of ``rows`` only, in that order."""
        starts, lengths = self.offsets[rows], self.lengths()[rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        at = repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        return Lists(offsets, self.numbers[at])

    def strings(self, rules: TagRules, name: str) -> pl.Series:
        """The written tags, as a list of strings per row."""
        plain, _ = rules.arrays()
        values = _take(plain, self.numbers)
        array = pa.LargeListArray.from_arrays(to_arrow(self.offsets), values)
        return pl.Series(name, pl.from_arrow(array))

    def joined(
        self, rules: TagRules, split: np.ndarray | None = None, after: pl.Series | None = None
    ) -> list[pl.Series]:
        """Each row's tags joined by the separator; with ``split`` (a count per row), two
        texts per row: its first ``split`` tags and the rest; with ``after`` (a text per
        row, empty for none), also the tags and that text, joined by the separator.

        The written tags are taken with the separator after each, so the taken buffer holds
        every row's text one after the other, each with one separator too many at its end:
        the texts are cut from that buffer in place, the separators left between them."""
        _, marked = rules.arrays()
        numbers, offsets, source = self.numbers, self.offsets, marked
        if after is not None:  # each row's text after its tags, as one more written tag
            has = (after != "").fill_null(False).to_numpy()
            texts = after.filter(pl.Series(has)) + rules.spec.separator
            texts = texts.to_arrow(compat_level=pl.CompatLevel.oldest())
            source = pa.concat_arrays([marked, texts], memory_pool=pa.system_memory_pool())
            added = (len(marked) + np.arange(int(has.sum()))).astype(NUMBER)
            numbers = np.insert(numbers, offsets[1:][has], added)
            offsets = offsets + np.append(0, np.cumsum(has))
        taken = _take(source, numbers)
        ends = np.frombuffer(taken.buffers()[1], np.int64)[: len(taken) + 1]
        data = taken.buffers()[2] or pa.py_buffer(b"")
        mark = len(rules.spec.separator.encode())
        first, tags_end = offsets[:-1], offsets[:-1] + self.lengths()
        cuts = [first, tags_end] if split is None else [first, first + split, tags_end]
        out = _cut(data, [ends[c] for c in cuts], ends[offsets[-1]], mark)
        if after is not None:
            out += _cut(data, [ends[first], ends[offsets[1:]]], ends[offsets[-1]], mark)
        return out

    def deduplicated(self, limit: int = 0, dedupe: bool = True) -> Lists:
        """Each row's first occurrences (``dedupe``), at most ``limit`` of them (0: all)."""
        if not dedupe and not limit:
            return self
        lists = self.series()
        if dedupe:
            lists = lists.list.unique(maintain_order=True)
        if limit:
            lists = lists.list.head(limit)
        return Lists.from_series(lists)


def _flat(lists: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """Each row's number of items and the items one after the other (a missing list has
    none), read from the lists' arrow layout chunk by chunk without copying (joining the
    chunks first would copy every item's view)."""
    counts, items = [np.zeros(0, np.int64)], [pl.Series(dtype=pl.String)]
    for chunk in lists.get_chunks():
        array = chunk.to_arrow(compat_level=pl.CompatLevel.newest())
        offsets = to_numpy(array.offsets).astype(np.int64, copy=False)
        values = array.values.slice(offsets[0], offsets[-1] - offsets[0])
        counts.append(np.diff(offsets))
        items.append(pl.Series(pl.from_arrow(values), dtype=pl.String))
    return np.concatenate(counts), pl.concat(items)


class TagBatch:
    """A batch of posts' tags (of one site) as flat arrays, category by category: each
    row's number of tags, each tag's code and written number (-1: dropped)."""

    def __init__(self, frame: pl.DataFrame, categories: tuple[str, ...], rules: TagRules):
        self.n, self.rules = len(frame), rules
        present = [c for c in categories if f"tags_{c}" in frame.columns]
        columns = [frame[f"tags_{c}"] for c in present]
        columns = [s if s.dtype == pl.List(pl.String) else s.cast(pl.List(pl.String))
                   for s in columns]  # fmt: skip
        flat = [_flat(s) for s in columns]
        lengths = [lens for lens, _ in flat]
        values = pl.concat([pl.Series([], dtype=pl.String), *(v for _, v in flat)])
        if values.null_count():
            values = values.fill_null("")
        codes = rules.codes(values)
        numbers = rules.written[codes]
        self.blocks: dict[str, tuple[np.ndarray, ...]] = {}
        start = 0
        for category, lens in zip(present, lengths, strict=True):
            end = start + int(lens.sum())
            self.blocks[category] = (lens, codes[start:end], numbers[start:end])
            start = end

    def part(self, category: str, people: bool | None = None, subject: bool = False) -> Part | None:
        """The kept tags of ``category``: all of them (``people`` None), only the
        people-count tags (True) or all but them (False), and with ``subject`` only the
        subject tags; None without the category."""
        if category not in self.blocks:
            return None
        counts, codes, numbers = self.blocks[category]
        kept = numbers >= 0
        if people is not None:
            is_people = self.rules.people[codes]
            kept &= is_people if people else ~is_people
        if subject:
            kept &= self.rules.subject[codes]
        return Part.kept(counts, numbers, kept)

    def lists(self, parts: list[Part | None]) -> Lists:
        """Per row, the tags of ``parts`` one after the other."""
        return Lists.of([p for p in parts if p is not None], self.n)


def extra_part(extras: pl.Series, rules: TagRules) -> Part:
    """Extra tags (one list of texts per row, written as they are) as a part."""
    lengths, flat = _flat(extras)
    distinct = flat.unique(maintain_order=True)
    numbers = flat.replace_strict(distinct, rules.number(distinct.to_list()), return_dtype=pl.Int32)
    return Part(lengths, numbers.to_numpy())
