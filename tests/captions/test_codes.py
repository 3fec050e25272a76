"""Captions on tag codes: placement, joining, and the two ways a caption is written
(one buffer for tags and NL text; the general render) agreeing with each other."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest

from e6ingest.captions import CaptionSpec, build_captions
from e6ingest.captions.codes import Lists, Part
from e6ingest.captions.session import Captioning
from tests.captions.test_build import post


def _numbers(lists: Lists) -> list[list[int]]:
    return [lists.numbers[a:b].tolist() for a, b in itertools.pairwise(lists.offsets)]


def test_parts_are_placed_row_by_row_part_after_part():
    first = Part(np.array([2, 0, 1, 0]), np.array([10, 11, 12]))
    second = Part(np.array([0, 1, 2, 0]), np.array([20, 21, 22]))
    lists = Lists.of([first, second], n=4)
    assert _numbers(lists) == [[10, 11], [20], [12, 21, 22], []]
    assert _numbers(lists.deduplicated(limit=2)) == [[10, 11], [20], [12, 21], []]


def test_parts_are_placed_as_a_plain_loop_places_them():
    """``Lists.of`` against a loop over rows and parts: random parts, some of them empty,
    and one part with tags among empty ones (e621's export: only general tags)."""
    rng = np.random.default_rng(7)
    for case in range(200):
        n = int(rng.integers(0, 12))
        filled = rng.random(int(rng.integers(0, 5))) < (0.3 if case % 2 else 0.8)
        counts = [rng.integers(0, 4, n) * int(f) for f in filled]
        parts = [Part(c, rng.integers(0, 50, int(c.sum())).astype(np.int32)) for c in counts]
        starts = [np.concatenate([[0], np.cumsum(p.counts)]) for p in parts]
        want = [[int(x) for p, at in zip(parts, starts, strict=True)
                 for x in p.numbers[at[row] : at[row + 1]]] for row in range(n)]  # fmt: skip
        got = Lists.of(parts, n)
        assert _numbers(got) == want and got.numbers.dtype == np.int32


def test_front_items_come_first_as_a_plain_loop_puts_them():
    """``Lists.front_first`` against a loop over rows: each row's front items, then its
    others, each in their order; rows empty, all front, none front."""
    rng = np.random.default_rng(8)
    for case in range(200):
        counts = rng.integers(0, 6, int(rng.integers(0, 12)))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        lists = Lists(offsets, rng.integers(0, 50, int(offsets[-1])).astype(np.int32))
        front = rng.random(len(lists.numbers)) < (0.2, 0.5, 1.0, 0.0)[case % 4]
        want = []
        for lo, hi in itertools.pairwise(offsets.tolist()):
            items = list(range(lo, hi))
            want += [i for i in items if front[i]] + [i for i in items if not front[i]]
        assert lists.front_first(front).tolist() == want
        moved = lists.reordered(lists.front_first(front))
        assert moved.numbers.tolist() == lists.numbers[want].tolist()
        assert moved.rows().tolist() == np.repeat(np.arange(len(counts)), counts).tolist()


def test_a_part_keeps_its_rows_when_tags_are_dropped():
    part = Part.kept(np.array([2, 0, 3, 1]), np.array([1, 2, 3, 4, 5, 6]),
                     np.array([True, False, False, True, False, False]))  # fmt: skip
    assert part.counts.tolist() == [1, 0, 1, 0] and part.numbers.tolist() == [1, 4]
    assert _numbers(Lists.of([part], n=4)) == [[1], [], [4], []]


def test_joined_cuts_rows_and_splits_from_one_buffer():
    spec = CaptionSpec(separator=", ")
    rules = Captioning().rules(spec, {})
    numbers = rules.number(["long hair", "fox", "^_^"])
    lists = Lists(np.array([0, 3, 3, 4]), np.array([numbers[0], numbers[1], numbers[2],
                                                     numbers[1]], dtype=np.int32))  # fmt: skip
    (whole,) = lists.joined(rules)
    assert whole.to_list() == ["long hair, fox, ^_^", "", "fox"]
    head, rest = lists.joined(rules, split=np.array([1, 0, 1]))
    assert head.to_list() == ["long hair", "", "fox"]
    assert rest.to_list() == ["fox, ^_^", "", ""]
    tags, with_text = lists.joined(rules, after=pl.Series(["A fox.", "Alone.", ""]))
    assert tags.to_list() == ["long hair, fox, ^_^", "", "fox"]
    assert with_text.to_list() == ["long hair, fox, ^_^, A fox.", "Alone.", "fox"]


def test_empty_and_missing_tags_are_left_out():
    row = post(general=["a", "", None, "long_hair"], artist=None, meta=[""])
    captions = build_captions(pl.DataFrame([row]), CaptionSpec())["caption"]
    assert captions.to_list() == ["a, long hair"]


def test_tags_and_nl_text_each_alone_when_the_other_is_empty():
    rows = [post(general=["x"]) | {"id": 1}, post() | {"id": 2}, post(general=["y"]) | {"id": 3}]
    nl = pl.DataFrame({"id": [1, 2, 3], "nl": [["A cat."], ["A dog."], []]})
    spec = CaptionSpec(merge="tags+nl", nl_captions=("x",))
    out = build_captions(pl.DataFrame(rows), spec, nl=nl)
    assert out["caption"].to_list() == ["x, A cat.", "A dog.", "y"]
    assert out["caption_tags"].to_list() == ["x", "", "y"]


ROWS = [
    post(rating="e", general=["solo", "long_hair", "fox", "long_hair"], artist=["a_b"],
         meta=["hi_res"], character=["c_d"]) | {"id": 1},
    post(rating="s", general=["1girl", "^_^", "x"], copyright=["to_heart_(series)"]) | {"id": 2},
    post(rating="q") | {"id": 3},
]  # fmt: skip
NL = pl.DataFrame({"id": [1, 3], "nl": [["A fox, with long hair."], ["Nothing tagged."]]})


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"merge": "tags+nl"},
        {"merge": "alternatives"},
        {"merge": "tags+nl", "keep_tokens_separator": "|||"},
        {"merge": "tags+nl", "nl_position": "head", "keep_tokens_separator": "|||"},
        {"people_first": True, "rating_tag": True, "extras_first": True, "merge": "tags+nl"},
    ],
)
def test_a_budget_that_fits_everything_changes_nothing(options):
    """The token budget takes the tags as lists and renders them in general; without a
    budget, the tags are joined from their numbers (and NL text written with them)."""
    spec = CaptionSpec(nl_captions=("x",), **options)
    frame = pl.DataFrame(ROWS)
    plain = build_captions(frame, spec, nl=NL)
    budgeted = build_captions(frame, CaptionSpec(nl_captions=("x",), max_tokens=225, **options),
                              nl=NL)  # fmt: skip
    assert budgeted["caption"].to_list() == plain["caption"].to_list()
    assert budgeted["caption_tags"].to_list() == plain["caption_tags"].to_list()


