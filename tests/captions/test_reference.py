"""The fast captions (``build_captions``: tag codes, threads, tables) against the plain
reference (``reference.py``), over hundreds of random specs: every option, budgets from 8 to
225, separators, NL positions and merges, on demo posts of both sites and hostile tags.
Every caption is byte-equal, and every budgeted line is within its budget. Specs carry
random variants too: the variants of a post are built together, sharing what their specs
agree on, and each must equal the reference for its own spec."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timezone

import polars as pl
import pytest

from e6ingest import dataset
from e6ingest.captions import CaptionSpec, build_captions, variant_rarity, with_variants
from e6ingest.captions.budget import Ranked
from e6ingest.captions.implications import close_transitively
from e6ingest.captions.spec import DEFAULT_META_FILTER, DEFAULT_PERIODS
from e6ingest.captions.tokens import count_tokens
from tests.captions.reference import CATEGORIES, reference_captions

HOSTILE = [
    "^_^", ">_<", "o_o", ":3", "^_^;", "a_b", "to_heart_(series)", "(fate)", "\\(escaped\\)",
    "1girl", "2boys", "6+others", "solo", "multiple_girls", "no_humans", "long_hair",
    "very_long_tag_" + "x" * 120, "ünïcödé_täg", "日本語", "emoji_🦊", "tag,with,commas",
    "&amp;", "a&amp;b", "tag|||inside", "'s", "don't", "12345", "...", "!!!", "a" * 3,
    "hi_res", "absurd_res", "translated", "bad_id", "artist_request", "tagme", "x" * 2,
]  # fmt: skip
SENTENCES = [
    "A red panda sits on a mossy log, looking at the viewer.",
    "Two foxes play in the snow; one of them is wearing a scarf.",
    "An anthro dragon stands in a city at night, with neon signs behind it!",
    "The image shows a close-up of a cat's face: green eyes, white whiskers.",
    "A long description " + "that keeps going " * 30 + "and ends here.",
    "Tom &amp; Jerry: a cat & a mouse, together again.",
    "  Spaces around this one, and a tab\tinside.  ",
]


def _demo_posts(small_demo) -> list[dict]:
    posts = []
    for name in ("e621", "danbooru2024"):
        frame = dataset.load_metadata(name, mirror=small_demo).collect()
        posts += frame.head(60).to_dicts()
    return posts


def _hostile_posts(rng: random.Random, start: int) -> list[dict]:
    posts = []
    for i in range(30):
        created = datetime(rng.randint(2005, 2025), 1, 1, tzinfo=timezone.utc)
        post = {"id": start + i, "site": rng.choice(["e621", "danbooru"]),
                "rating": rng.choice(["s", "q", "e", "g"]), "score": rng.randint(-5, 300),
                "created_at": created}  # fmt: skip
        for c in CATEGORIES:
            post[f"tags_{c}"] = rng.sample(HOSTILE, rng.randint(0, 6)) if rng.random() < 0.7 else []
        if i % 7 == 0:
            post["created_at"], post["score"] = None, None
        if i % 11 == 0:
            post["tags_general"] = [*post["tags_general"], None, ""]
        posts.append(post)
    return posts


def _random_spec(rng: random.Random, tags: list[str]) -> CaptionSpec:
    def maybe(value, default, p=0.3):
        return value if rng.random() < p else default

    order = None
    if rng.random() < 0.3:
        order = tuple(rng.sample(CATEGORIES, rng.randint(1, len(CATEGORIES))))
    budget = rng.choice([0, 0, 8, 12, 20, 30, 50, 75, 75, 150, 225])
    return CaptionSpec(
        order=order,
        underscores_to_spaces=maybe(False, True, 0.2),
        escape_parentheses=maybe(True, False),
        blacklist=tuple(rng.sample(tags, min(3, len(tags)))) + maybe(("*_res",), ()),
        meta_filter=maybe((), DEFAULT_META_FILTER, 0.2),
        dedupe=maybe(False, True, 0.2),
        max_tags=maybe(rng.randint(1, 12), 0),
        people_first=maybe(True, False, 0.4),
        rating_tag=maybe(True, False, 0.4),
        quality_tag=maybe(True, False),
        date_tag=rng.choice(["none", "none", "year", "period"]),
        periods=DEFAULT_PERIODS,
        extras_first=maybe(True, False),
        separator=rng.choice([", ", ", ", " ", ",", " | ", "; "]),
        keep_tokens_separator=maybe("|||", "", 0.35),
        fixed_categories=maybe(("artist", "species"), ("artist", "character", "copyright"), 0.2),
        merge=rng.choice([None, "tags", "nl", "tags+nl", "tags+nl", "alternatives"]),
        nl_position=maybe("head", "end"),
        max_tokens=budget,
        token_priority=rng.choice(["rare", "common", "order"]),
        prune_implied=maybe(True, False),
        subject_tags=maybe(("solo", "long_hair", "anthro"), ("male", "female", "anthro"), 0.4),
        subject_categories=maybe((), ("species",), 0.3),
        variants=_random_variants(rng),
    )


VARIANT_OPTIONS = {
    "max_tokens": [0, 8, 12, 20, 30, 75, 225],
    "merge": ["tags", "nl", "tags+nl", "alternatives"],
    "token_priority": ["rare", "common", "order"],
    "separator": [", ", " ", ", "],
    "people_first": [True, False],
    "rating_tag": [True, False],
    "quality_tag": [True, False],
    "keep_tokens_separator": ["", "|||"],
    "max_tags": [0, 3, 10],
    "nl_position": ["end", "head"],
    "dedupe": [True, False],
    "order": [("artist", "general"), ("general", "character", "artist", "meta")],
    "underscores_to_spaces": [True, False],  # a rarity of its own: tags written otherwise
    "escape_parentheses": [True, False],
}


def _random_variants(rng: random.Random) -> dict:
    """Up to three variants, most differing only in their budget (as the presets do), some
    in a few other options."""
    variants = {}
    for i in range(rng.choice([0, 0, 1, 2, 3])):
        options = {"max_tokens": rng.choice(VARIANT_OPTIONS["max_tokens"])}
        for name in rng.sample(sorted(VARIANT_OPTIONS), rng.choice([0, 0, 1, 2])):
            options[name] = rng.choice(VARIANT_OPTIONS[name])
        variants[f"v{i}"] = options
    return variants


def _inputs(rng: random.Random, posts: list[dict]):
    ids = [p["id"] for p in posts]
    nl = {i: rng.sample(SENTENCES, rng.randint(1, 2)) for i in rng.sample(ids, len(ids) // 2)}
    tags = sorted({t for p in posts for c in CATEGORIES for t in (p[f"tags_{c}"] or []) if t})
    aliases = {t: rng.choice(tags) for t in rng.sample(tags, min(8, len(tags)))}
    pairs = pl.DataFrame({"antecedent": rng.sample(tags, 10), "implied": rng.sample(tags, 10)})
    return nl, tags, aliases, close_transitively(pairs)


def _vocabulary(posts: list[dict]) -> dict:
    """Posts per tag, as the dataset has tags (its vocabulary)."""
    counts: dict = {}
    for post in posts:
        for c in CATEGORIES:
            for tag in post[f"tags_{c}"] or []:
                if tag:
                    counts[tag] = counts.get(tag, 0) + 1
    return counts


def _nl_frame(nl: dict) -> pl.DataFrame:
    return pl.DataFrame({"id": list(nl), "nl": list(nl.values())},
                        schema={"id": pl.Int64, "nl": pl.List(pl.String)})  # fmt: skip


def _check(posts, spec, nl, aliases, closure, vocabulary, nl_of=None) -> None:
    """The fast path's caption and variants equal the reference's, and fit their budgets;
    ``nl_of(spec)``: the NL texts of a spec's fields, when not ``nl`` for every spec."""
    nl_of = nl_of or (lambda _: nl)
    frame = pl.DataFrame(posts, infer_schema_length=None)
    rarity = None
    if vocabulary is not None:
        table = pl.DataFrame({"tag": list(vocabulary), "posts": list(vocabulary.values())},
                             schema={"tag": pl.String, "posts": pl.Int64})  # fmt: skip
        rarity = variant_rarity(table, spec)
    fast = with_variants(frame, spec, lambda s: _nl_frame(nl_of(s)), aliases=aliases,
                         rarity=rarity, implied=closure, batch_rows=37)  # fmt: skip
    implied = set(closure.iter_rows())
    expected = reference_captions(posts, spec, nl_of(spec), aliases, vocabulary, implied)
    got = list(zip(fast["caption"], fast["caption_tags"], strict=True))
    for post, want, have in zip(posts, expected, got, strict=True):
        assert have == want, (spec, post["id"])
    _check_budget(spec, [c for c, _ in got])
    for name in spec.variant_names[1:]:
        variant = spec.variant(name)
        expected = reference_captions(posts, variant, nl_of(variant), aliases, vocabulary,
                                      implied)  # fmt: skip
        got = fast["caption_variants"].struct.field(name).to_list()
        for post, (want, _), have in zip(posts, expected, got, strict=True):
            assert have == want, (name, variant, post["id"])
        _check_budget(variant, got)


