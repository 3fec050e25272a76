"""Natural-language captions and aliases from files, and the merge modes."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest

from e6ingest.captions import CaptionInputError, CaptionSpec, caption_frame, read_aliases
from e6ingest.captions.files import read_nl_captions


def nl_row(post_id, regular, brief, finish="STOP"):
    return {"id": post_id, "regular_summary": regular, "brief_summary": brief,
            "response_finish_reason": finish, "tags": ["ignored"]}  # fmt: skip


NL_ROWS = [
    nl_row(1, "A red panda sits on a log.\nIt is smiling.", "A smiling red panda.\r\n"),
    nl_row(2, "An unfinished descrip", "", finish="MAX_TOKENS"),
    nl_row(3, "", "   "),
    nl_row(4, "Only the long one.", None),
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def nl_file(tmp_path):
    return write_jsonl(tmp_path / "2024-04_grouped.jsonl", NL_ROWS)


@pytest.fixture
def posts():
    rows = [
        {"id": i, "site": "e621", "rating": "s", "score": 1, "created_at": None,
         "tags_general": ["red_panda", "solo"]}
        for i in (1, 2, 3, 4, 5)
    ]  # fmt: skip
    return pl.DataFrame(rows)


def test_texts_keep_one_space_between_words_whatever_separated_them(tmp_path):
    # ASCII sentences with one space pass as they are; every other run of spaces, tabs,
    # line breaks, control or Unicode spaces becomes one space, and the ends go
    texts = ["A plain sentence, as most are.", " Two  spaces\tand\x00a\x1fNUL ",
             "Über\u3000das\xa0Bild\u2028neu", "\r\n", "ends with a space "]  # fmt: skip
    rows = [nl_row(i, text, "Brief.") for i, text in enumerate(texts, 1)]
    nl = read_nl_captions(CaptionSpec(nl_captions=(str(write_jsonl(tmp_path / "t.jsonl", rows)),)))
    assert [texts[0] for texts in nl["nl"].to_list()] == [
        "A plain sentence, as most are.", "Two spaces and a NUL", "Über das Bild neu",
        "Brief.", "ends with a space",
    ]  # fmt: skip


def test_selection_rule(nl_file):
    nl = read_nl_captions(CaptionSpec(nl_captions=(str(nl_file),)))
    by_id = dict(zip(nl["id"], nl["nl"].to_list(), strict=True))
    assert by_id[1] == ["A red panda sits on a log. It is smiling.", "A smiling red panda."]
    assert by_id[2] == []  # the captioner did not finish
    assert by_id[3] == []  # empty and blank summaries
    assert by_id[4] == ["Only the long one."]
    anything = read_nl_captions(CaptionSpec(nl_captions=(str(nl_file),), nl_finished=""))
    assert dict(zip(anything["id"], anything["nl"].to_list(), strict=True))[2] == [
        "An unfinished descrip"
    ]
    brief = read_nl_captions(CaptionSpec(nl_captions=(str(nl_file),), nl_fields=("brief_summary",)))
    assert brief.filter(pl.col("id") == 1)["nl"].to_list() == [["A smiling red panda."]]


@pytest.mark.parametrize(
    ("merge", "expected_1", "expected_5"),
    [
        ("tags", "red panda, solo", "red panda, solo"),
        ("nl", "A red panda sits on a log. It is smiling. A smiling red panda.", "red panda, solo"),
        ("tags+nl",
         "red panda, solo, A red panda sits on a log. It is smiling. A smiling red panda.",
         "red panda, solo"),
        ("alternatives",
         "red panda, solo\nA red panda sits on a log. It is smiling.\nA smiling red panda.",
         "red panda, solo"),
    ],
)  # fmt: skip
def test_merge_modes(posts, nl_file, merge, expected_1, expected_5):
    spec = CaptionSpec(nl_captions=(str(nl_file),), merge=merge)
    out = caption_frame(posts, spec)
    by_id = dict(zip(out["id"], out["caption"], strict=True))
    assert by_id[1] == expected_1 and by_id[5] == expected_5
    assert by_id[2] == "red panda, solo"  # unfinished: tags only, whatever the mode


def test_alternatives_lines_exactly(posts, nl_file):
    out = caption_frame(posts, CaptionSpec(nl_captions=(str(nl_file),), merge="alternatives"))
    lines = {i: c.split("\n") for i, c in zip(out["id"], out["caption"], strict=True)}
    assert lines[1] == [
        "red panda, solo",
        "A red panda sits on a log. It is smiling.",
        "A smiling red panda.",
    ]
    assert lines[4] == ["red panda, solo", "Only the long one."]
    assert lines[3] == ["red panda, solo"]


def test_default_merge_with_nl_files_is_one_line(posts, nl_file):
    out = caption_frame(posts, CaptionSpec(nl_captions=(str(nl_file),)))
    assert all("\n" not in c for c in out["caption"])
    assert out.filter(pl.col("id") == 4)["caption"][0] == "red panda, solo, Only the long one."


def test_control_characters_of_nl_texts_never_reach_a_caption(tmp_path, posts):
    text = "A \x1b[31mred\x1b[0m panda\x00 sits.\u2028It\x07 is\u0085 happy\u2029\x7f."
    path = write_jsonl(tmp_path / "nl.jsonl", [nl_row(1, text, "")])
    out = caption_frame(posts, CaptionSpec(nl_captions=(str(path),), merge="nl"))
    caption = out.filter(pl.col("id") == 1)["caption"][0]
    assert caption.isprintable() and caption == "A [31mred [0m panda sits. It is happy ."


def test_later_file_wins_and_parquet_is_read(tmp_path, posts, nl_file):
    newer = tmp_path / "newer.parquet"
    pl.DataFrame([nl_row(1, "Redone.", "")]).write_parquet(newer)
    out = caption_frame(posts, CaptionSpec(nl_captions=(str(nl_file), str(newer)), merge="nl"))
    assert out.filter(pl.col("id") == 1)["caption"][0] == "Redone."
    assert out.filter(pl.col("id") == 4)["caption"][0] == "Only the long one."


@pytest.mark.parametrize("ids", [[1, 2, 2, 3], [3, 2, 2, 1], [2, None, 2]])
def test_a_repeated_id_keeps_its_last_row(tmp_path, ids):
    path = tmp_path / "nl.parquet"
    rows = [nl_row(i, f"Text {n}.", "") for n, i in enumerate(ids)]
    pl.DataFrame(rows, schema_overrides={"id": pl.Int64}).write_parquet(path)
    nl = read_nl_captions(CaptionSpec(nl_captions=(str(path),)))
    texts = dict(zip(nl["id"], nl["nl"].list.first(), strict=True))
    assert len(nl) == len(set(ids)) and texts[2] == f"Text {len(ids) - 1 - ids[::-1].index(2)}."


def test_nl_file_errors_name_the_file(tmp_path):
    missing_field = write_jsonl(tmp_path / "x.jsonl", [{"id": 1, "regular_summary": "a"}])
    with pytest.raises(CaptionInputError, match=r"x\.jsonl: missing field.*brief_summary"):
        read_nl_captions(CaptionSpec(nl_captions=(str(missing_field),)))
    with pytest.raises(CaptionInputError, match=r"nope\.jsonl"):
        read_nl_captions(CaptionSpec(nl_captions=(str(tmp_path / "nope.jsonl"),)))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": 1, "regular_summary": "a", "brief_summary": "b", \n')
    with pytest.raises(CaptionInputError, match=r"broken\.jsonl: cannot read: line 1 is not"):
        read_nl_captions(CaptionSpec(nl_captions=(str(broken),), nl_finished=""))
    good = '{"id": 1, "regular_summary": "a", "brief_summary": "b"}\n'
    for bad, says in (
        ("not json", "line 3 is not JSON"),
        ("[1, 2]", "line 3 is not a JSON object"),
    ):
        broken.write_text(f"{good}\n{bad}\n{good}")
        with pytest.raises(CaptionInputError, match=rf"broken\.jsonl: cannot read: {says}"):
            read_nl_captions(CaptionSpec(nl_captions=(str(broken),), nl_finished=""))


@pytest.mark.parametrize(
    ("rows", "says"),
    [
        (
            [nl_row(1, "a", "b"), nl_row("abc", "c", "d")],
            r"x\.jsonl: row 2: id 'abc' is not a post id$",
        ),
        ([nl_row(1.5, "a", "b")], r"x\.jsonl: row 1: id 1\.5 is not a post id$"),
        ([nl_row(1, ["a"], "b")], r"x\.jsonl: regular_summary holds List\(String\), not text$"),
        ([nl_row(1, "a", {"x": 1})], r"x\.jsonl: brief_summary holds Struct.*, not text$"),
        ([nl_row([1], "a", "b")], r"x\.jsonl: id holds List\(Int64\), not post ids$"),
        ([], r"x\.jsonl: an empty file, with no natural-language captions$"),
    ],
)
def test_nl_values_of_the_wrong_kind_are_one_line_naming_file_and_row(tmp_path, rows, says):
    """A post id that is no whole number would match another post (1.5 read as 1), a
    list where a text goes is no text: each refused in one line naming the file (and row)."""
    path = write_jsonl(tmp_path / "x.jsonl", rows)
    for read in (path, _as_parquet(path) if rows else None):
        if read is None:
            continue
        with pytest.raises(CaptionInputError) as refused:
            read_nl_captions(CaptionSpec(nl_captions=(str(read),)))
        message = str(refused.value)
        assert "\n" not in message
        assert re.search(says.replace("x\\.jsonl", re.escape(str(read.name))), message), message


def _as_parquet(path):
    """The rows of a JSON lines file as parquet, beside it."""
    out = path.with_suffix(".parquet")
    pl.read_ndjson(path, infer_schema_length=None).write_parquet(out)
    return out


def test_aliases_files(tmp_path):
    csv = tmp_path / "a.csv"
    csv.write_text("# old,new\nlong_hair,very_long_hair\n")
    assert read_aliases(csv) == {"long_hair": "very_long_hair"}
    export = tmp_path / "tag_aliases.csv"
    export.write_text(
        "id,antecedent_name,consequent_name,created_at,status\n"
        "1,kitty,cat,2020-01-01,active\n2,doggo,dog,2020-01-01,deleted\n"
    )
    assert read_aliases(export) == {"kitty": "cat"}
    js = tmp_path / "a.json"
    js.write_text('{"a": "b", "Long Hair": "very_long_hair"}')  # as a caption shows the tag
    assert read_aliases(js) == {"a": "b", "long_hair": "very_long_hair"}
    shown = tmp_path / "shown.csv"  # both sides as a caption shows the tags
    shown.write_text("Absurd res,Hi Res\n")
    assert read_aliases(shown) == {"absurd_res": "hi_res"}
    bad = tmp_path / "bad.tsv"
    bad.write_text("ok\tfine\nlonely\n")
    with pytest.raises(CaptionInputError, match=r"bad\.tsv: line 2"):
        read_aliases(bad)


def test_a_post_holding_an_alias_target_keeps_it_once(posts, tmp_path):
    aliases = tmp_path / "aliases.csv"
    aliases.write_text("red_panda,Solo\n")  # the target written as a caption shows it
    out = caption_frame(posts, CaptionSpec(aliases=str(aliases)))
    assert out["caption"].to_list() == ["solo"] * 5


def test_a_folder_of_caption_files_is_its_files_in_name_order(tmp_path, posts):
    """A snapshot of lodestones/e621-captions is a folder of monthly files: given as it is,
    its files are read in name order (a later month wins for a repeated id)."""
    folder = tmp_path / "e621-captions"
    folder.mkdir()
    write_jsonl(folder / "2024-04_grouped.jsonl", [nl_row(1, "Old text.", "")])
    write_jsonl(
        folder / "2024-05_grouped.jsonl", [nl_row(1, "New text.", ""), nl_row(2, "Two.", "")]
    )
    (folder / "README.md").write_text("not captions")
    nl = read_nl_captions(CaptionSpec(nl_captions=(str(folder),)))
    assert dict(zip(nl["id"], nl["nl"].to_list(), strict=True)) == {1: ["New text."], 2: ["Two."]}
    out = caption_frame(posts, CaptionSpec(nl_captions=(str(folder),), merge="nl"))
    assert out["caption"].to_list()[:2] == ["New text.", "Two."]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CaptionInputError, match="empty: a folder without"):
        read_nl_captions(CaptionSpec(nl_captions=(str(empty),)))


def test_aliases_from_the_gzipped_e621_export_and_bad_files_named(tmp_path):
    """e621 publishes tag_aliases-YYYY-MM-DD.csv.gz: read as it is (it ended in a
    traceback); a file that is no gzip, no UTF-8 text or a row short of its header is one
    line naming the file."""
    import gzip

    export = tmp_path / "tag_aliases-2024-04-07.csv.gz"
    export.write_bytes(gzip.compress(
        b"\xef\xbb\xbfid,antecedent_name,consequent_name,created_at,status\n"
        b"1,kitty,cat,2020-01-01,active\n2,doggo,dog,2020-01-01,deleted\n"
    ))  # fmt: skip
    assert read_aliases(export) == {"kitty": "cat"}
    plain = tmp_path / "aliases.json.gz"
    plain.write_bytes(gzip.compress(b'{"Long Hair": "very_long_hair"}'))
    assert read_aliases(plain) == {"long_hair": "very_long_hair"}
    for name, data, says in [
        ("junk.csv.gz", b"junk", "cannot read aliases"),
        ("latin1.csv", "caf\xe9,cafe\n".encode("latin-1"), "cannot read aliases"),
        ("short.csv", b"id,antecedent_name,consequent_name,status\n1,dog\n", "line 2: 2 fields"),
    ]:
        bad = tmp_path / name
        bad.write_bytes(data)
        with pytest.raises(CaptionInputError, match=rf"{re.escape(name)}: .*{says}"):
            read_aliases(bad)