def test_batches_in_threads_give_the_captions_of_one_batch():
    rows = [post(rating="es"[i % 2], general=[f"tag_{i % 7}", f"tag_{i % 5}", "solo"],
                 artist=[f"artist_{i % 3}"]) | {"id": i} for i in range(200)]  # fmt: skip
    nl = pl.DataFrame(
        {"id": list(range(0, 200, 3)), "nl": [[f"Text {i}."] for i in range(0, 200, 3)]}
    )
    spec = CaptionSpec(merge="tags+nl", nl_captions=("x",), rating_tag=True, people_first=True)
    frame = pl.DataFrame(rows)
    one = build_captions(frame, spec, nl=nl, aliases={"tag_1": "tag_2"}, batch_rows=1000)
    many = build_captions(frame, spec, nl=nl, aliases={"tag_1": "tag_2"}, batch_rows=7)
    assert many["caption"].to_list() == one["caption"].to_list()
    assert "tag 1," not in " ".join(one["caption"].to_list())  # aliased
    assert one["caption"][1] == "solo, artist 1, tag 2, sensitive"  # then deduplicated
    assert one["caption"][3] == "solo, artist 0, tag 3, sensitive, Text 3."


def test_tags_read_in_several_chunks_give_the_captions_of_one_chunk():
    """Metadata read a row group at a time holds its tag lists in several chunks; their
    tags are read chunk by chunk, in order, a slice across chunks included."""
    rows = [post(general=[f"tag_{i % 7}", None, f"tag_{i % 5}"] if i % 4 else None,
                 artist=[f"artist_{i % 3}"] if i % 3 else []) | {"id": i}
            for i in range(60)]  # fmt: skip
    one = pl.DataFrame(rows)
    chunked = pl.concat([one.slice(0, 25), one.slice(25, 10), one.slice(35)], rechunk=False)
    assert chunked["tags_general"].n_chunks() == 3
    spec = CaptionSpec(people_first=True)
    for start, length in ((0, 60), (20, 30), (30, 3)):
        expected = build_captions(one.slice(start, length), spec)["caption"].to_list()
        got = build_captions(chunked.slice(start, length), spec)["caption"].to_list()
        assert got == expected and len(got) == length