def _check_budget(spec: CaptionSpec, captions: list[str]) -> None:
    """Every line that holds tags is within the spec's budget, by the tokenizer."""
    if spec.max_tokens:
        lines = [c.split("\n", 1)[0] if spec.merge_mode == "alternatives" else c
                 for c in captions]  # fmt: skip
        assert max(count_tokens(lines)) <= spec.max_tokens, spec


def _run(small_demo, seeds) -> None:
    base = _demo_posts(small_demo)
    for seed in seeds:
        rng = random.Random(seed)
        posts = base + _hostile_posts(rng, 10**9)
        nl, tags, aliases, closure = _inputs(rng, posts)
        spec = _random_spec(rng, tags)
        if not spec.nl_captions and spec.merge is None:
            spec = CaptionSpec(**{**spec.__dict__, "merge": "tags+nl"})
        vocabulary = _vocabulary(posts) if rng.random() < 0.7 else None
        _check(posts, spec, nl, aliases if rng.random() < 0.5 else {}, closure, vocabulary)


def test_the_fast_path_equals_the_reference_on_60_random_specs(small_demo):
    _run(small_demo, range(60))


@pytest.mark.slow
def test_the_fast_path_equals_the_reference_on_300_more_random_specs(small_demo):
    _run(small_demo, range(60, 360))


