"""Captions per the spec in pulled shards, and the same captions from `e6ingest captions`."""

from __future__ import annotations

import json

import polars as pl
import pytest
import webdataset as wds

from e6ingest.captioned import _BatchWriter
from e6ingest.cli import main
from e6ingest.config import ConfigError, make_config
from e6ingest.pipeline import pull
from e6ingest.pipeline.events import Warned
from e6ingest.query import selection_query


@pytest.mark.slow
def test_pull_writes_captions_per_spec_and_captions_command_agrees(small_demo, tmp_path, capsys):
    selection = ["--mirror", str(small_demo), "--rating", "e,q,s"]
    first = tmp_path / "plain.jsonl"
    assert main(["captions", *selection, "--out", str(first)]) == 0
    ids = pl.read_ndjson(first)["id"].to_list()
    nl_file = tmp_path / "nl.jsonl"
    finished, unfinished = ids[0:20:2], ids[1:20:2]  # some posts of each have no image
    nl_rows = [
        *({"id": i, "regular_summary": "A long\ndescription.", "brief_summary": "Short.",
           "response_finish_reason": "STOP", "tags": []} for i in finished),
        *({"id": i, "regular_summary": "Cut off", "brief_summary": "",
           "response_finish_reason": "MAX_TOKENS", "tags": []} for i in unfinished),
    ]  # fmt: skip
    nl_file.write_text("".join(json.dumps(r) + "\n" for r in nl_rows))
    spec_file = tmp_path / "caption.toml"
    spec_file.write_text('merge = "alternatives"\nrating_tag = true\n')
    spec = ["--caption-config", str(spec_file), "--nl-captions", str(nl_file), "--people-first"]

    out = tmp_path / "out"
    code = main(["pull", *selection, "--out", str(out), "--shard-size", "100", "--workers", "1",
                 "--quiet", *spec])  # fmt: skip
    assert code == 0, capsys.readouterr()
    tars = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    samples = {s["__key__"]: s for s in wds.WebDataset(tars, shardshuffle=False)}
    assert main(["captions", *selection, "--out", str(tmp_path / "c.jsonl"), *spec]) == 0
    captions = {r["key"]: r for r in pl.read_ndjson(tmp_path / "c.jsonl").to_dicts()}

    with_nl = [samples[f"e621/{i}"] for i in finished if f"e621/{i}" in samples]
    cut_off = [samples[f"e621/{i}"] for i in unfinished if f"e621/{i}" in samples]
    assert with_nl and cut_off
    for sample in with_nl:
        lines = sample["txt"].decode().split("\n")
        meta = json.loads(sample["json"])
        assert lines == [meta["caption"]["tags"], "A long description.", "Short."]
        assert meta["caption"]["nl"] == ["A long description.", "Short."]
        assert meta["caption"]["tags"].split(", ")[-1] in ("safe", "nsfw", "explicit")
    for sample in cut_off:  # an unfinished summary is no caption
        assert "\n" not in sample["txt"].decode()
        assert json.loads(sample["json"])["caption"]["nl"] == []
    for key, sample in samples.items():
        assert sample["txt"].decode() == captions[key]["caption"], key
        assert json.loads(sample["json"])["caption"]["tags"] == captions[key]["tags"]


def test_captions_preview_and_errors(small_demo, tmp_path, capsys):
    code = main(["captions", "--mirror", str(small_demo), "--query", "solo", "--preview", "2",
                 "--order", "general", "--max-tags", "3"])  # fmt: skip
    printed = capsys.readouterr().out.splitlines()
    assert code == 0 and len(printed) == 5 and printed[0].startswith("e621/")
    assert printed[-1].startswith("caption tokens (CLIP, ")
    assert len(printed[1].strip().split(", ")) <= 3
    assert main(["captions", "--mirror", str(small_demo)]) == 2
    assert "--out FILE, --preview N" in capsys.readouterr().err
    missing = tmp_path / "missing.jsonl"
    code = main(["captions", "--mirror", str(small_demo), "--preview", "1",
                 "--nl-captions", str(missing)])  # fmt: skip
    assert code == 2 and "missing.jsonl" in capsys.readouterr().err
    code = main(["captions", "--mirror", str(small_demo), "--preview", "1", "--order", "generl"])
    assert code == 2 and "generl" in capsys.readouterr().err


