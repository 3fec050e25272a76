"""Captions built over frames: golden cases from the real sample rows, every option."""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
import pytest

from e6ingest.captions import CaptionSpec, build_captions, caption_frame
from e6ingest.metadata import scan_file
from e6ingest.metadata.tagtable import apply_tag_table, read_tag_table

UTC = timezone.utc


def post(site="danbooru", rating="s", score=10, year=2021, **tags) -> dict:
    row = {"id": 1, "site": site, "rating": rating, "score": score,
           "created_at": datetime(year, 6, 1, tzinfo=UTC)}  # fmt: skip
    for category in ("general", "artist", "character", "copyright", "meta", "species", "lore"):
        row[f"tags_{category}"] = tags.get(category, [])
    return row


def caption(spec: CaptionSpec, *rows: dict) -> list[str]:
    return build_captions(pl.DataFrame(list(rows)), spec)["caption"].to_list()


def test_danbooru_post_1_golden(danbooru_sample):
    frame = scan_file(danbooru_sample).filter(pl.col("id") == 1).collect()
    text = caption_frame(frame, CaptionSpec())["caption"][0]
    assert text.startswith(
        "kyogoku shin, kousaka tamaki, to heart (series), to heart 2, 1girl, 2000s (style), "
        ";p, animal ear fluff, animal ears, aqua panties, blue bow, blush, border, bow, "
    )
    assert text.endswith("very long hair, w arms, white border, white panties, white thighhighs")
    tags = text.split(", ")
    assert len(tags) == 1 + 1 + 2 + 61  # meta (bad_id bad_link commentary) filtered out
    assert not {"bad id", "bad link", "commentary"} & set(tags)


E621_TAG_TABLE = """id,name,category,post_count
1,fleurfurr,1,10
2,ailurid,5,10
3,mammal,5,10
4,red_panda,5,10
5,2024,7,10
6,hi_res,7,10
7,watermark,7,10
"""


def test_e621_without_and_with_a_tag_table(e621_newest_sample, tmp_path):
    frame = scan_file(e621_newest_sample).filter(pl.col("id") == 4999999).collect()
    plain = caption_frame(frame, CaptionSpec())["caption"][0]
    assert (
        plain
        == "anthro, blep, solo, fleurfurr, ailurid, mammal, red panda, 2024, hi res, watermark"
    )
    table_path = tmp_path / "tags.csv"
    table_path.write_text(E621_TAG_TABLE)
    restored = apply_tag_table(frame.lazy(), read_tag_table(table_path)).collect()
    assert caption_frame(restored, CaptionSpec())["caption"][0] == (
        "fleurfurr, ailurid, mammal, red panda, anthro, blep, solo, 2024, hi res, watermark"
    )


def test_an_unreadable_tag_table_is_one_line_naming_the_file(tmp_path):
    from e6ingest.metadata import SchemaError

    ragged = tmp_path / "tags.csv"
    ragged.write_text("id,name,category,post_count\n1,fox,5,10\n2,wolf,5,10,extra,fields\n")
    with pytest.raises(SchemaError) as refused:
        read_tag_table(ragged)
    said = str(refused.value)
    assert said == f"{ragged}: cannot read tag table: line 3 has 6 fields, the header 4"


