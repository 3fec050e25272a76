"""Each real schema becomes the canonical frame; bad files fail naming what is wrong."""

from __future__ import annotations

import random
import re
import unicodedata
from datetime import datetime, timezone

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from e6ingest.metadata import (
    CANONICAL_COLUMNS,
    SchemaError,
    collapse_separators,
    detect_schema,
    scan_file,
    scan_files,
    split_tags,
)


def test_danbooru2024_real_rows(danbooru_sample):
    assert detect_schema(danbooru_sample).name == "danbooru2024"
    frame = scan_file(danbooru_sample).collect()
    assert tuple(frame.columns) == CANONICAL_COLUMNS
    post = frame.filter(pl.col("id") == 1).row(0, named=True)
    assert post["site"] == "danbooru" and post["rating"] == "s"
    assert post["tags_artist"] == ["kyogoku_shin"]
    assert post["tags_character"] == ["kousaka_tamaki"]
    assert post["tags_copyright"] == ["to_heart_(series)", "to_heart_2"]
    assert post["tags_meta"] == ["bad_id", "bad_link", "commentary"]
    assert post["tags_general"][:3] == ["1girl", "2000s_(style)", ";p"]
    assert len(post["tags_general"]) == 61  # tag_count_general of the real row
    assert post["tags_species"] == [] and post["tags_lore"] == []
    assert (post["width"], post["height"], post["score"], post["fav_count"]) == (
        459,
        650,
        1519,
        1833,
    )
    assert post["parent_id"] == 57501 and post["is_deleted"] is False
    assert post["created_at"] == datetime(2005, 5, 24, 3, 35, 31, tzinfo=timezone.utc)
    assert " solo " in f" {post['tags']} "


def test_e621_2024_export(e621_2024_sample):
    assert detect_schema(e621_2024_sample).name == "e621_2024"
    frame = scan_file(e621_2024_sample).collect()
    post = frame.filter(pl.col("id") == 14).row(0, named=True)
    assert post["site"] == "e621" and post["rating"] == "e"
    assert "dragon" in post["tags_general"] and post["tags_artist"] == []  # no categories
    assert post["is_deleted"] is False
    assert frame.filter(pl.col("id") == 15)["is_deleted"].item() is True  # 't' flag
    assert post["created_at"].year == 2007 and post["width"] == 581


@pytest.mark.parametrize("stored", ["bool", "text"])
def test_the_deleted_flag_reads_alike_as_a_boolean_or_as_text(danbooru_sample, tmp_path, stored):
    """``is_deleted`` stored as a real boolean (with nulls) is read as it is, and as the
    strings 't'/'f'/'true' it is parsed: the same posts are deleted either way."""
    table = pq.read_table(danbooru_sample)
    flags = [True, None, False, True, None][: table.num_rows]
    column = pa.array(flags, pa.bool_())
    if stored == "text":
        short, long = {True: "t", False: "f"}, {True: "true", False: "false"}
        column = pa.array([(short if i % 2 else long).get(f) for i, f in enumerate(flags)])
    path = tmp_path / f"{stored}.parquet"
    index = table.schema.get_field_index("is_deleted")
    pq.write_table(table.set_column(index, "is_deleted", column), path)
    deleted = scan_file(path).collect()["is_deleted"].to_list()
    assert deleted == [bool(f) for f in flags]


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("2007-02-10 04:47:06.839393", datetime(2007, 2, 10, 4, 47, 6, 839393)),  # CSV export
        ("2007-02-10 04:47:06+00", datetime(2007, 2, 10, 4, 47, 6)),
        ("2007-02-10 00:47:06-0400", datetime(2007, 2, 10, 4, 47, 6)),
        ("2007-02-10T00:47:06.000-04:00", datetime(2007, 2, 10, 4, 47, 6)),
        ("2007-02-10T04:47:06", datetime(2007, 2, 10, 4, 47, 6)),
        ("2007-02-10", datetime(2007, 2, 10)),
        ("garbage", None),
        (datetime(2007, 2, 10, 4, 47, 6), datetime(2007, 2, 10, 4, 47, 6)),  # no time zone
    ],
)
def test_a_date_written_otherwise_is_read_as_utc(e621_2024_sample, tmp_path, stored, expected):
    """The export's ``created_at`` converted by hand (text from its CSV, a timestamp without
    a time zone) reads as the same UTC instant; text that is no date is a missing date."""
    path = tmp_path / "posts.parquet"
    table = pl.read_parquet(e621_2024_sample).with_columns(created_at=pl.lit(stored))
    table.write_parquet(path)
    created = scan_file(path).select("created_at").collect()["created_at"]
    utc = expected.replace(tzinfo=timezone.utc) if expected else None
    assert created.to_list() == [utc] * table.height


