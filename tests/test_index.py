"""The tag index: the same posts as scanning the tags, for every kind of term and for random
queries; rebuilt when a file changes; used by inspect, captions, pull and the API."""

from __future__ import annotations

import contextlib
import json
import os
import random

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from e6ingest import dataset
from e6ingest.cache import cache_dir
from e6ingest.cli import main
from e6ingest.pipeline.events import IndexBuilt
from e6ingest.query import parse_query
from e6ingest.query.index import TagIndexError, open_index
from tests.conftest import E621_2024_ROWS, E621_NEWEST_ROWS

METATAGS = [
    "rating:e", "rating:s,q", "-rating:e", "score:>=10", "score:<0", "favcount:..5",
    "id:..40", "id:..20,60..", "score:<0,>=10", "width:>=1000", "height:<900",
    "mpixels:>=1", "ratio:<1", "tagcount:>25",
    "tagcount:..20", "gentags:>=10", "arttags:1", "chartags:0", "spectags:>=2",
    "metatags:1..", "date:>=2015-01-01", "date:2019", "ext:png", "filetype:jpg,gif",
    "parent:none", "parent:any", "status:active", "status:any",
]  # fmt: skip


def _ids(query, frame) -> list[int]:
    return sorted(query.collect(frame, ["id"])["id"].to_list())


def _same(data, text: str) -> int:
    """The posts ``text`` selects, by scan and by index: asserted equal; their number."""
    scan = data.query(text).with_index(None)
    # a query of every post is no question for the index: it reads every post as it is
    assert (data.query(text).index is None) == (scan.expr is None), text
    indexed = scan.with_index(data.tag_index())
    expected = _ids(scan, data.posts)
    assert sorted(indexed.index.ids(indexed).to_list()) == expected, text
    assert _ids(indexed, data.posts) == expected, text
    assert indexed.count(data.posts) == len(expected), text
    return len(expected)


def _terms(data) -> list[str]:
    """Tags of every frequency, wildcards and groups built from the dataset's own tags."""
    vocabulary = data.tag_index().vocabulary()["tag"].to_list()
    common, rare = vocabulary[:3], vocabulary[-3:]
    prefix = common[0][:3]
    return [
        *common, *rare, f"-{common[0]}", f"{common[0]} -{common[1]}", f"~{rare[0]} ~{rare[1]}",
        f"{prefix}*", f"*{common[1][-3:]}", f"-{prefix}*", f"( {common[0]} ~{rare[0]} ~{rare[1]} )",
        f"-( {common[0]} {common[1]} ) {common[2]}", f"~( {rare[0]} -{common[0]} ) ~{rare[2]}",
        "no_such_tag_anywhere", "-no_such_tag_anywhere", "nosuch*", "",
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["e621", "danbooru2024"])
def test_every_term_selects_the_same_posts_from_the_index(small_demo, name):
    data = dataset.open_dataset(name, mirror=small_demo)
    counts = [_same(data, term) for term in [*_terms(data), *METATAGS]]
    assert len(set(counts)) > 10  # the terms select different posts
    deleted = dataset.open_dataset(name, mirror=small_demo, include_deleted=True)
    assert _same(deleted, "status:deleted") == _same(deleted, "") - _same(data, "")


@pytest.mark.parametrize("name", ["e621", "danbooru2024"])
def test_random_queries_select_the_same_posts_from_the_index(small_demo, name):
    data = dataset.open_dataset(name, mirror=small_demo)
    vocabulary = data.tag_index().vocabulary()["tag"].to_list()
    rng = random.Random(name)
    pieces = [*vocabulary[:40], *rng.sample(vocabulary, 20), *METATAGS, "a*", "*r"]
    for _ in range(60):
        terms = [rng.choice("-~ ").strip() + rng.choice(pieces) for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.3:
            terms = [f"{rng.choice(['', '-', '~'])}(", *terms, ")", rng.choice(pieces)]
        text = " ".join(t for t in terms if t not in ("-", "~"))
        try:
            parse_query(text, data.site)
        except ValueError:
            continue  # e.g. "-rating:e" with a ~ prefix doubled: refused the same either way
        _same(data, text)


@pytest.mark.parametrize("name", ["e621", "danbooru2024"])
def test_the_scan_counts_the_vocabulary_of_the_index(small_demo, name):
    scanned = dataset.open_dataset(name, mirror=small_demo, index=False).vocabulary()
    indexed = dataset.open_dataset(name, mirror=small_demo).vocabulary()
    assert scanned.height > 100 and scanned.equals(indexed)


def test_tags_split_on_any_whitespace_as_the_scan_does(tmp_path):
    rows = [
        dict(E621_2024_ROWS[0], id=i, tag_string=text, is_deleted="f")
        for i, text in enumerate(
            [
                "solo\tdragon",
                "solo  dragon\nwings",
                "  solo ",
                "",
                "wings\u00a0solo",
                "solo\x00dragon\x1bwings\x07",
                "dragon\x7fsolo\u0085wings\u2028solo\u2029",
            ]
        )
    ]
    path = tmp_path / "posts.parquet"  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), path)
    data = dataset.open_dataset(files=[path], index=True)
    counts = [f"tagcount:{n}" for n in ("0", "1", "2", "3", "4", ">4")]
    for text in ("solo", "dragon", "wings", "solo dragon", "-solo", "d*", *counts):
        _same(data, text)
    assert data.tag_index().vocabulary()["tag"].to_list() == ["solo", "dragon", "wings"]
    scanned = dataset.open_dataset(files=[path], index=False).vocabulary()
    assert scanned.equals(data.tag_index().vocabulary())


