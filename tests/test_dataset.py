"""The notebook API and `e6ingest inspect`."""

from __future__ import annotations

import json

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from e6ingest import dataset
from e6ingest.cli import main
from e6ingest.metadata import SchemaError, scan_file
from tests.conftest import E621_2024_ROWS


def _truth(small_demo, dataset_name):
    """Ratings of non-deleted posts, counted straight from the raw parquet files."""
    from e6ingest.manifests import load_manifest

    manifest = load_manifest(dataset_name)
    rows = {}
    for entry in manifest.metadata:  # later files win for a repeated id
        frame = pl.read_parquet(small_demo / entry.repo / entry.path)
        deleted = frame["is_deleted"].cast(pl.String).is_in(["t", "true"])
        for post_id, rating, gone in zip(frame["id"], frame["rating"], deleted, strict=True):
            rows[post_id] = (rating, gone)
    counts: dict[str, int] = {}
    for rating, gone in rows.values():
        if not gone:
            counts[rating] = counts.get(rating, 0) + 1
    return counts


@pytest.mark.parametrize("name", ["e621", "danbooru2024"])
def test_rating_counts_match_the_raw_files(small_demo, name):
    posts = dataset.load_metadata(name, mirror=small_demo)
    counts = dataset.rating_counts(posts)
    assert dict(counts.select("rating", "posts").iter_rows()) == _truth(small_demo, name)
    assert abs(counts["share"].sum() - 1) < 1e-9
    assert counts["rating"].to_list() == [r for r in "gsqe" if r in counts["rating"].to_list()]
    assert list(counts.to_pandas().columns) == ["rating", "posts", "share"]


def test_inspect_json_and_count(small_demo, capsys):
    args = ["inspect", "--mirror", str(small_demo), "--dataset", "danbooru2024"]
    assert main([*args, "--json", "--rating", "e,q"]) == 0
    info = json.loads(capsys.readouterr().out)
    truth = _truth(small_demo, "danbooru2024")
    assert info["ratings"] == {r: truth[r] for r in ("q", "e") if r in truth}
    assert info["posts"] == sum(info["ratings"].values()) == sum(info["years"].values())
    assert set(info["top_tags"]) >= {"general", "artist"}
    assert main([*args, "--count", "--query", "rating:e,q"]) == 0
    assert capsys.readouterr().out.strip() == str(info["posts"])
    assert main([*args]) == 0
    text = capsys.readouterr().out
    assert "ratings (danbooru: g general, s sensitive, q questionable, e explicit):" in text
    assert "top general tags:" in text


def test_inspect_query_may_start_with_a_minus(small_demo, capsys):
    args = ["inspect", "--mirror", str(small_demo), "--dataset", "danbooru2024", "--count"]
    counts = []
    for query in ([], ["--query", "comic"], ["--query", "-comic"]):
        assert main([*args, *query]) == 0, capsys.readouterr().err
        counts.append(int(capsys.readouterr().out))
    everything, comic, without = counts
    assert 0 < comic < everything
    assert without == everything - comic


def test_posts_without_a_rating_or_a_date_are_counted_as_unknown(e621_2024_sample, tmp_path):
    path = tmp_path / "posts.parquet"
    frame = pl.read_parquet(e621_2024_sample)
    first = pl.col("id") == frame["id"][0]
    frame.with_columns(
        rating=pl.when(first).then(None).otherwise(pl.col("rating")),
        created_at=pl.when(first).then(None).otherwise(pl.col("created_at")),
    ).write_parquet(path)
    info = dataset.summary(scan_file(path))
    assert info["ratings"]["unknown"] == 1 and info["years"]["unknown"] == 1
    assert list(info["years"])[-1] == "unknown"  # after the years
    assert sum(info["ratings"].values()) == sum(info["years"].values()) == frame.height
    json.dumps(info)  # keys a JSON reader takes as they are