def test_a_date_column_of_another_type_fails_naming_the_file(e621_2024_sample, tmp_path):
    path = tmp_path / "posts.parquet"
    table = pl.read_parquet(e621_2024_sample)
    table.with_columns(pl.col("created_at").dt.epoch("s")).write_parquet(path)
    with pytest.raises(SchemaError, match=r"posts\.parquet: column 'created_at' is Int64"):
        scan_file(path)
    table.with_columns(pl.col("created_at").dt.time()).write_parquet(path)
    with pytest.raises(SchemaError, match="'created_at' is Time, neither a date nor text"):
        scan_file(path)


@pytest.mark.parametrize(
    "converted",
    [
        pl.col("id").cast(pl.String),
        pl.col("score").cast(pl.String),
        pl.col("parent_id").cast(pl.String),  # "123.0"
        pl.col("image_width").cast(pl.Float64),
        pl.col("rating").cast(pl.Categorical),
        pl.col("is_deleted").cast(pl.Categorical),
        pl.col("fav_count").cast(pl.Int32),
        (pl.col("is_deleted") == "t").cast(pl.Int8),  # 1 and 0
        pl.when(pl.col("is_deleted") == "t")
        .then(pl.lit("1"))
        .otherwise(pl.lit("0"))
        .alias("is_deleted"),
    ],
)
def test_columns_converted_by_hand_read_as_the_export(e621_2024_sample, tmp_path, converted):
    """A column of another type than the export's (text from a CSV, a float, a
    categorical) reads as the export's own."""
    path = tmp_path / "posts.parquet"
    pl.read_parquet(e621_2024_sample).with_columns(converted).write_parquet(path)
    assert_frame_equal(scan_file(path).collect(), scan_file(e621_2024_sample).collect())


@pytest.mark.parametrize(
    ("converted", "message"),
    [
        (pl.col("tag_string").str.split(" "), "column 'tag_string' is List(String), not text"),
        (pl.col("score").cast(pl.String) + "x", None),  # no number: a missing score
        (pl.col("md5").cast(pl.Binary), "column 'md5' is Binary, not text"),
    ],
)
def test_a_column_of_a_type_that_cannot_be_read(e621_2024_sample, tmp_path, converted, message):
    path = tmp_path / "posts.parquet"
    pl.read_parquet(e621_2024_sample).with_columns(converted).write_parquet(path)
    if message is None:
        assert scan_file(path).collect()["score"].null_count() == pl.read_parquet(path).height
        return
    with pytest.raises(SchemaError, match=f"posts\\.parquet: {re.escape(message)}"):
        scan_file(path).collect()


def test_e621_newest_table(e621_newest_sample):
    assert detect_schema(e621_newest_sample).name == "e621_newest"
    post = scan_file(e621_newest_sample).collect().row(0, named=True)
    assert post["id"] == 4999999 and post["tags_general"][-1] == "watermark"
    assert post["tags"].startswith("anthro blep solo")
    assert post["created_at"] == datetime(2024, 8, 21, 10, 10, 49, 344000, tzinfo=timezone.utc)


def test_e621_combination_newest_wins_and_deleted_dropped(e621_2024_sample, e621_newest_sample):
    frame = scan_files([e621_2024_sample, e621_newest_sample]).collect()
    assert sorted(frame["id"]) == [14, 4999999]  # 15 is deleted
    post = frame.filter(pl.col("id") == 14).row(0, named=True)
    assert post["tags_general"] == ["dragon", "retagged"] and post["rating"] == "q"
    everything = scan_files([e621_2024_sample, e621_newest_sample], include_deleted=True)
    assert sorted(everything.collect()["id"]) == [14, 15, 4999999]


def test_unknown_schema_names_file_expected_and_found(tmp_path):
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"id": [1], "rating": ["s"], "caption": ["x"]}), path)
    with pytest.raises(SchemaError) as info:
        detect_schema(path)
    message = str(info.value)
    assert str(path) in message and "needs columns" in message and "caption" in message


def test_declared_schema_missing_a_column(e621_newest_sample):
    with pytest.raises(SchemaError, match=r"table.parquet: schema 'e621_2024' needs columns"):
        scan_file(e621_newest_sample, "e621_2024")


