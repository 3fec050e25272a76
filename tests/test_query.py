"""Booru search syntax: every term, exact whole-tag matching, errors pointing at the term."""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
import pytest

from e6ingest.query import QueryError, parse_query, selection_query

POSTS = pl.DataFrame(
    {
        "id": [1, 2, 3, 4, 5],
        "rating": ["s", "e", "q", "g", "e"],
        "tags": [
            "1girl solo long_hair",
            "solo_focus 1boy comic",
            "astolfo_(fate) solo fate_(series)",
            "astolfo_(fate)_(cosplay) 1girl",
            "astolfo_(fate) solo comic",
        ],
        "score": [10, 50, 120, -3, 50],
        "fav_count": [5, 60, 200, 0, 99],
        "width": [800, 1024, 4000, 300, 1200],
        "height": [600, 1024, 3000, 20000, 900],
        "file_ext": ["jpg", "png", "png", "webm", "gif"],
        "created_at": [
            datetime(2019, 5, 1, tzinfo=timezone.utc),
            datetime(2022, 1, 1, tzinfo=timezone.utc),
            datetime(2022, 12, 31, 23, 0, tzinfo=timezone.utc),
            datetime(2023, 1, 1, tzinfo=timezone.utc),
            datetime(2024, 2, 29, tzinfo=timezone.utc),
        ],
    }
)


def ids(query: str) -> list[int]:
    return parse_query(query).apply(POSTS)["id"].to_list()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("solo", [1, 3, 5]),  # never solo_focus
        ("astolfo_(fate)", [3, 5]),  # never astolfo_(fate)_(cosplay)
        ("-solo", [2, 4]),
        ("astolfo_(fate) solo -comic", [3]),
        ("~comic ~long_hair", [1, 2, 5]),
        ("~comic ~long_hair -solo_focus", [1, 5]),
        ("astolfo*", [3, 4, 5]),
        ("*_(series)", [3]),
        ("rating:e,q", [2, 3, 5]),
        ("rating:explicit", [2, 5]),
        ("rating:safe", [1]),
        ("-rating:e", [1, 3, 4]),
        ("score:>=50", [2, 3, 5]),
        ("score:>50", [3]),
        ("score:<0", [4]),
        ("score:50", [2, 5]),
        ("favcount:10..100", [2, 5]),
        ("favcount:..5", [1, 4]),
        ("id:2..3", [2, 3]),
        ("id:4..", [4, 5]),
        ("id:1,3,5", [1, 3, 5]),
        ("id:..1,4..", [1, 4, 5]),
        ("score:<0,>50", [3, 4]),
        ("-id:2,3", [1, 4, 5]),
        ("date:2022,2024-02", [2, 3, 5]),
        ("width:>=1024", [2, 3, 5]),
        ("height:>16383", [4]),
        ("date:2022-01-01..2023-01-01", [2, 3, 4]),
        ("date:2022", [2, 3]),
        ("date:2024-02", [5]),
        ("date:9999", []),
        ("date:9999-12", []),
        ("date:9999-12-31", []),
        ("date:>=2023-01-01", [4, 5]),
        ("ext:png", [2, 3]),
        ("filetype:png,gif", [2, 3, 5]),
        ("", [1, 2, 3, 4, 5]),
    ],
)
def test_terms(query, expected):
    assert ids(query) == expected


def test_substring_matching_would_be_wrong():
    # What users do today: str.contains selects solo_focus and the cosplay tag too.
    naive = POSTS.filter(pl.col("tags").str.contains("solo", literal=True))["id"].to_list()
    assert naive == [1, 2, 3, 5]
    assert ids("solo") == [1, 3, 5]


def test_regex_characters_in_tags_are_literal():
    frame = pl.DataFrame({"tags": ["a.b c+d", "axb"], "id": [1, 2]})
    assert parse_query("a.b").apply(frame)["id"].to_list() == [1]
    assert parse_query("c+d").apply(frame)["id"].to_list() == [1]


def test_tags_with_colons_are_tags():
    frame = pl.DataFrame({"tags": ["re:zero solo", "solo"], "id": [1, 2]})
    assert parse_query("re:zero").apply(frame)["id"].to_list() == [1]


def test_rating_flag_and_query_combine_with_and():
    assert selection_query("solo", ("e", "q")).apply(POSTS)["id"].to_list() == [3, 5]


@pytest.mark.parametrize(
    ("query", "term", "reason"),
    [
        ("solo rating:x", "rating:x", "unknown rating"),
        ("score:>=abc", "score:>=abc", "not a valid value"),
        ("id:..", "id:..", "at least one bound"),
        ("id:1,,2", "id:1,,2", "an empty item in the list"),
        ("score:1,x", "score:1,x", "not a valid value"),
        ("date:2022-13-01", "date:2022-13-01", "not a valid value"),
        ("ratio:1:0", "ratio:1:0", "cannot be 0"),
        ("ratio:>0:0", "ratio:>0:0", "cannot be 0"),
        ("ratio:1:x", "ratio:1:x", "not a valid value"),
        ("solo *", "*", "wildcard"),
        ("--solo", "--solo", "one of - or ~"),
        ("ext:", "ext:", "needs a value"),
    ],
)
def test_malformed_terms_point_at_the_term(query, term, reason):
    with pytest.raises(QueryError) as info:
        parse_query(query)
    message = str(info.value)
    assert f"bad term {term!r}" in message and reason in message
    _first, pointer = message.splitlines()[:2]
    start = query.index(term) + len("query: ")
    assert pointer[start : start + len(term)] == "^" * len(term)