LONG_NL = " ".join(["A fluffy red panda sits on a mossy log in the forest, looking at you."] * 8)


def _post(i: int, artist=(), general=()) -> dict:
    post = {"id": i, "site": "e621", "rating": "s", "score": 1,
            "created_at": datetime(2020, 1, 1, tzinfo=timezone.utc)}  # fmt: skip
    post.update({f"tags_{c}": [] for c in CATEGORIES})
    post.update(tags_artist=list(artist), tags_general=list(general))
    return post


@pytest.mark.parametrize(
    ("artist", "general"),
    [((), ()), (("some_artist",), ()), (("some_artist",), [f"tag_{i}" for i in range(40)])],
)
def test_tags_nl_with_a_keep_tokens_separator_keeps_the_head_within_the_budget(artist, general):
    """Once raised UnboundLocalError (no tags), gave 76 tokens (an artist alone), and
    dropped the artist while keeping the NL text (more tags)."""
    spec = CaptionSpec(merge="tags+nl", keep_tokens_separator="|||", max_tokens=75)
    post = _post(1, artist, general)
    frame = pl.DataFrame([post])
    nl = pl.DataFrame({"id": [1], "nl": [[LONG_NL]]})
    caption = build_captions(frame, spec, nl=nl)["caption"][0]
    assert count_tokens([caption])[0] <= 75
    assert caption.startswith("some artist |||" if artist else "A fluffy red panda")
    assert "tag_" not in caption  # the general tags go before the NL text is cut
    assert [caption] == [c for c, _ in reference_captions([post], spec, {1: [LONG_NL]})]