@pytest.mark.parametrize("seed", range(6))
def test_the_vocabulary_is_a_plain_count_of_each_posts_tags(tmp_path, seed):
    """The scan's vocabulary (split at spaces, read again by runs when a tag string holds
    other whitespace) against a plain count: each post's distinct runs of characters that
    are neither whitespace nor control characters, deleted posts included."""
    import unicodedata
    from collections import Counter

    from e6ingest.query.vocabulary import tag_counts

    rng = random.Random(seed)
    letters, gaps = "ab_(é", [" ", " ", "  ", "\t", "\n", "\u00a0", "\u3000", "\x00", "\x7f"]
    gaps = gaps[: 3 if seed % 2 else len(gaps)]  # odd seeds: spaces only (no second read)
    texts = [
        "".join(rng.choice([*letters * 3, *gaps]) for _ in range(rng.randrange(0, 30)))
        for _ in range(150)
    ]
    rows = [dict(E621_2024_ROWS[0], id=i + 1, tag_string=t, is_deleted=rng.choice("ft"))
            for i, t in enumerate(texts)]  # fmt: skip
    path = tmp_path / "posts.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)

    def runs(text: str) -> set[str]:
        marked = "".join(" " if c.isspace() or unicodedata.category(c) == "Cc" else c for c in text)
        return set(marked.split())

    counts = Counter(tag for text in texts for tag in runs(text))
    expected = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    assert tag_counts([path], [None]).rows() == expected


def test_a_later_file_wins_for_a_repeated_id_in_the_index(e621_2024_sample, e621_newest_sample):
    data = dataset.open_dataset(files=[e621_2024_sample, e621_newest_sample], index=True)
    assert _same(data, "retagged") == 1 and _same(data, "balls") == 0  # id 14: the newest row
    assert data.tag_counts(data.query(""), ["solo", "dragon", "nope"]) == {
        "solo": 1, "dragon": 1, "nope": 0,
    }  # fmt: skip


def test_a_changed_file_gets_a_new_index_and_the_stale_one_goes(tmp_path):
    path = tmp_path / "posts.parquet"
    pq.write_table(pa.Table.from_pylist(E621_NEWEST_ROWS), path)
    root = tmp_path / "index"
    foreign = root / "not-ours"
    foreign.mkdir(parents=True)
    (foreign / "index.json").write_text("{}")  # no identity: never taken for an index
    first = open_index([path], [None], root)
    assert first.count(parse_query("solo")) == 1
    (first.folder / "keep.txt").write_text("a user's file, inside the old index")
    rows = [dict(E621_NEWEST_ROWS[0], id=i) for i in range(1, 4)]
    pq.write_table(pa.Table.from_pylist(rows), path)
    os.utime(path, ns=(1, 1))  # even with an old modification time: the size changed
    second = open_index([path], [None], root)
    assert second.folder != first.folder and second.count(parse_query("solo")) == 3
    assert [p.name for p in first.folder.iterdir()] == ["keep.txt"] and foreign.is_dir()
    assert open_index([path], [None], root).folder == second.folder  # built once


def test_a_damaged_index_is_rebuilt_and_a_foreign_folder_refused(tmp_path, e621_newest_sample):
    root = tmp_path / "index"
    index = open_index([e621_newest_sample], [None], root)
    postings = index.folder / "postings.arrow"
    postings.write_bytes(postings.read_bytes()[:-8])  # cut short since it was built
    again = open_index([e621_newest_sample], [None], root)
    assert again.folder == index.folder and again.count(parse_query("solo")) == 1
    _remove_files(again.folder)
    (again.folder / "notes.txt").write_text("mine")  # a folder in the way, not an index
    with pytest.raises(TagIndexError, match="in the way of a tag index"):
        open_index([e621_newest_sample], [None], root)
    assert (again.folder / "notes.txt").read_text() == "mine"


