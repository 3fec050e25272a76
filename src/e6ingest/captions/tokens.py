"""CLIP token counts, as SD/SDXL trainers count a caption against their window.

The text encoders of SD and SDXL share OpenAI CLIP's byte-level BPE (49,408 entries). Its
vocabulary file, ``clip/bpe_simple_vocab_16e6.txt.gz`` (MIT licence, ``clip/LICENSE``), is
shipped with e6ingest and turned into a ``tokenizers`` BPE the way CLIP reads it: text
unescaped (HTML entities), whitespace collapsed, NFC, lower case; split with CLIP's pattern
(contractions, runs of letters, single digits, runs of other symbols), bytes mapped to
characters, ``</w>`` closing each word. No torch.

Counts exclude the start and end tokens: a 77-token window holds 75 of a caption's tokens.
"""

from __future__ import annotations

import gzip
import html
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from tokenizers import Tokenizer

VOCAB_FILE = Path(__file__).parent / "clip" / "bpe_simple_vocab_16e6.txt.gz"
MERGES = 49152 - 256 - 2  # merges CLIP uses of the file
PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
WINDOWS = (75, 150, 225)  # 77-token encoders; sd-scripts --max_token_length 150 and 225


def _bytes_to_unicode() -> dict[int, str]:
    """The printable character standing for each byte (the GPT-2/CLIP byte alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


@lru_cache(maxsize=1)
def clip_tokenizer() -> Tokenizer:
    """The CLIP BPE as a ``tokenizers.Tokenizer`` (built once per process)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    lines = gzip.decompress(VOCAB_FILE.read_bytes()).decode("utf-8").split("\n")
    merges = [(first, second) for first, second in map(str.split, lines[1 : MERGES + 1])]
    alphabet = list(_bytes_to_unicode().values())
    vocab = [*alphabet, *(c + "</w>" for c in alphabet), *("".join(m) for m in merges)]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    model = models.BPE(
        {token: i for i, token in enumerate(vocab)}, merges,
        end_of_word_suffix="</w>", continuing_subword_prefix="", unk_token="<|endoftext|>",
    )  # fmt: skip
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _clean(text: str) -> str:
    return html.unescape(html.unescape(text)).strip()


def token_ids(text: str) -> list[int]:
    """The CLIP token ids of ``text`` (no start or end token)."""
    ids: list[int] = clip_tokenizer().encode(_clean(text), add_special_tokens=False).ids
    return ids


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


@dataclass(frozen=True)
class WordCounts:
    """Texts, each split on single spaces, with their words' CLIP tokens and bytes kept as
    running sums over every word counted together (:meth:`of`): a text's words are a range
    of them, so a part of the texts (:meth:`gather`) shares the sums."""

    texts: pl.Series
    spent: np.ndarray  # tokens of the words before each word (and of all, last)
    written: np.ndarray  # bytes of the words before each word, a space after each
    starts: np.ndarray  # per text: where its words start
    lengths: np.ndarray  # per text: how many words

    @classmethod
    def of(cls, texts: pl.Series, cost: np.ndarray, size: np.ndarray, lengths: np.ndarray
           ) -> WordCounts:  # fmt: skip
        """``texts`` with each word's ``cost`` (tokens) and ``size`` (bytes), the texts'
        words one after another, ``lengths`` words each."""
        spent = np.concatenate([[0], np.cumsum(cost, dtype=np.int64)])
        written = np.concatenate([[0], np.cumsum(size + 1, dtype=np.int64)])
        starts = np.cumsum(lengths) - lengths
        return cls(texts, spent, written, starts, lengths)

    @property
    def tokens(self) -> np.ndarray:
        """Per text: its CLIP tokens, the sum of its words' (CLIP's pre-tokens never span
        a space)."""
        tokens: np.ndarray = self.spent[self.starts + self.lengths] - self.spent[self.starts]
        return tokens

    def gather(self, rows: np.ndarray) -> WordCounts:
        """The texts at ``rows``, with their words."""
        texts, starts, lengths = self.texts.gather(rows), self.starts[rows], self.lengths[rows]
        return WordCounts(texts, self.spent, self.written, starts, lengths)