def _people_first_variants(rng: random.Random, tags: list[str]) -> CaptionSpec:
    """A random spec whose caption keeps people-count tags in place and whose variants
    differ in their budget and in moving them first, as the standard presets do."""
    spec = _random_spec(rng, tags)
    merge = rng.choice(["tags", "tags+nl"])
    variants = {"short": {"people_first": True, "max_tokens": rng.choice([8, 12, 20, 30, 75]),
                          "merge": merge},
                "medium": {"max_tokens": rng.choice([20, 75, 225]), "merge": merge}}  # fmt: skip
    return replace(spec, people_first=False, max_tags=0, keep_tokens_separator="",
                   variants=variants)  # fmt: skip


def test_people_first_variants_reordered_from_the_caption_equal_the_reference(
    small_demo, monkeypatch
):
    """A variant that moves people-count tags first reorders the tag lists and ranking
    the other variants made (without building them again) and still gives the bytes the
    reference gives."""
    reordered = []
    original = Ranked.reordered
    monkeypatch.setattr(Ranked, "reordered",
                        lambda self, *a: reordered.append(1) or original(self, *a))  # fmt: skip
    base = _demo_posts(small_demo)
    for seed in range(40):
        rng = random.Random(1000 + seed)
        posts = base + _hostile_posts(rng, 10**9)
        nl, tags, aliases, closure = _inputs(rng, posts)
        spec = _people_first_variants(rng, tags)
        vocabulary = _vocabulary(posts) if rng.random() < 0.7 else None
        _check(posts, spec, nl, aliases if rng.random() < 0.5 else {}, closure, vocabulary)
    assert len(reordered) > 40  # most batches took the reordering


def test_variants_of_other_nl_texts_share_the_tags_and_equal_the_reference(small_demo):
    """Variants whose NL texts are other fields (as brief is) share the caption's tag lists
    and ranking, yet each gives the bytes the reference gives with its own texts."""
    base = _demo_posts(small_demo)
    for seed in range(20):
        rng = random.Random(2000 + seed)
        posts = base + _hostile_posts(rng, 10**9)
        regular, tags, aliases, closure = _inputs(rng, posts)
        texts = {("regular",): regular, ("brief",): _inputs(rng, posts)[0]}
        budgets = [8, 20, 75, 225]
        variants = {"brief": {"merge": "nl", "nl_fields": ("brief",),
                              "max_tokens": rng.choice(budgets)},
                    "tags+nl": {"nl_fields": ("brief",), "max_tokens": rng.choice(budgets)},
                    "medium": {"merge": "tags", "max_tokens": rng.choice(budgets)},
                    "short": {"merge": "tags", "people_first": True, "max_tokens": 20}}  # fmt: skip
        spec = replace(_random_spec(rng, tags), merge="tags+nl", nl_fields=("regular",),
                       max_tags=0, keep_tokens_separator="", variants=variants)  # fmt: skip
        vocabulary = _vocabulary(posts) if rng.random() < 0.7 else None
        _check(posts, spec, {}, aliases, closure, vocabulary, lambda s, t=texts: t[s.nl_fields])


def test_people_first_is_built_anew_when_two_tags_write_the_same_text(monkeypatch):
    """``multiple_girls`` (a people-count tag) and ``multiple girls`` (none) both write
    ``multiple girls``: moving people-count tags first is then no mere reordering of the
    caption's tags, and the variant is built anew, still equal to the reference."""
    reordered = []
    original = Ranked.reordered
    monkeypatch.setattr(Ranked, "reordered",
                        lambda self, *a: reordered.append(1) or original(self, *a))  # fmt: skip
    both = ["multiple_girls", "multiple girls"]
    posts = [_post(1, ["an_artist"], ["long_hair", *both, "solo"]),
             _post(2, ["other_artist"], ["smile", both[1], "1girl", both[0]])]  # fmt: skip
    spec = CaptionSpec(variants={"short": {"people_first": True, "max_tokens": 12},
                                 "medium": {"max_tokens": 75}})  # fmt: skip
    _check(posts, spec, {}, {}, close_transitively(_NO_PAIRS), None)
    assert not reordered
    short = with_variants(pl.DataFrame(posts), spec, lambda _: None)["caption_variants"]
    assert short.struct.field("short").to_list() == [
        "multiple girls, solo, an artist, long hair",
        "1girl, multiple girls, other artist, smile",
    ]


_NO_PAIRS = pl.DataFrame(schema={"antecedent": pl.String, "implied": pl.String})