ROW = post(
    general=["1girl", "solo", "long_hair", "^_^", ":3", "holding_(object)", "long_hair"],
    artist=["some_artist"],
    character=["hatsune_miku"],
    copyright=["vocaloid"],
    meta=["highres", "commentary_request", "bad_id"],
)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "some artist, hatsune miku, vocaloid, 1girl, solo, long hair, ^_^, :3, "
             "holding (object), highres"),
        ({"order": ("character", "general")},
         "hatsune miku, 1girl, solo, long hair, ^_^, :3, holding (object)"),
        ({"order": "general,artist"},
         "1girl, solo, long hair, ^_^, :3, holding (object), some artist"),
        ({"underscores_to_spaces": False},
         "some_artist, hatsune_miku, vocaloid, 1girl, solo, long_hair, ^_^, :3, "
         "holding_(object), highres"),
        ({"escape_parentheses": True},
         "some artist, hatsune miku, vocaloid, 1girl, solo, long hair, ^_^, :3, "
         "holding \\(object\\), highres"),
        ({"blacklist": ("long_*", "solo")},
         "some artist, hatsune miku, vocaloid, 1girl, ^_^, :3, holding (object), highres"),
        ({"blacklist": "Long hair, SOLO, hatsune miku"},  # written as the caption shows them
         "some artist, vocaloid, 1girl, ^_^, :3, holding (object), highres"),
        ({"meta_filter": ()},
         "some artist, hatsune miku, vocaloid, 1girl, solo, long hair, ^_^, :3, "
         "holding (object), highres, commentary request, bad id"),
        ({"meta_filter": ("*res", "*_request", "bad_id")},
         "some artist, hatsune miku, vocaloid, 1girl, solo, long hair, ^_^, :3, holding (object)"),
        ({"dedupe": False},
         "some artist, hatsune miku, vocaloid, 1girl, solo, long hair, ^_^, :3, "
         "holding (object), long hair, highres"),
        ({"max_tags": 4}, "some artist, hatsune miku, vocaloid, 1girl"),
        ({"people_first": True},
         "1girl, solo, some artist, hatsune miku, vocaloid, long hair, ^_^, :3, "
         "holding (object), highres"),
        ({"rating_tag": True, "order": ("artist",)}, "some artist, sensitive"),
        ({"rating_tag": True, "rating_names": {"s": "rating_sensitive"}, "order": ("artist",)},
         "some artist, rating_sensitive"),
        ({"date_tag": "year", "order": ("artist",)}, "some artist, year 2021"),
        ({"date_tag": "period", "order": ("artist",)}, "some artist, recent"),
        ({"date_tag": "year", "rating_tag": True, "extras_first": True, "order": ("artist",)},
         "sensitive, year 2021, some artist"),
        ({"separator": " "},
         "some artist hatsune miku vocaloid 1girl solo long hair ^_^ :3 holding (object) highres"),
        ({"keep_tokens_separator": "|||", "people_first": True},
         "1girl, solo, some artist, hatsune miku, vocaloid ||| long hair, ^_^, :3, "
         "holding (object), highres"),
    ],
)  # fmt: skip
def test_each_option(options, expected):
    assert caption(CaptionSpec(**options), ROW) == [expected]


def test_tag_lists_written_as_the_caption_shows_them_match_the_raw_tags():
    """blacklist, meta_filter and subject_tags name raw tags; written as a caption shows
    them (spaces, capitals) they match the same tags, never silently nothing."""
    shown = CaptionSpec(blacklist=("Long Hair", "SOLO"), meta_filter=("HighRes",),
                        subject_tags=(":3", "Holding (object)"), max_tokens=20)  # fmt: skip
    raw = CaptionSpec(blacklist=("long_hair", "solo"), meta_filter=("highres",),
                      subject_tags=(":3", "holding_(object)"), max_tokens=20)  # fmt: skip
    assert shown == raw
    assert caption(shown, ROW) == caption(raw, ROW) != caption(CaptionSpec(max_tokens=20), ROW)
    assert "holding (object)" in caption(shown, ROW)[0] and "solo" not in caption(shown, ROW)[0]


def test_all_options_combined(tmp_path):
    aliases = tmp_path / "aliases.csv"
    aliases.write_text("long_hair,very_long_hair\nvocaloid,vocaloid_(series)\n")
    spec = CaptionSpec(
        people_first=True, rating_tag=True, date_tag="year", extras_first=True,
        keep_tokens_separator="|||", escape_parentheses=True, blacklist=("^_^",),
        aliases=str(aliases), max_tags=9,
    )  # fmt: skip
    frame = caption_frame(pl.DataFrame([ROW]), spec)
    assert frame["caption"][0] == (
        "1girl, solo, sensitive, year 2021, some artist, hatsune miku, vocaloid \\(series\\) "
        "||| very long hair, :3"
    )