@pytest.mark.parametrize(
    "query",
    ["astolfo_(fate) solo -comic", "solo rating:e", "-solo", "~comic ~long_hair", "astolfo*", ""],
)
def test_two_pass_collect_equals_one_pass(query):
    frame = POSTS.vstack(
        POSTS.head(1).with_columns(id=pl.lit(6, pl.Int64), tags=pl.lit(None, pl.String))
    )
    q = parse_query(query)
    expected = q.apply(frame)["id"].to_list()
    assert q.collect(frame.lazy(), ["id"])["id"].to_list() == expected
    assert q.count(frame.lazy()) == len(expected)
    assert (6 in expected) == (query in ("-solo", ""))  # a post without tags matches negations


def test_anchors_are_required_plain_tags():
    assert parse_query("astolfo_(fate) solo -comic ~a ~b x* rating:e re:zero").anchors == (
        "astolfo_(fate)",
        "solo",
        "re:zero",
    )


# -- metatags, case, groups and the errors of issue-free queries ---------------------------

RICH = POSTS.with_columns(
    pl.Series("tags_general", [["a", "b"], ["c"], [], ["d", "e", "f"], ["g"]]),
    pl.Series("tags_artist", [["x"], [], ["y"], [], []]),
    pl.Series("md5", ["aa", "bb", "cc", "dd", "ee"]),
    pl.Series("parent_id", [None, 1, 1, None, 3], dtype=pl.Int64),
    pl.Series("is_deleted", [False, False, True, False, False]),
)


def rich(query: str, **kw) -> list[int]:
    return parse_query(query, **kw).apply(RICH)["id"].to_list()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("tagcount:3", [1, 2, 3, 5]),
        ("tagcount:<3", [4]),
        ("gentags:>=2", [1, 4]),
        ("arttags:1", [1, 3]),
        ("mpixels:>=1", [2, 3, 4, 5]),
        ("mpixels:0.4..0.6", [1]),
        ("ratio:4:3", [1, 3, 5]),
        ("ratio:<0.5", [4]),
        ("md5:bb,ee", [2, 5]),
        ("parent:1", [1, 2, 3]),
        ("parent:none", [1, 4]),
        ("parent:any", [2, 3, 5]),
        ("status:active", [1, 2, 4, 5]),
        ("status:any", [1, 2, 3, 4, 5]),
        ("SOLO", [1, 3, 5]),
        ("Astolfo_(Fate) Solo", [3, 5]),
        ("( solo comic )", [5]),
        ("~( solo comic ) ~1boy", [2, 5]),
        ("-( solo comic )", [1, 2, 3, 4]),
        ("(solo comic)", [5]),
        ("-(solo ~comic ~long_hair) 1girl", [4]),
        ("astolfo_(fate) ( solo -comic )", [3]),
        ("RATING:E", [2, 5]),
    ],
)
def test_metatags_case_and_groups(query, expected):
    assert rich(query) == expected


def test_status_deleted_needs_include_deleted():
    assert rich("status:deleted", include_deleted=True) == [3]
    with pytest.raises(QueryError, match="--include-deleted"):
        parse_query("status:deleted")


@pytest.mark.parametrize(
    ("query", "order"),
    [("order:score", ("score", True)), ("solo order:id_desc", ("id", True)),
     ("order:favcount_asc", ("fav_count", False)), ("order:random", ("random", False)),
     ("solo", None)],
)  # fmt: skip
def test_order(query, order):
    assert parse_query(query).order == order


@pytest.mark.parametrize(
    ("query", "term", "reason"),
    [
        ("solo -", "-", "needs a tag or a group"),
        ("~ solo", "~", "needs a tag or a group"),
        ("( solo", "(", "never closed"),
        ("solo )", ")", "no parenthesis to close"),
        ("solo)", "solo)", "no parenthesis to close"),
        ("( )", ")", "an empty group"),
        ("user:albert", "user:albert", "cannot be answered from the metadata"),
        ("limit:10", "limit:10", "--limit"),
        ("order:rank", "order:rank", "order: takes"),
        ("-order:score", "-order:score", "stands alone"),
        ("rating:g", "rating:g", "its ratings are s (safe)"),
        ("mpixels:x", "mpixels:x", "not a valid value"),
    ],
)
def test_more_malformed_terms(query, term, reason):
    with pytest.raises(QueryError) as info:
        parse_query(query, site="e621")
    message = str(info.value)
    assert f"bad term {term!r}" in message and reason in message
    pointer = message.splitlines()[1]
    start = query.rindex(term) + len("query: ")
    assert pointer[start : start + len(term)] == "^" * len(term)