def _remove_files(folder):
    for path in folder.iterdir():
        path.unlink()


def test_cli_index_inspect_tags_and_no_index(small_demo, capsys):
    assert main(["index", "--mirror", str(small_demo)]) == 0
    built = capsys.readouterr().out
    assert "tag index of" in built and str(cache_dir() / "index") in built
    query = ["--mirror", str(small_demo), "--query", "solo -comic", "--rating", "e,q"]
    results = []
    for extra in ([], ["--no-index"]):
        assert main(["inspect", *query, "--count", "--tags", "canid*,solo,male", *extra]) == 0
        results.append(capsys.readouterr().out)
    assert results[0] == results[1]
    count, *tags = results[0].splitlines()
    assert int(count) > 0 and [t.split("\t")[0] for t in tags] == ["canid*", "solo", "male"]
    assert int(tags[1].split("\t")[1]) == int(count)  # every selected post is solo
    assert main(["inspect", *query, "--json", "--tags", "male"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["posts"] == int(count) and info["tag_counts"] == {"male": int(tags[2].split()[1])}


def test_pull_plans_the_same_posts_with_and_without_the_index(small_demo, tmp_path, monkeypatch):
    from e6ingest.config import make_config
    from e6ingest.pipeline import pull

    monkeypatch.setenv("E6INGEST_CACHE", str(tmp_path / "cache"))  # no index built yet
    config = make_config({"ratings": "e,q,s", "query": "solo -comic", "shard_size": 20})
    plans, events = [], []
    for index in (True, False):
        out = tmp_path / f"out-{index}"
        progress = events.append if index else None
        pull(config, out, small_demo, workers=1, index=index, progress=progress)
        plans.append(pl.read_parquet(out / "plan.parquet"))
    assert plans[0].equals(plans[1]) and len(plans[0]) > 0
    built = [event for event in events if isinstance(event, IndexBuilt)]
    assert built and built[-1].done == built[-1].total > len(plans[0])


def test_the_first_question_scans_and_the_second_builds_the_index(tmp_path, capsys):
    """No wait for an index nobody asked for: the first question on fresh metadata is
    answered by the scan, the second builds the index (saying so in one line), the third
    reads it; --index builds at once, --no-index never."""
    path = tmp_path / "posts.parquet"
    rows = [dict(E621_NEWEST_ROWS[0], id=i, tags=["solo"] if i % 2 else ["duo"])
            for i in range(1, 41)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), path)
    root = cache_dir() / "index"
    ask = ["inspect", "--metadata", str(path), "--query", "solo", "--count"]
    key = None
    for turn in range(3):
        assert main(ask) == 0
        out, err = capsys.readouterr()
        assert out.strip() == "20"
        built = [p for p in root.glob("*/index.json")
                 if str(path) in p.read_text()]  # fmt: skip
        notices = [line for line in err.splitlines() if "building the tag index (once" in line]
        if turn == 0:
            assert not built and not notices  # answered by the scan
        elif turn == 1:
            assert built and notices == [notices[0]] and "next questions take under a" in err
            assert "sorting and writing the index" in err  # the bar says why it waits at the end
            key = built[0].parent
        else:
            assert built[0].parent == key and not notices  # read, not built again
    other = tmp_path / "other.parquet"
    pq.write_table(pa.Table.from_pylist(rows[:10]), other)
    assert main(["inspect", "--metadata", str(other), "--count", "--no-index"]) == 0
    assert main(["inspect", "--metadata", str(other), "--count", "--no-index"]) == 0
    assert not [p for p in root.glob("*/index.json") if str(other) in p.read_text()]
    assert main(["inspect", "--metadata", str(other), "--count", "--index"]) == 0
    assert [p for p in root.glob("*/index.json") if str(other) in p.read_text()]


def test_a_question_about_every_post_builds_no_index(tmp_path, capsys):
    """``captions`` or ``inspect`` of every post (no query) asks nothing an index answers:
    asked again and again, it builds none; with an index built, it still reads every post
    without looking each one up, and writes the same captions."""
    path = tmp_path / "posts.parquet"
    rows = [dict(E621_NEWEST_ROWS[0], id=i, tags=["solo"] if i % 2 else ["duo"])
            for i in range(1, 41)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), path)
    root = cache_dir() / "index"
    written = []
    for turn in range(3):
        out = tmp_path / f"captions-{turn}.jsonl"
        assert main(["captions", "--metadata", str(path), "--out", str(out)]) == 0
        assert main(["inspect", "--metadata", str(path), "--count"]) == 0
        assert capsys.readouterr().out.strip() == "40"
        written.append(out.read_bytes())
        if turn == 1:
            assert not [p for p in root.glob("*/index.json") if str(path) in p.read_text()]
            assert main(["index", "--metadata", str(path)]) == 0
            capsys.readouterr()
    assert [p for p in root.glob("*/index.json") if str(path) in p.read_text()]
    assert written[0] == written[1] == written[2] and written[0].count(b"\n") == 40


