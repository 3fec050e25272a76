"""Captions that fit: CLIP token counts as trainers count them, a budget that drops tags by
priority, implied-tag pruning, and the e621 tags table used without being asked for."""

from __future__ import annotations

import gc
import gzip
import random
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from functools import lru_cache
from itertools import pairwise

import numpy as np
import polars as pl
import pytest

from e6ingest.captions import CaptionSpec, build_captions, session
from e6ingest.captions.implications import close_transitively, prune_implied
from e6ingest.captions.session import Captioning, TextTokens
from e6ingest.captions.tokens import (
    VOCAB_FILE,
    count_tokens,
    cut_at_words,
    cut_to_tokens,
    token_ids,
)
from e6ingest.metadata import TAG_COLUMNS
from tests.captions.reference import reference_captions

# -- the tokenizer -------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _reference_bpe():
    """CLIP's published BPE, restated plainly: merges by rank over each word's characters
    (bytes mapped to printable characters), ``</w>`` on the last."""
    lines = gzip.decompress(VOCAB_FILE.read_bytes()).decode().split("\n")[1 : 49152 - 256 - 2 + 1]
    ranks = {tuple(line.split()): i for i, line in enumerate(lines)}
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars, n = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    byte_char = {b: chr(c) for b, c in zip(printable, chars, strict=True)}
    base = list(byte_char.values())
    vocab = base + [c + "</w>" for c in base] + ["".join(m) for m in ranks]
    return ranks, byte_char, {token: i for i, token in enumerate(vocab)}