def test_rules_are_kept_per_spec_and_aliases():
    spec = CaptionSpec()
    with Captioning(threads=3) as captioning:
        assert captioning.rules(spec, {}) is captioning.rules(CaptionSpec(max_tokens=75), {})
        assert captioning.rules(spec, {"a": "b"}) is not captioning.rules(spec, {})
        assert captioning.rules(spec, {}) is not captioning.rules(CaptionSpec(separator=" "), {})
        assert captioning.rules(spec, {}) is not Captioning().rules(spec, {})  # its own
        assert captioning.map(lambda x: x * 2, [1, 2, 3]) == [2, 4, 6]
        assert captioning._pool is not None and captioning.threads == 3
    assert captioning._pool is None  # the threads stop with the work


def test_a_budget_with_a_separator_and_an_empty_head():
    """Posts without artist, character or copyright tags (columns of empty lists only)."""
    rows = [post(general=["solo", "long_hair"]) | {"id": 1}, post(general=["fox"]) | {"id": 2}]
    nl = pl.DataFrame({"id": [1], "nl": [["A text."]]})
    spec = CaptionSpec(keep_tokens_separator="|||", merge="tags+nl", nl_captions=("x",),
                       max_tokens=12)  # fmt: skip
    captions = build_captions(pl.DataFrame(rows), spec, nl=nl)["caption"].to_list()
    assert captions == ["||| solo, long hair, A text.", "||| fox"]


def test_a_post_without_a_site_keeps_its_row():
    rows = [
        post(site="e621", general=["a"]) | {"id": 1},
        post(site=None, general=["b"]) | {"id": 2},
    ]
    assert build_captions(pl.DataFrame(rows), CaptionSpec())["caption"].to_list() == ["a", "b"]


def test_nl_texts_unsorted_repeated_or_without_id():
    rows = [post(general=["a"]) | {"id": i} for i in (5, 1, 9)]
    nl = pl.DataFrame({"id": [9, None, 5, 9], "nl": [["Old."], ["Lost."], ["Five."], ["New."]]})
    spec = CaptionSpec(merge="tags+nl", nl_captions=("x",))
    out = build_captions(pl.DataFrame(rows), spec, nl=nl)
    assert out["caption"].to_list() == ["a, Five.", "a", "a, New."]  # a later row wins


@pytest.mark.parametrize("seed", range(20))
def test_each_written_text_has_its_posts_as_a_plain_join_gives(seed):
    """``text_posts``, a binary search in the table sorted once, against a plain left
    join per call, over texts numbered across several calls: texts the table lacks, texts
    differing only in case or a trailing space, non-ASCII, a null tag and null posts."""
    rng = np.random.default_rng(seed)
    words = ["a", "A", "a ", "b_c", "é", "猫", "", "z" * 30, *(f"t{i}" for i in range(40))]
    table = [w for w in words if rng.random() < 0.6]
    posts = [None if rng.random() < 0.1 else int(rng.integers(0, 10**7)) for _ in table]
    rarity = pl.DataFrame({"tag": [*table, None], "posts": [*posts, 5]},
                          schema={"tag": pl.String, "posts": pl.UInt32})  # fmt: skip
    captioning = Captioning(threads=1)
    rules = captioning.rules(CaptionSpec(), {})
    for _ in range(3):  # texts are numbered batch after batch
        rules.number([w for w in words if rng.random() < 0.3])
        got = captioning.text_posts(rules, rarity)
        joined = pl.DataFrame({"tag": rules.texts}, schema={"tag": pl.String}).join(
            rarity, on="tag", how="left", maintain_order="left", nulls_equal=False
        )
        assert got.tolist() == joined["posts"].fill_null(0).to_list()
    empty = rarity.clear()
    assert captioning.text_posts(rules, empty).tolist() == [0] * len(rules.texts)