def test_a_cache_it_may_not_write_still_answers_by_the_scan(tmp_path, capsys, monkeypatch):
    """A read-only cache folder (a container's home): questions are answered by the scan,
    with one line saying why no index is kept, and a tag no post has is still suggested the
    closest ones (the vocabulary counted, not kept)."""
    import errno

    from e6ingest.query import indexing, vocabulary

    def refused(*args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted", str(tmp_path / "cache"))

    @contextlib.contextmanager
    def refused_path(*args, **kwargs):
        refused()
        yield from ()

    monkeypatch.setattr(indexing, "write_atomic", refused)
    monkeypatch.setattr(vocabulary, "atomic_path", refused_path)
    path = tmp_path / "posts.parquet"
    rows = [dict(E621_NEWEST_ROWS[0], id=i, tags=["solo"]) for i in range(1, 11)]
    pq.write_table(pa.Table.from_pylist(rows), path)
    for _ in range(2):
        assert main(["inspect", "--metadata", str(path), "--query", "sola", "--count"]) == 0
        out, err = capsys.readouterr()
        assert out.strip() == "0" and "tag 'sola' is on no post" in err and "mean solo?" in err
        assert "the tag index cannot be kept in" in err and "answered by scanning" in err
    assert not [p for p in cache_dir().glob("index/*/index.json") if str(path) in p.read_text()]


def test_a_question_without_an_index_looks_for_its_tags_only_until_found(tmp_path, monkeypatch):
    """The warnings of a first question read rows only until each of its tags is found; a
    tag on a deleted post alone, or a superseded row of the file alone, is on no post."""
    from e6ingest.dataset import open_dataset
    from e6ingest.query import vocabulary

    monkeypatch.setattr(vocabulary, "FIRST_ROWS", 4)
    monkeypatch.setattr(vocabulary, "MOST_ROWS", 8)
    path = tmp_path / "posts.parquet"
    rows = [dict(E621_NEWEST_ROWS[0], id=i, tags=["solo"]) for i in range(1, 41)]
    rows[36]["tags"] = ["solo", "late_tag"]
    rows[20].update(tags=["gone_tag"], is_deleted=True)
    rows[5]["tags"] = ["replaced_tag"]  # id 6 comes again below, without it
    rows.append(dict(rows[6], id=6))
    pq.write_table(pa.Table.from_pylist(rows), path)
    asked = {"solo", "late_tag", "gone_tag", "replaced_tag", "nowhere"}
    found = vocabulary.tags_present([path], [None], asked)
    assert found == {"solo", "late_tag"}
    assert vocabulary.tags_present([path], [None], {"gone_tag"}, include_deleted=True)
    posts = open_dataset(files=[path], index=False)
    assert posts.warnings(posts.query("solo late_tag")) == []
    warned = posts.warnings(posts.query("solo nowhere"))
    assert len(warned) == 1 and "'nowhere' is on no post" in warned[0]


def test_a_pull_of_real_tags_on_fresh_metadata_counts_no_vocabulary(
    small_demo, tmp_path, monkeypatch
):
    """A pull checks its query's tags as a first question does: found in the first rows,
    nothing else is read (no vocabulary counted and cached); a tag no post has is warned
    of with the closest real tags."""
    from e6ingest.config import make_config
    from e6ingest.pipeline import pull
    from e6ingest.pipeline.events import Warned

    monkeypatch.setenv("E6INGEST_CACHE", str(tmp_path / "cache"))
    vocabularies = tmp_path / "cache" / "vocabulary"
    events: list[object] = []
    config = make_config({"rating": "e,q,s", "query": "solo", "sample": 5})
    pull(config, tmp_path / "real", small_demo, workers=1, progress=events.append)
    assert not [e for e in events if isinstance(e, Warned)]
    assert not vocabularies.exists() or not list(vocabularies.iterdir())
    config = make_config({"rating": "e,q,s", "query": "~solo ~sollo", "sample": 5})
    pull(config, tmp_path / "typo", small_demo, workers=1, progress=events.append)
    warned = [e.message for e in events if isinstance(e, Warned)]
    assert len(warned) == 1 and "'sollo' is on no post" in warned[0] and "solo" in warned[0]
    assert list(vocabularies.iterdir())  # counted once, to suggest the closest tags