def per_text(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per text (of ``lengths`` words): the sum of its words' ``values``."""
    running = np.concatenate([[0], np.cumsum(values)])
    ends = np.cumsum(lengths)
    summed: np.ndarray = running[ends] - running[ends - lengths]
    return summed


def cut_at_words(counted: WordCounts, limits: np.ndarray) -> tuple[pl.Series, np.ndarray]:
    """The texts of ``counted`` (printable ASCII, no space at an end) cut as
    :func:`cut_to_tokens` cuts them, from their words alone. A text over its limit ends
    before its first word that does not fit whole (no text when that is its first word,
    or when the words before it hold no space: the tokenizer's cut at a word's start keeps
    none), then loses ``" ,;:"`` at its end. The texts and their tokens: -1 for a text that
    lost part of a word at its end."""
    total = counted.tokens
    gone = limits <= 0
    counts = np.where(gone, 0, total)
    over = np.flatnonzero((total > limits) & ~gone)
    out = counted.texts.clone().scatter(np.flatnonzero(gone), "")  # scatter writes in place
    if not len(over):
        return out, counts
    first, limit = counted.starts[over], limits[over]
    base = counted.spent[first]
    # its first word that does not fit: the first whose tokens and those before pass the
    # limit (the running sums never fall: a search finds it)
    at = np.searchsorted(counted.spent, base + limit, side="right") - 1
    kept, before = at - first, counted.spent[at] - base
    head = np.where(kept > 0, counted.written[at] - counted.written[first] - 1, 0)  # ASCII
    heads = counted.texts.gather(over).str.head(pl.Series(head))
    spaced = heads.str.strip_chars_end(" ").str.contains(" ", literal=True).to_numpy()
    empty = (kept == 0) | ((before == limit) & ~spaced)
    shorter = heads.str.strip_chars_end(" ,;:").scatter(np.flatnonzero(empty), "")
    whole_words = (shorter.str.len_bytes() == heads.str.len_bytes()).to_numpy()
    counts[over] = np.where(empty, 0, np.where(whole_words, before, -1))
    return out.scatter(over, shorter), counts


# CLIP's pre-tokens (PATTERN) of lower-case ASCII; a text is of PLAIN_TEXT (printable ASCII
# without "&", which could start an HTML entity) when lower-casing is all its normalising does
ASCII_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+"
PLAIN_TEXT = r"^[ -%'-~]*$"


def pre_tokens(texts: pl.Expr) -> pl.Expr:
    """Each text of ``PLAIN_TEXT`` cut into CLIP's pre-tokens, as the tokenizer cuts it
    (lower-cased first): the tokenizer encodes each pre-token alone, so a text's tokens are
    the sum of its pre-tokens' (``tests/captions/test_tokens.py`` holds the two alike)."""
    return texts.str.to_lowercase().str.extract_all(ASCII_PATTERN)


def count_tokens(texts: Sequence[str]) -> list[int]:
    """The CLIP token count of each text (no start or end token), in parallel."""
    if not texts:
        return []
    encodings = clip_tokenizer().encode_batch([_clean(t) for t in texts],
                                              add_special_tokens=False)  # fmt: skip
    return [len(e.ids) for e in encodings]


def _symbols_only(mark: str) -> bool:
    """Whether ``mark`` is punctuation or symbols only, none of which can join a pre-token
    or an HTML entity with what stands before it."""
    return bool(mark) and all(
        unicodedata.category(c)[0] in "PS" and c not in "&'" for c in mark
    )  # fmt: skip


def count_with_mark(texts: Sequence[str], alone: Sequence[int], mark: str) -> list[int]:
    """The CLIP token count of each text with ``mark`` right after it, given each text's
    own count: a text ending in a letter or digit (and holding no ``&``) followed by a mark
    of symbols ends one pre-token where the mark starts another, so the counts add; the
    other texts are tokenised with the mark."""
    if not _symbols_only(mark):
        return count_tokens([t + mark for t in texts])
    extra = count_tokens([mark])[0]
    out = [n + extra if t and "&" not in t and unicodedata.category(t[-1])[0] in "LN" else -1
           for t, n in zip(texts, alone, strict=True)]  # fmt: skip
    todo = [i for i, n in enumerate(out) if n < 0]
    for i, n in zip(todo, count_tokens([texts[i] + mark for i in todo]), strict=True):
        out[i] = n
    return out


STATS_SAMPLE = 10_000  # captions counted for statistics (an even spread of a larger set)


def token_stats(captions: Sequence[str]) -> dict[str, Any]:
    """CLIP token lengths of captions (their longest line): count, median, p90 and the share
    over each usual window (75, 150, 225). A set larger than ``STATS_SAMPLE`` is sampled
    evenly."""
    step = max(1, len(captions) // STATS_SAMPLE)
    chosen = [max(c.split("\n"), key=len) for c in captions[::step]]
    counts = sorted(count_tokens(chosen))
    if not counts:
        return {"captions": 0}

    def share(limit: int) -> float:
        return round(sum(n > limit for n in counts) / len(counts), 4)

    return {
        "captions": len(counts),
        "median": counts[len(counts) // 2],
        "p90": counts[min(len(counts) - 1, int(len(counts) * 0.9))],
        **{f"over_{w}": share(w) for w in WINDOWS},
        "histogram": histogram(counts),
    }


HISTOGRAM_STEP = 25  # tokens per bar; the last bar holds everything over WINDOWS[-1]


def histogram(counts: Sequence[int]) -> dict[str, int]:
    """How many captions have each number of tokens, in bars of :data:`HISTOGRAM_STEP`
    (``"0-24"``, ``"25-49"``... ``"225+"``)."""
    top = WINDOWS[-1]
    bars = {f"{lo}-{lo + HISTOGRAM_STEP - 1}": 0 for lo in range(0, top, HISTOGRAM_STEP)}
    bars[f"{top}+"] = 0
    names = list(bars)
    for n in counts:
        bars[names[min(n // HISTOGRAM_STEP, len(names) - 1)]] += 1
    return bars


BARS = " ▁▂▃▄▅▆▇█"


def describe_stats(stats: Mapping[str, Any]) -> str:
    """The statistics as lines: the caption's, then each variant's (median, p90, share over
    each window, and the histogram as a bar per 25 tokens, 0 to 225+)."""
    if not stats.get("captions"):
        return "caption tokens: no captions"
    lines = [f"caption tokens (CLIP, {stats['captions']:,} captions): {_line(stats)}"]
    variants = stats.get("variants") or {}
    width = max((len(name) for name in variants), default=0)
    lines += [f"  {name:<{width}}  {_line(s)}" for name, s in variants.items()]
    return "\n".join(lines)


def _line(stats: Mapping[str, Any]) -> str:
    if not stats.get("captions"):
        return "no captions"
    over = ", ".join(f"over {w}: {stats[f'over_{w}']:.0%}" for w in WINDOWS)
    bars = stats.get("histogram") or {}
    most = max(bars.values(), default=0) or 1
    drawn = "".join(BARS[round(n / most * (len(BARS) - 1))] for n in bars.values())
    return f"median {stats['median']}, p90 {stats['p90']}; {over} |{drawn}| 0..225+"