def _reference_ids(text: str) -> list[int]:
    ranks, byte_char, encoder = _reference_bpe()
    text = re.sub(r"\s+", " ", text).strip().lower()
    pieces = re.findall(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+", text)
    ids = []
    for piece in pieces:
        word = [byte_char[b] for b in piece.encode()]
        word[-1] += "</w>"
        while len(word) > 1:
            pairs = [(ranks.get(pair, 1 << 30), i) for i, pair in enumerate(pairwise(word))]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            word[i : i + 2] = [word[i] + word[i + 1]]
        ids += [encoder[w] for w in word]
    return ids


def test_known_ids():
    assert token_ids("a photo of a cat") == [320, 1125, 539, 320, 2368]


@pytest.mark.parametrize(
    "text",
    ["1girl, long hair, blue eyes, smile", "astolfo (fate), fate/grand order",
     "A fox sitting in the snow. It looks up!", "absurd res, hi res, 2024, :3, ^_^",
     "red panda, ailurid, mammal, feral, solo", "gay (lore), anthro, 5 fingers"],
)  # fmt: skip
def test_ids_equal_the_published_bpe(text):
    assert token_ids(text) == _reference_ids(text)


def test_counts_exclude_start_and_end():
    assert count_tokens(["a photo of a cat", ""]) == [5, 0]


def test_texts_cut_at_their_words_equal_the_tokenizers_cut_and_count():
    """``cut_texts`` against the tokenizer's cut (:func:`cut_to_tokens`) and count, over
    random texts of plain and hostile words (double spaces, entities, tabs, symbols only),
    at one limit for all and at a limit per text (none, exact fits and over)."""
    rng = random.Random(5)
    plain = ["a", "fox", "don't", "12", "...", "panda,", "A", "Sits", ",", ":;", "x:"]
    hostile = [*plain, "ünï", "&amp;", "&", " ", "\t", ""]

    def text() -> str:
        words = rng.choices(hostile if rng.random() < 0.3 else plain, k=rng.randint(0, 30))
        return " ".join(words)

    texts = [text() for _ in range(400)]
    given = pl.Series([*texts, None])
    whole = [*texts, ""]
    per_text = [rng.randint(-1, 40) for _ in whole]
    plain_rows = [i for i, t in enumerate(whole) if t == t.strip(" ") and all(
        " " <= c <= "~" and c != "&" for c in t)]  # fmt: skip
    for limits in ([1] * len(whole), [5] * len(whole), [75] * len(whole), per_text):
        with Captioning(threads=1) as captioning:
            cut, counts = captioning.cut_texts(given, np.array(limits))
        assert cut.to_list() == cut_to_tokens(whole, limits)
        known = np.flatnonzero(counts >= 0)
        assert known.tolist() == plain_rows  # counted at their words: the plain ones
        assert counts[known].tolist() == count_tokens(cut.gather(known).to_list())
    with Captioning(threads=1) as captioning:  # one limit for all, as an int
        assert captioning.cut_texts(given, 5)[0].to_list() == cut_to_tokens(whole, [5] * 401)
        every_over = [t for t in texts if len(t) > 12 and t in [whole[i] for i in plain_rows]]
        assert len(every_over) > 50
        cut, counts = captioning.cut_texts(pl.Series(every_over), 2)
        assert cut.to_list() == cut_to_tokens(every_over, [2] * len(every_over))
        assert counts.tolist() == count_tokens(cut.to_list())


def test_word_counts_of_some_texts_equal_those_counted_alone():
    """``WordCounts.gather`` (rows in any order, repeated, none) against the same texts
    counted on their own: their tokens and their cuts at random limits; and each text's
    tokens the tokenizer's."""
    rng = random.Random(8)
    words = ["a", "fox", "it's", "", "12,", "Pokémon", "&amp;"]
    texts = [" ".join(rng.choices(words, k=rng.randint(0, 9))) for _ in range(60)]
    with Captioning(threads=1) as captioning:
        counted = captioning.word_counts(pl.Series([*texts, None]))
        assert counted.tokens.tolist() == count_tokens([*texts, ""])
        for rows in ([], [3], [59, 0, 0, 7], list(range(60, -1, -2))):
            part = counted.gather(np.array(rows, np.int64))
            alone = captioning.word_counts(
                pl.Series([[*texts, ""][i] for i in rows], dtype=pl.String)
            )
            assert part.texts.to_list() == alone.texts.to_list()
            assert part.tokens.tolist() == alone.tokens.tolist()
            limits = np.array([rng.randint(0, 12) for _ in rows], np.int64)
            cut, counts = cut_at_words(part, limits)
            cut_alone, counts_alone = cut_at_words(alone, limits)
            assert cut.to_list() == cut_alone.to_list()
            assert counts.tolist() == counts_alone.tolist()
        cut_at_words(counted, np.zeros(61, np.int64))  # a cut leaves the texts cut from as they are
        assert counted.texts.to_list() == [*texts, ""]


def test_text_tokens_count_each_text_once_across_calls_and_threads(monkeypatch):
    """``TextTokens`` against the tokenizer: each distinct text counted once over calls
    (the calls' own columns gone in between), right from several threads at once, and
    right again after its table, grown past ``TEXTS_KEPT``, starts afresh."""
    asked: list[str] = []

    def count(texts: list[str]) -> list[int]:
        asked.extend(texts)
        return count_tokens(texts)

    tokens = TextTokens(count)
    first = pl.Series(["cat", "a fox", "rokazu", "cat", ""])
    assert tokens.of(first).tolist() == count_tokens(first.to_list())
    del first
    gc.collect()
    second = pl.Series(["rokazu", "zebra", "a fox", "Pokémon &amp; co"])
    assert tokens.of(second).tolist() == count_tokens(second.to_list())
    assert sorted(asked) == sorted(["cat", "a fox", "rokazu", "", "zebra", "Pokémon &amp; co"])
    rng = random.Random(3)
    words = [f"w{i}x" for i in range(300)]
    batches = [pl.Series(rng.choices(words, k=400)) for _ in range(16)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(tokens.of, batches))
    for batch, result in zip(batches, results, strict=True):
        assert result.tolist() == count_tokens(batch.to_list())
    seen = len(asked)
    tokens.of(pl.concat([second, *batches]))  # all met before: none counted again
    assert len(asked) == seen
    monkeypatch.setattr(session, "TEXTS_KEPT", 50)
    for batch in batches[:3]:  # past 50 texts: a fresh table, and the same counts
        assert tokens.of(batch).tolist() == count_tokens(batch.to_list())


# -- the budget ----------------------------------------------------------------------------


def _post(**tags) -> dict:
    row = {"id": 1, "site": "e621", "rating": "e", "score": 3,
           "created_at": datetime(2021, 5, 1, tzinfo=timezone.utc)}  # fmt: skip
    row.update({c: [] for c in TAG_COLUMNS})
    row.update({f"tags_{k}": v for k, v in tags.items()})
    return row


GENERAL = [f"{colour}_{part}" for colour in ("red", "blue", "green", "black", "white", "pink")
           for part in ("hair", "eyes", "fur", "tail", "ears")]  # fmt: skip
POST = _post(artist=["some_artist"], character=["judy_hopps"], copyright=["zootopia"],
             species=["rabbit"], general=["solo", *GENERAL],
             meta=["hi_res", "absurd_res"])  # fmt: skip


@pytest.mark.parametrize("budget", [75, 40, 22])
def test_every_caption_fits_and_the_head_comes_first(budget):
    spec = CaptionSpec(max_tokens=budget, rating_tag=True, date_tag="year")
    caption = build_captions(pl.DataFrame([POST]), spec)["caption"][0]
    assert count_tokens([caption])[0] <= budget
    tags = caption.split(", ")
    assert tags[:3] == ["some artist", "zootopia", "judy hopps"]  # e621 order, all kept
    assert "solo" in tags and "explicit" in tags and "year 2021" in tags
    assert "rabbit" in tags  # species: the subject, kept with the head
    assert "hi res" not in tags  # meta goes first
    full = build_captions(pl.DataFrame([POST]), CaptionSpec(rating_tag=True, date_tag="year"))
    order = full["caption"][0].split(", ")
    assert tags == [t for t in order if t in tags]  # caption order kept


def test_subject_tags_stay_when_the_rarest_are_kept_first():
    """anthro, female, male are on most posts: rarest-first would drop them first."""
    post = _post(artist=["some_artist"], species=["red_panda"],
                 general=["anthro", "female", "male", *GENERAL])  # fmt: skip
    rarity = pl.DataFrame({"tag": ["anthro", "female", "male", *(t.replace("_", " ")
                                                                  for t in GENERAL)],
                           "posts": [900_000, 800_000, 700_000, *range(10, 40)]})  # fmt: skip
    caption = build_captions(pl.DataFrame([post]), CaptionSpec(max_tokens=20),
                             rarity=rarity)["caption"][0]  # fmt: skip
    assert {"anthro", "female", "male", "red panda"} <= set(caption.split(", "))
    plain = build_captions(pl.DataFrame([post]), CaptionSpec(max_tokens=20, subject_tags=(),
                           subject_categories=()), rarity=rarity)["caption"][0]  # fmt: skip
    assert "anthro" not in plain.split(", ")


@pytest.mark.parametrize("priority", ["rare", "common"])
def test_a_head_over_the_budget_keeps_its_first_tags_whatever_the_priority(priority):
    """The head is kept in caption order: ``2girls`` (on many posts) leads a short caption
    and the last names go, however rare (the head was once ranked by rarity too)."""
    post = _post(artist=["an_artist"], character=[f"character_{i}" for i in range(8)],
                 general=["2girls", "smile"])  # fmt: skip
    names = ["2girls", "smile", "an artist", *(f"character {i}" for i in range(8))]
    rarity = pl.DataFrame({"tag": names, "posts": [900_000, 800_000, *range(1, 10)]})
    spec = CaptionSpec(max_tokens=12, people_first=True, token_priority=priority)
    caption = build_captions(pl.DataFrame([post]), spec, rarity=rarity)["caption"][0]
    assert count_tokens([caption])[0] <= 12
    kept = caption.split(", ")
    assert kept[:3] == ["2girls", "an artist", "character 0"] and "character 7" not in kept
    full = ["2girls", "an artist", *(f"character {i}" for i in range(8))]
    assert kept == full[: len(kept)]
    assert [caption] == [c for c, _ in reference_captions([post], spec, vocabulary={
        t.replace(" ", "_"): n for t, n in rarity.iter_rows()})]  # fmt: skip


def test_priority_keeps_the_rarest_tags_first():
    rarity = pl.DataFrame({"tag": [t.replace("_", " ") for t in GENERAL],
                           "posts": list(range(len(GENERAL), 0, -1))})  # fmt: skip
    spec = CaptionSpec(max_tokens=30)
    rare = build_captions(pl.DataFrame([POST]), spec, rarity=rarity)["caption"][0]
    common = build_captions(pl.DataFrame([POST]), CaptionSpec(max_tokens=30,
                            token_priority="common"), rarity=rarity)["caption"][0]  # fmt: skip
    assert "pink ears" in rare and "red hair" not in rare  # the fewest posts win
    assert "red hair" in common and "pink ears" not in common


def test_natural_language_shares_the_budget():
    nl = pl.DataFrame({"id": [1], "nl": [["A rabbit officer stands in the city, smiling "
                                          "at the camera with her ears up."]]})  # fmt: skip
    for merge in ("tags+nl", "alternatives", "nl"):
        spec = CaptionSpec(max_tokens=24, merge=merge, nl_captions=("x",))
        caption = build_captions(pl.DataFrame([POST]), spec, nl=nl)["caption"][0]
        assert all(n <= 24 for n in count_tokens(caption.split("\n"))), (merge, caption)
    line = build_captions(pl.DataFrame([POST]), CaptionSpec(max_tokens=40, merge="tags+nl",
                          nl_captions=("x",)), nl=nl)["caption"][0]  # fmt: skip
    assert line.startswith("some artist, zootopia, judy hopps") and "A rabbit officer" in line


def test_natural_language_before_the_keep_tokens_separator():
    nl = pl.DataFrame({"id": [1], "nl": [["A rabbit, smiling."]]})
    spec = CaptionSpec(merge="tags+nl", nl_captions=("x",), keep_tokens_separator="|||",
                       nl_position="head")  # fmt: skip
    caption = build_captions(pl.DataFrame([POST]), spec, nl=nl)["caption"][0]
    head, tail = caption.split(" ||| ")
    assert head == "some artist, zootopia, judy hopps, A rabbit, smiling."
    assert "rabbit" in tail and "A rabbit" not in tail


# tags whose last character runs into the separator's comma, emoticons, digits, entities
AWKWARD = ["astolfo_(fate)", "^_^", ">_<", ":3", "^_^;", "2024", "3_toes", "k-on!", "!?",
           "tom_&amp;_jerry", "...", "o_o", "x", "hand_on_another's_chin"]  # fmt: skip


@pytest.mark.parametrize("merge", ["tags", "tags+nl", "alternatives"])
def test_counts_from_parts_equal_the_tokenizer_on_the_written_line(merge):
    from e6ingest.captions.budget import UNKNOWN, fit_lists
    from e6ingest.captions.build import _tag_lists
    from e6ingest.captions.session import Captioning

    posts = [_post(general=AWKWARD[i:] + GENERAL[: 3 * i], meta=["hi_res"]) | {"id": i}
             for i in range(len(AWKWARD))]  # fmt: skip
    frame = pl.DataFrame(posts).with_columns(pl.col("^tags_.*$").cast(pl.List(pl.String)))
    texts = ["A fox, waving.", "", "Two cats (black) sit!", "", "Ends with a comma,"]
    nl = pl.DataFrame({"id": list(range(len(posts))),
                       "nl": [[texts[i % len(texts)]] if texts[i % len(texts)] else []
                              for i in range(len(posts))]})  # fmt: skip
    named = nl.rename({"nl": "caption_nl"})
    for budget in (12, 30, 75):
        spec = CaptionSpec(max_tokens=budget, merge=merge, nl_captions=("x",), rating_tag=True)
        captioning = Captioning(threads=1)
        rules = captioning.rules(spec, {})
        lists = _tag_lists(frame, spec, "e621", rules, {})
        prepared = frame.join(named, on="id", how="left", maintain_order="left")
        joined = prepared["caption_nl"].fill_null([]).list.join(" ")
        fitted = fit_lists(lists, rules, budget, "order", None,
                           joined if merge == "tags+nl" else None, captioning)  # fmt: skip
        exact = fitted.exact.tolist()
        captions = build_captions(frame, spec, nl=nl, captioning=captioning)["caption"]
        lines = [c.split("\n", 1)[0] for c in captions]
        counted = count_tokens(lines)
        assert all(n <= budget for n in counted), (budget, lines)
        for line, n, estimate in zip(lines, counted, exact, strict=True):
            if estimate != UNKNOWN and estimate <= budget:
                assert estimate == n, (budget, line)
        assert exact.count(UNKNOWN) < len(exact) / 2  # most lines are not tokenised again


# -- implied tags ----------------------------------------------------------------------------


GRAPH = pl.DataFrame({"antecedent": ["fox", "canine", "canid", "red_panda", "ailurid"],
                      "implied": ["canine", "canid", "mammal", "ailurid", "mammal"]})  # fmt: skip


def test_closure_follows_chains():
    closure = close_transitively(GRAPH)
    implied_by_fox = sorted(closure.filter(pl.col("antecedent") == "fox")["implied"])
    assert implied_by_fox == ["canid", "canine", "mammal"]


def test_pruning_keeps_only_the_most_specific():
    frame = pl.DataFrame([_post(species=["canid", "canine", "fox", "mammal"],
                                general=["solo", "mammal_focus"]),
                          _post(species=["ailurid", "mammal"], general=["canine"])])  # fmt: skip
    pruned = prune_implied(frame, close_transitively(GRAPH))
    assert pruned["tags_species"].to_list() == [["fox"], ["ailurid"]]
    assert pruned["tags_general"].to_list() == [["solo", "mammal_focus"], ["canine"]]


def test_prune_implied_in_captions():
    spec = CaptionSpec(prune_implied=True)
    frame = pl.DataFrame([_post(species=["canid", "canine", "fox", "mammal"], general=["solo"])])
    caption = build_captions(frame, spec, implied=close_transitively(GRAPH))["caption"][0]
    assert caption == "fox, solo"


def test_a_tag_with_a_mark_counts_as_the_tokenizer_counts_it():
    """The shortcut (a tag's tokens plus the mark's) against the tokenizer on the text
    with the mark, over awkward and random tags and marks."""
    from e6ingest.captions.tokens import count_with_mark

    rng = random.Random(7)
    alphabet = "ab Z9_()'&;#!?^.,:-|/ éßΣς中ー\t\u00a0\u0301½"
    texts = [*AWKWARD, "ΑΣ", "x&amp", "tom_&amp", "it's", "a'", "½", "9", ""]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))) for _ in range(400)]
    for mark in (",", ";", "|", "|||", ":", ".", "&", "'", "-", "x", ",x", "。"):
        alone = count_tokens(texts)
        assert count_with_mark(texts, alone, mark) == count_tokens([t + mark for t in texts]), mark