def test_inspect_metadata_files_directly(small_demo, capsys):
    path = small_demo / "deepghs/e621_newest/table.parquet"
    assert main(["inspect", "--metadata", str(path), "--count", "--include-deleted"]) == 0
    assert int(capsys.readouterr().out) == pl.read_parquet(path).height


def test_inspect_bad_query_fails_before_reading(tmp_path, capsys):
    missing = tmp_path / "nope.parquet"
    assert main(["inspect", "--metadata", str(missing), "--query", "score:>>1"]) == 2
    assert "bad term 'score:>>1'" in capsys.readouterr().err


def test_inspect_unknown_schema_names_file(tmp_path, capsys):
    path = tmp_path / "x.parquet"
    pl.DataFrame({"a": [1]}).write_parquet(path)
    assert main(["inspect", "--metadata", str(path), "--count"]) == 2
    assert "x.parquet: not in a supported metadata schema" in capsys.readouterr().err


def test_metadata_given_as_a_folder_says_to_give_its_files(tmp_path, capsys):
    assert main(["inspect", "--metadata", str(tmp_path), "--count"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}: a folder; give its parquet files ({tmp_path}/*.parquet)" in err
    assert len(err.strip().splitlines()) == 1


def test_metadata_of_two_sites_together_is_refused(danbooru_sample, e621_2024_sample, capsys):
    """Post ids repeat across sites: read together, e621's post N hid danbooru's post N."""
    code = main(["inspect", "--metadata", str(danbooru_sample), str(e621_2024_sample), "--count"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{e621_2024_sample}: e621 metadata beside danbooru metadata ({danbooru_sample})" in err
    assert "give one site's files at a time" in err
    with pytest.raises(SchemaError, match="post ids repeat across sites"):
        dataset.load_metadata(files=[e621_2024_sample, danbooru_sample])


def test_tag_table_restores_e621_categories(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.conftest import E621_NEWEST_ROWS

    path = tmp_path / "table.parquet"
    pq.write_table(pa.Table.from_pylist(E621_NEWEST_ROWS), path)
    table = tmp_path / "tags.csv"
    table.write_text(
        "id,name,category,post_count\n1,fleurfurr,1,10\n2,red_panda,5,99\n3,hi_res,7,9\n"
        "4,ailurid,5,5\n5,mammal,5,1000\n"
    )
    posts = dataset.select(dataset.load_metadata(files=[path]), "id:4999999", tag_table=table)
    post = posts.collect().row(0, named=True)
    assert post["tags_artist"] == ["fleurfurr"]
    assert post["tags_species"] == ["ailurid", "mammal", "red_panda"]
    assert post["tags_meta"] == ["hi_res"]
    assert "anthro" in post["tags_general"] and "red_panda" not in post["tags_general"]


@pytest.mark.parametrize("schema", ["e621_newest", "e621_2024"])
def test_uncategorised_metadata_without_a_tags_table_is_a_warning(
    schema, e621_newest_sample, e621_2024_sample, danbooru_sample, tmp_path, capsys
):
    """e621 metadata keeps every tag in one list: captioned from ``--metadata`` alone, its
    artists do not lead; a warning names the file and the flag that restores them."""
    path = {"e621_newest": e621_newest_sample, "e621_2024": e621_2024_sample}[schema]
    assert main(["captions", "--metadata", str(path), "--preview", "1"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {path}: the {schema} schema has no tag categories" in err
    assert "artists and characters do not lead the captions" in err and "--tag-table" in err
    table = tmp_path / "tags.csv"
    table.write_text("id,name,category,post_count\n1,fleurfurr,1,10\n")
    assert main(["captions", "--metadata", str(path), "--tag-table", str(table),
                 "--preview", "1"]) == 0  # fmt: skip
    assert "tag categories" not in capsys.readouterr().err
    assert main(["captions", "--metadata", str(danbooru_sample), "--preview", "1"]) == 0
    assert "tag categories" not in capsys.readouterr().err  # danbooru has its categories


def test_tag_table_bad_category_names_the_row(tmp_path):
    table = tmp_path / "tags.csv"
    table.write_text("id,name,category,post_count\n1,solo,0,5\n2,broken,banana,1\n")
    from e6ingest.metadata.tagtable import read_tag_table

    with pytest.raises(SchemaError, match=r"row 2 \(tag 'broken'\) has category 'banana'"):
        read_tag_table(table)


@pytest.mark.parametrize(
    ("category", "says"),
    [([1.5], r"row 1 \(tag 'cat'\) has category 1\.5"), ([True], "'category' is Boolean"),
     ([[1]], "'category' holds List")],
)  # fmt: skip
def test_a_parquet_tags_table_of_other_types_is_refused_never_rounded(tmp_path, category, says):
    """A category of 1.5 read as 1 made a general tag an artist's, silently."""
    from e6ingest.metadata.tagtable import read_tag_table

    table = tmp_path / "tags.parquet"
    pq.write_table(pa.table({"id": [1], "name": ["cat"], "category": category}), table)
    with pytest.raises(SchemaError, match=says):
        read_tag_table(table)
    pq.write_table(pa.table({"id": [1], "name": ["cat"], "category": [1.0]}), table)
    assert read_tag_table(table).to_dicts() == [{"name": "cat", "column": "tags_artist"}]


def test_tag_table_giving_a_tag_two_categories_is_refused_and_a_repeated_row_read_once(
    e621_newest_sample, tmp_path
):
    from e6ingest.metadata.tagtable import apply_tag_table, read_tag_table

    table = tmp_path / "tags.csv"
    table.write_text("id,name,category,post_count\n1,solo,0,5\n2,mammal,5,9\n3,mammal,0,9\n")
    with pytest.raises(
        SchemaError, match=r"tag 'mammal' has category '5' in row 2 and '0' in row 3"
    ):
        read_tag_table(table)
    table.write_text("id,name,category,post_count\n1,solo,0,5\n2,mammal,5,9\n2,mammal,5,9\n")
    frame = scan_file(e621_newest_sample).filter(pl.col("id") == 4999999)
    restored = apply_tag_table(frame, read_tag_table(table)).collect().row(0, named=True)
    assert restored["tags_species"] == ["mammal"]
    assert restored["tags_general"].count("solo") == 1 and "mammal" not in restored["tags_general"]


def test_the_api_sees_the_categories_the_cli_sees(small_demo, capsys):
    import json

    from e6ingest.cli import main

    posts = dataset.load_metadata("e621", mirror=small_demo)
    artists = dataset.top_tags(posts, "artist", n=5)
    assert artists.height > 0  # the tags table is applied, as the CLI applies it
    general = dataset.top_tags(posts, "general", n=50)["tag"].to_list()
    assert "hi_res" not in general and "mammal" not in general
    assert main(["inspect", "--mirror", str(small_demo), "--json", "--top", "5"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert dict(artists.iter_rows()) == info["top_tags"]["artist"]


@pytest.mark.parametrize("subset", [{}, {"sample": 150, "seed": 2}, {"limit": 90}])
def test_a_preview_captions_only_its_posts_as_the_whole_selection_would(demo_root, monkeypatch,
                                                                        subset):  # fmt: skip
    """``preview_captions`` reads and captions the first posts and the statistics' sample
    alone, yet they are the captions of the whole selection (quality tiers over all of it,
    variants), in its order."""
    from e6ingest.captions import CaptionSpec, tokens
    from e6ingest.query import Subset

    monkeypatch.setattr(tokens, "STATS_SAMPLE", 40)
    data = dataset.open_dataset(mirror=demo_root)
    posts = data.select(data.query("-comic", ("e", "q", "s")), Subset(**subset))
    spec = CaptionSpec(quality_tag=True, rating_tag=True, variants="standard", max_tokens=75)
    whole = dataset.captions(posts, spec, data.tables)
    head, sample, total = dataset.preview_captions(posts, 7, spec, data.tables)
    assert total == whole.height > 40
    assert head.equals(whole.head(7))
    assert sample.equals(whole.gather_every(whole.height // 40))


def test_a_dataset_takes_search_text_where_it_takes_a_query(demo_root):
    """``data.count("solo")`` is what a notebook writes first: it answers as
    ``data.count(data.query("solo"))``; anything else is named in the refusal."""
    data = dataset.open_dataset(mirror=demo_root)
    text = "-comic rating:e,q"
    assert data.count(text) == data.count(data.query(text)) > 0
    assert data.count() == data.count(data.query(""))
    selected = data.select(text).select("id").collect()
    assert selected.equals(data.select(data.query(text)).select("id").collect())
    assert data.tag_counts(text, ["solo"]) == data.tag_counts(data.query(text), ["solo"])
    warned = data.warnings("no_such_tag_xyz")
    assert warned == data.warnings(data.query("no_such_tag_xyz")) and "no_such_tag_xyz" in warned[0]
    with pytest.raises(TypeError, match="not LazyFrame"):
        data.count(data.posts)  # type: ignore[arg-type]


def test_deleted_posts_asked_of_a_frame_without_them_are_refused_not_counted_0(demo_root):
    """``load_metadata`` leaves deleted posts out: ``status:deleted`` on its frame would
    count 0 though the dataset has some. It is refused, saying how to keep them."""
    from e6ingest.query import QueryError

    posts = dataset.load_metadata("e621", mirror=demo_root)
    with pytest.raises(QueryError, match="include_deleted=True") as refused:
        dataset.count(posts, "solo status:deleted")
    assert "bad term 'status:deleted'" in str(refused.value)
    with pytest.raises(QueryError, match="include_deleted=True"):
        dataset.select(posts, "status:deleted")
    everything = dataset.load_metadata("e621", mirror=demo_root, include_deleted=True)
    deleted = dataset.count(everything, "status:deleted")
    assert 0 < deleted == everything.filter(pl.col("is_deleted")).collect().height
    assert dataset.count(posts, "status:active") == dataset.count(posts)


def test_top_tags_count_posts_even_when_a_tag_string_repeats_a_tag():
    """A plain count of the posts each tag is on, over random tag lists that repeat tags:
    the top tags are those posts' counts (occurrences would put a repeated tag first), in
    order of posts and then tag."""
    import random
    from collections import Counter

    rng = random.Random(7)
    names = ["solo", "fur", "anthro", "smile", "hi_res", "blue_eyes"]
    lists = [[rng.choice(names) for _ in range(rng.randint(0, 8))] for _ in range(400)]
    lists[0] = ["fur"] * 50  # one post that repeats a tag many times
    posts = pl.LazyFrame({"tags_general": lists}, schema={"tags_general": pl.List(pl.String)})
    truth = Counter(tag for tags in lists for tag in set(tags))
    expected = sorted(truth.items(), key=lambda item: (-item[1], item[0]))[:4]
    assert list(dataset.top_tags(posts, "general", n=4).iter_rows()) == expected


@pytest.mark.parametrize("index", [False, True])
def test_a_name_value_term_that_is_no_metatag_nor_tag_is_refused_not_counted_0(tmp_path, index):
    """``upvotes:>5`` reads like a metatag e6ingest does not have: counted as a tag no post
    has, it answered 0 (and ``-upvotes:>5`` everything) in a notebook while the CLI refused
    it. The API refuses it too; a real tag with a colon still counts."""
    from e6ingest.query import QueryError

    path = tmp_path / "posts.parquet"
    template = {**E621_2024_ROWS[0], "is_deleted": "f"}
    rows = [{**template, "id": i, "tag_string": "solo re:zero" if i % 2 else "solo"}
            for i in range(1, 11)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), path)
    data = dataset.open_dataset(files=[path], index=index)
    posts = dataset.load_metadata(files=[path])
    for query in ("upvotes:>5", "-upvotes:>5", "solo ~upvotes:>5"):
        with pytest.raises(QueryError, match="upvotes: is no metatag"):
            data.count(query)
        with pytest.raises(QueryError, match="upvotes: is no metatag"):
            dataset.count(posts, query)
        with pytest.raises(QueryError, match="upvotes: is no metatag"):
            dataset.select(posts, query)
    assert data.count("re:zero") == dataset.count(posts, "re:zero") == 5
    assert data.count("-re:zero") == dataset.count(posts, "-re:zero") == 5


def test_a_dataset_looks_for_a_tag_in_the_rows_once(tmp_path, monkeypatch):
    """The check of a name:value term and the warnings of the same question share what
    was read: a rare tag costs one pass over the tags, not two."""
    import e6ingest.dataset

    path = tmp_path / "posts.parquet"
    rows = [{**E621_2024_ROWS[0], "is_deleted": "f", "id": i, "tag_string": "solo re:zero"}
            for i in range(1, 4)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), path)
    looked_for = []
    real = e6ingest.dataset.tags_present

    def counted(files, schemas, tags, include_deleted=False):
        looked_for.append(list(tags))
        return real(files, schemas, tags, include_deleted)

    monkeypatch.setattr(e6ingest.dataset, "tags_present", counted)
    data = dataset.open_dataset(files=[path], index=False)
    query = data.query("re:zero solo")
    assert data.warnings(query) == [] and data.count(query) == 3
    assert looked_for == [["re:zero"], ["solo"]]


def test_an_older_snapshot_given_after_a_newer_one_is_named(
    e621_2024_sample, e621_newest_sample, capsys
):
    """A later file wins for a post in both: the 2024 export after the newest table would
    give post 14 its 2024 rating and tags. Said, naming both files; the right order is
    quiet, and so are part files of id ranges that do not overlap."""
    newest, older = str(e621_newest_sample), str(e621_2024_sample)
    assert main(["inspect", "--metadata", newest, older, "--count", "--no-index"]) == 0
    err = capsys.readouterr().err
    assert f"{older} (post ids up to 15) comes after {newest}" in err and "newest file last" in err
    assert main(["inspect", "--metadata", older, newest, "--count", "--no-index"]) == 0
    assert "comes after" not in capsys.readouterr().err
    assert dataset.open_dataset(files=[older, newest]).count("id:14 rating:q") == 1


def test_captions_refuse_a_spec_their_tables_cannot_serve(small_demo, tmp_path):
    """A budget that keeps the rarest tags first needs the dataset's tag counts, pruning
    needs the implications: without them the captions would keep tags in caption order or
    prune nothing, silently. Refused, naming what to pass; served when given."""
    from e6ingest.captions import CaptionSpec

    data = dataset.open_dataset(mirror=small_demo)  # opened without pruning
    posts = data.select(data.query("", ("e", "q", "s")))
    with pytest.raises(ValueError, match=r"tables=data\.tables"):
        dataset.captions(posts, CaptionSpec(max_tokens=20))
    with pytest.raises(ValueError, match=r"tables=data\.tables"):
        dataset.captions(posts, CaptionSpec(variants="standard"))
    with pytest.raises(ValueError, match=r"prune_implied.*implications=FILE"):
        dataset.captions(posts, CaptionSpec(prune_implied=True), data.tables)
    order = dataset.captions(posts, CaptionSpec(max_tokens=20, token_priority="order"))
    rare = dataset.captions(posts, CaptionSpec(max_tokens=20), data.tables)
    assert order["caption"].to_list() != rare["caption"].to_list()

    implications = tmp_path / "implications.csv"
    implications.write_text("antecedent_name,consequent_name,status\nsolo,female,active\n")
    spec = CaptionSpec(prune_implied=True, implications=str(implications))
    pruned, plain = dataset.captions(posts, spec), dataset.captions(posts)
    both = [i for i, tags in enumerate(plain["caption"]) if "solo" in tags and "female" in tags]
    assert both and all("female" not in pruned["caption"][i].split(", ") for i in both)
    assert pruned.equals(dataset.captions(posts, spec, data.tables))