def test_e621_captions_have_categories_in_order_without_any_flag(small_pull):
    from e6ingest.readers.reader import iter_samples

    order = ("artist", "copyright", "character", "species", "general", "lore", "meta")
    with_artist = 0
    for _, members in iter_samples(small_pull):
        meta = json.loads(members["json"])
        tags = meta["tags"]
        with_artist += bool(tags["artist"])
        expected = [t.replace("_", " ") if len(t) > 3 else t for c in order for t in tags[c]]
        caption = members["txt"].decode().split(", ")
        assert caption == [t for t in expected if t in caption]  # the site's category order
        assert not {"hi res", "absurd res"} & set(caption[: len(caption) // 2])  # meta last
    assert with_artist > 10


@pytest.mark.slow
def test_a_token_budget_holds_for_every_pulled_caption(small_demo, tmp_path):
    from e6ingest.captions.tokens import count_tokens
    from e6ingest.config import make_config
    from e6ingest.pipeline import pull
    from e6ingest.readers.reader import iter_samples

    config = make_config({"rating": "e,q,s", "max-tokens": 75, "people-first": True})
    out = pull(config, tmp_path / "out", small_demo, workers=1).out
    captions = [m["txt"].decode() for _, m in iter_samples(out)]
    assert captions and max(count_tokens(captions)) <= 75


def test_a_missing_tags_table_is_a_warning_that_says_what_it_costs(small_demo, tmp_path):
    import shutil

    from e6ingest.config import make_config
    from e6ingest.pipeline import pull

    mirror = tmp_path / "mirror"
    shutil.copytree(small_demo, mirror, ignore=shutil.ignore_patterns("E621_dataset_1M"))
    events = []
    pull(make_config({"rating": "e"}), tmp_path / "out", mirror, workers=1,
         progress=events.append)  # fmt: skip
    warnings = [e.message for e in events if isinstance(e, Warned)]
    assert len(warnings) == 1 and "no tags table" in warnings[0]
    assert "every tag counts as general" in warnings[0] and "--tag-table" in warnings[0]


def test_pruning_without_an_implications_table_is_refused(small_demo, tmp_path, capsys):
    """danbooru2024's manifest names no implications table, nor do metadata files given
    alone: ``--prune-implied`` is refused in one line naming the flag that gives one (it
    once pruned nothing, silently)."""
    metadata = next(small_demo.rglob("posts-*.parquet"))
    for where in (["--mirror", str(small_demo), "--dataset", "danbooru2024"],
                  ["--metadata", str(metadata)]):  # fmt: skip
        assert main(["captions", *where, "--prune-implied", "--preview", "1"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--prune-implied: no implications table" in err[0], err
        assert "--implications FILE" in err[0]
        with_file = ["--implications", str(tmp_path / "implications.csv")]
        (tmp_path / "implications.csv").write_text("antecedent_name,consequent_name\na,b\n")
        assert main(["captions", *where, "--prune-implied", *with_file, "--preview", "1"]) == 0
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"no implications table \(danbooru2024 names none\)"):
        pull(make_config({"dataset": "danbooru2024", "prune-implied": True}), out, small_demo)
    assert not out.exists()


def test_captions_written_a_batch_at_a_time_equal_those_built_at_once(
    small_demo, tmp_path, monkeypatch
):
    """``captions --out`` captions the selection in batches (memory bounded by a batch):
    quality tiers over the whole selection, NL texts and variants come out as the
    captions of the whole selection built at once; the preview kept while writing is the
    file's first captions and every n-th one."""
    from e6ingest import dataset
    from e6ingest.captions import CaptionSpec

    data = dataset.open_dataset(mirror=small_demo)
    posts = data.select(selection_query("", (), "e621"))
    nl_file = tmp_path / "nl.jsonl"
    ids = posts.select("id").collect()["id"].to_list()
    nl_file.write_text("".join(json.dumps({"id": i, "regular_summary": f"Picture {i}.",
                                           "brief_summary": "", "response_finish_reason": "STOP"})
                               + "\n" for i in ids[::3]))  # fmt: skip
    spec = CaptionSpec(quality_tag=True, rating_tag=True, nl_captions=(str(nl_file),),
                       variants="standard", max_tokens=75)  # fmt: skip
    at_once = dataset.captions(posts, spec, data.tables)
    out = tmp_path / "captions.jsonl"
    monkeypatch.setattr("e6ingest.captions.tokens.STATS_SAMPLE", 13)  # every n-th, n > 1
    preview = dataset.CaptionPreview(10)
    written = dataset.write_captions_of(posts, out, spec, data.tables, batch_rows=7,
                                        preview=preview)  # fmt: skip
    batched = pl.read_ndjson(out)
    assert written == len(at_once) == len(batched) > 20
    assert batched.to_dicts() == json.loads(at_once.write_json())
    head, sampled = preview.frames()
    assert head.to_dicts() == batched.head(10).to_dicts()
    assert sampled.to_dicts() == batched.gather_every(written // 13).to_dicts()
    assert 13 <= sampled.height < written // 2  # a sample, from many batches
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    at_once_file = tmp_path / "at-once.jsonl"
    dataset.write_captions(at_once, at_once_file)
    assert at_once_file.read_bytes() == out.read_bytes()


def test_the_first_and_last_captions_are_made_in_short_batches(small_demo, tmp_path, monkeypatch):
    """The captions start after a short first batch and end with a short last one (the
    write nothing overlaps), each batch at most ``batch_rows``; the file is the same."""
    from e6ingest import captioned, dataset

    data = dataset.open_dataset(mirror=small_demo)
    posts = data.select(selection_query("", (), "e621"))
    sizes: list[int] = []
    caption_frame = captioned.caption_frame

    def counted(batch, *args):
        sizes.append(batch.height)
        return caption_frame(batch, *args)

    monkeypatch.setattr(captioned, "caption_frame", counted)
    written = []
    for batches in (None, data.select_in_batches("", dataset.caption_inputs(posts), 12, 3)):
        sizes.clear()
        out = tmp_path / f"captions-{len(written)}.jsonl"
        assert dataset.write_captions_of(posts, out, batch_rows=12, batches=batches) > 30
        assert sizes[0] <= 3 and sizes[-1] == 3 and max(sizes) <= 12, sizes
        written.append(out.read_bytes())
    assert written[0] == written[1] == dataset.captions(posts).write_ndjson().encode()


def test_captions_command_reads_fewer_posts_at_once_with_variants(
    small_demo, tmp_path, monkeypatch
):
    """``captions --out`` reads the metadata a part at a time: as many posts as it
    captions at once, so with the caption and 3 variants a quarter as many rows per read
    (a read of a full batch would hold four times the posts until they are written)."""
    from e6ingest import captioned, dataset

    asked: list[tuple[int, int]] = []
    real = dataset.Dataset.select_in_batches

    def recorded(self, query, columns, rows, first=0):
        asked.append((rows, first))
        return real(self, query, columns, rows, first)

    monkeypatch.setattr(dataset.Dataset, "select_in_batches", recorded)
    base = ["captions", "--mirror", str(small_demo), "--rating", "e,q,s", "--out"]
    assert main([*base, str(tmp_path / "plain.jsonl")]) == 0
    assert main([*base, str(tmp_path / "v.jsonl"), "--variants", "short,medium,full"]) == 0
    full = captioned.CAPTION_BATCH_ROWS
    assert asked == [(full, full // 4), (full // 4, full // 16)]
    written = pl.read_ndjson(tmp_path / "v.jsonl")
    assert written["id"].to_list() == pl.read_ndjson(tmp_path / "plain.jsonl")["id"].to_list()


def test_write_captions_to_standard_output(capsysbinary, tmp_path, monkeypatch):
    from e6ingest import dataset

    frame = pl.DataFrame({"id": [1], "key": ["e621/1"], "caption": ["a"], "tags": ["a"],
                          "nl": [[]]}, schema_overrides={"nl": pl.List(pl.String)})  # fmt: skip
    monkeypatch.chdir(tmp_path)
    dataset.write_captions(frame, "-")
    assert json.loads(capsysbinary.readouterr().out) == frame.to_dicts()[0]
    assert not list(tmp_path.iterdir())  # no file named "-"


@pytest.mark.parametrize("failing", ["the write", "the sync", "the captions"])
def test_a_failure_while_captions_are_written_keeps_the_old_file_and_names_its_cause(
    small_demo, tmp_path, monkeypatch, capsys, failing
):
    """Batches are written while the next is captioned: a disk that fills during a write
    or while a written batch is synced stops the command with the disk-full line (exit
    4), an error while captioning is reported as itself even with a write in flight, and
    either way the captions file written before stays as it was, with no temporary file
    left."""
    import errno

    from e6ingest import captioned
    from e6ingest.captions import CaptionInputError

    out = tmp_path / "captions.jsonl"
    args = ["captions", "--mirror", str(small_demo), "--rating", "e,q,s", "--out", str(out)]
    assert main(args) == 0
    before = out.read_bytes()
    capsys.readouterr()
    monkeypatch.setattr("e6ingest.captioned.posts_per_batch", lambda *_: 20)
    calls = {"write": 0, "caption": 0, "sync": 0}
    real_write, real_caption = pl.DataFrame.write_ndjson, captioned.caption_frame
    real_sync = captioned._SYNC_DATA

    def write(frame, target=None):
        calls["write"] += 1
        if failing == "the write" and calls["write"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(out))
        return real_write(frame, target)

    def sync(fd):
        calls["sync"] += 1
        if failing == "the sync" and calls["sync"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(out))
        return real_sync(fd)

    def caption(*a, **k):
        calls["caption"] += 1
        if failing == "the captions" and calls["caption"] == 3:
            raise CaptionInputError("nl.jsonl row 3: not an object")
        return real_caption(*a, **k)

    monkeypatch.setattr(pl.DataFrame, "write_ndjson", write)
    monkeypatch.setattr("e6ingest.captioned.caption_frame", caption)
    monkeypatch.setattr("e6ingest.captioned._SYNC_DATA", sync)
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    if failing in ("the write", "the sync"):
        assert code == 4 and "disk full" in err and str(out) in err
    else:
        assert code == 2 and "nl.jsonl row 3: not an object" in err
    assert "Traceback" not in err and calls["write"] >= 2
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["captions.jsonl"]


def test_captions_written_whole_where_the_page_cache_hint_is_refused(
    small_demo, tmp_path, monkeypatch
):
    """Each written batch is written in pieces, each piece's pages let go of once synced;
    a file system that refuses that hint costs nothing: the file is the same, byte for
    byte, with every caption once and in order."""
    import errno

    args = ["captions", "--mirror", str(small_demo), "--rating", "e,q,s", "--out"]
    assert main([*args, str(tmp_path / "first.jsonl")]) == 0
    monkeypatch.setattr("e6ingest.captioned.posts_per_batch", lambda *_: 20)
    monkeypatch.setattr("e6ingest.captioned.WRITTEN_AT_ONCE", 4_000)  # a few rows a piece
    hints = []

    def refuse(fd, offset, length, advice):
        hints.append(advice)
        raise OSError(errno.EINVAL, "Invalid argument")

    batches = []
    real_write = _BatchWriter.write
    monkeypatch.setattr(_BatchWriter, "write", lambda w, f: batches.append(1) or real_write(w, f))
    monkeypatch.setattr("e6ingest.captioned._ADVISE", refuse)
    assert main([*args, str(tmp_path / "second.jsonl")]) == 0
    assert len(hints) > len(batches) > 1  # one per piece, several pieces per batch
    assert (tmp_path / "second.jsonl").read_bytes() == (tmp_path / "first.jsonl").read_bytes()
