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
        ("width:>=1024", [2, 3, 5]),
        ("height:>16383", [4]),
        ("date:2022-01-01..2023-01-01", [2, 3, 4]),
        ("date:2022", [2, 3]),
        ("date:2024-02", [5]),
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
        ("date:2022-13-01", "date:2022-13-01", "not a valid value"),
        ("solo *", "*", "wildcard"),
        ("--solo", "--solo", "one of - or ~"),
        ("ext:", "ext:", "file extension"),
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