def test_text_costs_summed_over_pieces_equal_the_tokenizer():
    """A written tag's tokens, summed over its pieces (CLIP's pre-tokens or its words, each
    distinct piece counted once), and with the separator's mark after it, against the
    tokenizer on the whole text."""
    from e6ingest.captions.codes import TagRules
    from e6ingest.captions.session import Captioning

    rng = random.Random(11)
    alphabet = "ab Z9_()'&;#!?^.,:-|/ éßΣς中ー\t\u00a0\u0301½"
    texts = [*AWKWARD, "a &amp b", "&amp lt;", "x  y", " lead", "trail ", "a \u0301b", "it 's"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(600)]
    texts = list(dict.fromkeys(texts))
    for mark in (",", "", "|"):
        rules = TagRules(CaptionSpec(separator=f"{mark} "), {})
        rules.number(texts)
        with Captioning() as captioning:
            alone, marked = captioning.text_costs(rules, mark)
        assert alone.tolist() == count_tokens(texts), mark
        assert marked.tolist() == count_tokens([t + mark for t in texts]), mark


def test_text_tokens_summed_over_pre_tokens_equal_the_tokenizer():
    """A text's tokens summed over its words, and a word's over CLIP's pre-tokens (printable
    ASCII without ``&``) or by the tokenizer (any other), each distinct piece counted once,
    against the tokenizer on the whole text: contractions in both cases, digits, runs of
    symbols, spaces, entities, empty and missing texts."""
    import polars as pl

    from e6ingest.captions.session import Captioning

    rng = random.Random(12)
    ascii_only = "aZ09'sStTdDmMlLrReEvV_()-:;!?.,/\\\"#$%*+<=>@[]^`{|}~  "
    mixed = ascii_only + "&é\t中"
    texts = [*AWKWARD, "it's", "IT'S", "we'RE", "'ll'd", "x''s", "1girl", "48610", "(series)"]
    texts += ["&amp;", "a &lt; b", "", " ", "Pokémon (series)", "tab\there"]
    for alphabet in (ascii_only, mixed):
        texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
                  for _ in range(800)]  # fmt: skip
    with Captioning() as captioning:
        got = captioning.text_tokens(pl.Series([*texts, None], dtype=pl.String)).tolist()
        again = captioning.text_tokens(pl.Series(texts[::-1], dtype=pl.String)).tolist()
    assert got == [*count_tokens(texts), 0]
    assert again == got[:-1][::-1]