def test_e621_rating_names_and_order():
    row = post(site="e621", rating="s", general=["anthro"], species=["red_panda"],
               artist=["fleurfurr"], copyright=["nintendo"], character=["fox_mccloud"],
               lore=["male_(lore)"])  # fmt: skip
    assert caption(CaptionSpec(rating_tag=True), row) == [
        "fleurfurr, nintendo, fox mccloud, red panda, anthro, male (lore), safe"
    ]


def test_quality_tags_by_score_percentile_within_each_rating():
    rows = [post(rating="s", score=s, general=["a"]) | {"id": s} for s in range(100)]
    rows += [post(rating="e", score=1000 + s, general=["a"]) | {"id": 1000 + s} for s in range(20)]
    out = build_captions(pl.DataFrame(rows), CaptionSpec(quality_tag=True))
    by_id = dict(zip(out["id"], out["caption"], strict=True))
    assert by_id[99] == "a, masterpiece" and by_id[95] == "a, masterpiece"
    assert by_id[94] == "a, best quality" and by_id[85] == "a, best quality"
    assert by_id[60] == "a, good quality" and by_id[30] == "a, normal quality"
    assert by_id[0] == "a, worst quality" and by_id[29] == "a, worst quality"
    # the e posts are ranked among themselves, not against the s posts
    assert by_id[1000] == "a, worst quality" and by_id[1019] == "a, masterpiece"


def test_missing_categories_and_empty_posts():
    row = {"id": 5, "site": "danbooru", "rating": "g", "score": 0, "created_at": None,
           "tags_general": None}  # fmt: skip
    spec = CaptionSpec(date_tag="year", rating_tag=True)
    assert caption(spec, row) == ["safe"]


@pytest.mark.parametrize("batch_rows", [1, 2, 1000])
def test_sites_keep_their_own_defaults_and_row_order(batch_rows):
    rows = [
        post(site="e621", rating="s", general=["x"]) | {"id": 3},
        post(site="danbooru", rating="s", general=["y"]) | {"id": 3},
        post(site="e621", rating="e", general=["z"]) | {"id": 4},
    ]
    assert caption(CaptionSpec(rating_tag=True), *rows) == [
        "x, safe",
        "y, sensitive",
        "z, explicit",
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"order": ("general", "species_x")}, "unknown categories"),
        ({"merge": "both"}, "merge must be"),
        ({"date_tag": "decade"}, "date_tag"),
        ({"max_tags": -1}, "max_tags"),
        ({"quality_tiers": {"top": 2.0}}, "quality_tiers"),
        ({"separator": ""}, "separator must not be empty"),
        ({"separator": ",\n"}, "separator must be one line"),
        ({"keep_tokens_separator": "|\t|"}, "keep_tokens_separator must be one line"),
        ({"keep_tokens_separator": "\u2028"}, "keep_tokens_separator must be one line"),
        ({"rating_names": {"e": "explicit\r"}}, "rating_names.e must be one line"),
        ({"quality_tiers": {"best\x00": 0.9}}, "quality_tiers must be one line"),
        ({"periods": {"new\nest": 2022}}, "periods must be one line"),
        ({"variants": {"short": {"separator": "\n"}}}, "variants: short: separator must be"),
    ],
)
def test_spec_errors_name_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        CaptionSpec(**options)


def test_batches_are_at_most_the_size_asked_and_shared_evenly_by_the_threads():
    from e6ingest.captions.build import even_batch_rows

    for rows in (1, 2, 999, 62_500, 250_000, 250_001):
        for most, threads in ((25_000, 1), (25_000, 2), (7, 3), (1, 4)):
            size = even_batch_rows(rows, most, threads)
            batches = -(-rows // size)
            assert 1 <= size <= most
            last = rows - (batches - 1) * size
            if batches <= 4 * threads:  # few batches a thread: none left with a short one
                assert 2 * last >= size, (rows, most, threads)
    assert even_batch_rows(62_500, 25_000, 2) == 15_625  # 4 batches, not 25k, 25k, 12.5k