def test_ratings_are_per_site():
    assert rich("rating:g", site="danbooru") == [4]
    with pytest.raises(QueryError, match="general") as info:
        parse_query("rating:safe", site="danbooru")
    assert "sensitive" in str(info.value)
    assert rich("rating:safe", site="e621") == [1]


def test_smileys_with_parentheses_are_tags():
    frame = pl.DataFrame({"tags": [":) solo", ";) x"], "id": [1, 2]})
    assert parse_query(":)").apply(frame)["id"].to_list() == [1]
    assert parse_query(";) x").apply(frame)["id"].to_list() == [2]


def test_unknown_names_are_refused_unless_they_are_tags():
    from e6ingest.query.vocabulary import check_tags

    vocabulary = pl.DataFrame({"tag": ["solo", "re:zero", "solo_focus"], "posts": [2, 1, 1]})
    assert check_tags(parse_query("re:zero"), vocabulary) == []
    for query in ("foo:bar", "tagcnt:>=3"):
        with pytest.raises(QueryError, match="is no metatag") as info:
            check_tags(parse_query(f"solo {query}"), vocabulary)
        assert "tagcount:" in str(info.value)  # the supported ones are listed
    warnings = check_tags(parse_query("solo_fcous"), vocabulary)
    assert warnings == ["tag 'solo_fcous' is on no post of this dataset; did you mean solo_focus?"]


def test_explain_empty_names_the_term():
    query = parse_query("solo no_such_tag")
    assert query.explain_empty(POSTS.lazy()) == "'no_such_tag' matches no post"
    both = parse_query("solo long_hair comic")  # solo and comic: posts 5; long_hair, comic: none
    assert both.explain_empty(POSTS.lazy()) == (
        "'long_hair' and 'comic' match some posts each, but no post has both"
    )
    three = parse_query("1girl solo -long_hair")  # every pair has a post, the three none
    assert three.explain_empty(POSTS.lazy()) == (
        "each term matches some posts, but no post has all of '1girl', 'solo', '-long_hair'"
    )


def test_explain_empty_says_when_there_is_no_post_to_select_from(tmp_path, capsys):
    """Metadata whose every post is deleted (left out) explains the empty selection by that,
    not by blaming the first term of the query."""
    from e6ingest.cli import main
    from tests.conftest import E621_2024_ROWS

    path = tmp_path / "posts.parquet"
    pl.DataFrame(E621_2024_ROWS).with_columns(is_deleted=pl.lit("t")).write_parquet(path)
    out = tmp_path / "captions.jsonl"
    assert main(["captions", "--metadata", str(path), "--query", "solo", "--out", str(out)]) == 2
    said = capsys.readouterr().err
    assert "the selection is empty: the metadata holds no post that is not deleted" in said
    nothing = POSTS.lazy().filter(pl.lit(False))
    assert parse_query("solo", include_deleted=True).explain_empty(nothing) == (
        "the metadata holds no post"
    )


def test_sample_is_deterministic_and_limit_follows_order():
    from e6ingest.query import Subset

    frame = pl.DataFrame({"id": range(1, 5001), "score": [i % 97 for i in range(1, 5001)]})
    first = Subset(sample=100, seed=3).pick(frame.lazy()).collect()["id"].to_list()
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=1).lazy()
    again = Subset(sample=100, seed=3).pick(shuffled).collect()["id"].to_list()
    other = Subset(sample=100, seed=4).pick(frame.lazy()).collect()["id"].to_list()
    assert sorted(first) == sorted(again) and len(set(first)) == 100
    assert set(first) != set(other)
    assert 1500 < sum(first) / len(first) < 3500  # spread over the ids, not the first ones
    top = Subset(limit=3).pick(frame.lazy(), ("score", True)).collect()
    assert top["score"].to_list() == [96, 96, 96] and top["id"].to_list() == [96, 193, 290]
    assert Subset(limit=2).pick(frame.lazy()).collect()["id"].to_list() == [1, 2]


@pytest.mark.parametrize("seed", range(40))
def test_kept_rows_are_the_rows_pick_keeps_in_its_order(seed):
    """``kept_rows`` picks from the small columns, then reads the wide rows by id: the same
    rows, in the same order, as ``pick`` over the whole rows."""
    import random

    from e6ingest.query import Subset

    rng = random.Random(seed)
    n = rng.randrange(0, 300)
    ids = rng.sample(range(1, 10_000), n)
    frame = pl.LazyFrame({
        "id": ids,
        "score": [rng.randrange(-5, 5) for _ in ids],
        "fav_count": [rng.choice([None, 1, 2, 3]) for _ in ids],
        "tags": [[f"t{rng.randrange(9)}" for _ in range(rng.randrange(4))] for _ in ids],
    })  # fmt: skip
    amount = rng.choice([1, 5, 50, 400])
    subset = rng.choice([Subset(sample=amount, seed=rng.randrange(9)), Subset(limit=amount)])
    order = rng.choice(
        [None, ("id", True), ("score", False), ("fav_count", True), ("random", False)]
    )
    expected = subset.pick(frame, order).collect()
    assert subset.kept_rows(frame, order).collect().equals(expected)