def test_a_budget_orders_each_row_by_key_ties_in_caption_order_as_a_plain_sort():
    """``_row_order`` (one stable sort of a combined key) against Python's sort of (row,
    key, position), with keys narrow, negative and too wide to combine with the row."""
    import numpy as np

    from e6ingest.captions.budget import _row_order

    rng = random.Random(5)
    for case in range(200):
        rows = np.sort(np.array([rng.randrange(50) for _ in range(rng.randrange(0, 300))],
                                np.int64))  # fmt: skip
        wide = [2**62, 10**6, 40][case % 3]
        keys = np.array([rng.randrange(-wide, wide) for _ in rows], np.int64)
        if case % 5 == 0:
            keys //= 10**5  # many ties
        want = sorted(range(len(rows)), key=lambda i: (rows[i], keys[i], i))
        assert _row_order(rows, keys).tolist() == want


def test_a_budget_finds_a_rows_head_tags_as_a_plain_set_lookup():
    """``_member`` (only numbers somewhere in the other lists looked up by row) against a
    set of each row's other list: numbers shared between rows, in one row's list and
    another's whole only, repeated, and empty rows and lists."""
    import numpy as np

    from e6ingest.captions.budget import _member
    from e6ingest.captions.codes import Lists

    def lists(rows: list[list[int]]) -> Lists:
        offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
        return Lists(offsets, np.array([n for r in rows for n in r], np.int32))

    rng = random.Random(6)
    for case in range(200):
        n, width = rng.randrange(0, 30), rng.choice([3, 12, 200])
        whole = [rng.sample(range(width), rng.randrange(0, min(width, 9))) for _ in range(n)]
        other = [[rng.randrange(width) for _ in range(rng.randrange(0, 5 if case % 4 else 1))]
                 for _ in range(n)]  # fmt: skip
        want = [number in set(other[row]) for row, numbers in enumerate(whole)
                for number in numbers]  # fmt: skip
        assert _member(lists(whole), lists(other), width + 1).tolist() == want