def test_not_a_parquet_file(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(SchemaError, match=r"broken\.parquet: not a readable parquet"):
        scan_file(path)


def test_projection_reads_only_needed_columns(danbooru_sample):
    plan = scan_file(danbooru_sample).select("id", "rating", "tags").explain()
    assert "tag_string_general" not in plan and "media_asset" not in plan


# Unicode's White_Space property (what the regex's \s is); with the control characters (Cc),
# what separates tags
WHITE_SPACE = set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {
    chr(c) for c in range(0x2000, 0x200B)
}


def _split_plainly(text: str | None) -> list[str]:
    """The reference: characters one by one, a tag ended by any separator."""
    tags, tag = [], ""
    for char in f"{text or ''} ":  # a space ends the last tag
        if char in WHITE_SPACE or unicodedata.category(char) == "Cc":
            if tag:
                tags.append(tag)
            tag = ""
        else:
            tag += char
    return tags


def _collapsed_plainly(text: str | None) -> str | None:
    """The reference: characters one by one, each run of separators one space, none at
    either end."""
    if text is None:
        return None
    out = []
    for char in text:
        if char in WHITE_SPACE or unicodedata.category(char) == "Cc":
            if not out or out[-1] != " ":
                out.append(" ")
        else:
            out.append(char)
    return "".join(out).strip(" ")


def _tag_strings(seed: int) -> list[str | None]:
    """Random tag strings: odd ones (every kind of separator), and tags one space apart,
    some of printable ASCII (no separator but the space), some with two spaces between
    or a space at both ends."""
    rng = random.Random(seed)
    odd = "ab_(é猫 \t\n\r\x00\x1b\x7f\x85\xa0\u2028\u3000\u200b\u2003"  # \u200b: no space
    plain = "ab_(é猫\u200b"  # tags one space apart, as most tag strings are
    ascii = "ab_(:~!/"  # printable ASCII: no separator but the space
    texts: list[str | None] = [None, ""]
    for _ in range(2000):
        kind = rng.random()
        if kind < 0.3:
            texts.append("".join(rng.choices(odd, k=rng.randint(0, 12))))
        else:
            letters = plain if kind < 0.6 else ascii
            tags = ["".join(rng.choices(letters, k=rng.randint(1, 5))) for _ in range(4)]
            ends = " " if kind > 0.9 else ""  # a space before and after: stripped
            between = "  " if kind > 0.85 else " "  # two spaces: one separator
            texts.append(ends + between.join(tags[: rng.randint(0, 4)]) + ends)
    return texts


def _batches(texts: list[str | None]) -> list[list[str | None]]:
    """``texts``, those with no string for the separator regex alone, and the others."""
    plainly = [
        t is None or (t.isascii() and t.isprintable() and "  " not in t and t == t.strip(" "))
        for t in texts
    ]
    return [texts] + [
        [t for t, plain in zip(texts, plainly, strict=True) if plain == wanted]
        for wanted in (True, False)
    ]


@pytest.mark.parametrize("seed", range(5))
def test_tag_strings_split_as_a_plain_split_on_every_separator(seed):
    texts = _tag_strings(seed)
    frame = pl.DataFrame({"t": texts}, schema={"t": pl.String})
    split = frame.lazy().select(split_tags("t"))
    expected = [_split_plainly(t) for t in texts]
    assert split.collect()["t"].to_list() == expected
    assert split.collect(engine="streaming")["t"].to_list() == expected
    for strings in _batches(texts):
        alike = pl.DataFrame({"t": strings}, schema={"t": pl.String}).select(split_tags("t"))
        assert alike["t"].to_list() == [_split_plainly(t) for t in strings]


@pytest.mark.parametrize("seed", range(3))
def test_separator_runs_collapse_as_a_plain_walk_over_the_characters(seed):
    for strings in _batches(_tag_strings(seed)):
        frame = pl.DataFrame({"t": strings}, schema={"t": pl.String})
        collapsed = frame.select(collapse_separators(pl.col("t")))["t"]
        assert collapsed.to_list() == [_collapsed_plainly(t) for t in strings]


def test_tag_strings_split_without_importing_pandas():
    """Collapsing odd separators (double spaces, spaces at an end, non-ASCII text) goes
    through pyarrow without a Python value: pyarrow imports pandas (about 0.2 s of every
    ``captions`` run) to convert one."""
    import subprocess
    import sys

    code = (
        "import sys\nimport polars as pl\nfrom e6ingest.metadata import split_tags\n"
        "texts = pl.DataFrame({'t': ['a  b', ' \\u00e9 c ', None, 'x y']})\n"
        "print(texts.select(split_tags('t'))['t'].to_list(), 'pandas' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[['a', 'b'], ['é', 'c'], [], ['x', 'y']] False", done.stderr
