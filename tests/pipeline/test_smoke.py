"""End to end: `e6ingest pull` on the 1k-post demo mirror of each site, read back with
webdataset exactly as a trainer would."""

from __future__ import annotations

import io
import json

import polars as pl
import pytest
import webdataset as wds
from PIL import Image

from e6ingest.cli import main

MAX_PIXELS = 2048 * 2048


def _read_samples(out):
    tars = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    dataset = wds.WebDataset(tars, shardshuffle=False)
    return list(dataset)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["e621", "danbooru2024"])
def test_pull_demo_mirror_end_to_end(dataset, demo_root, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        ["pull", "--dataset", dataset, "--mirror", str(demo_root), "--rating", "e,q,s",
         "--out", str(out), "--shard-size", "300", "--workers", "2", "--quiet"]
    )  # fmt: skip
    summary = capsys.readouterr().out
    assert code == 0, summary
    manifest = json.loads((out / "manifest.json").read_text())
    totals = manifest["totals"]
    failures = pl.read_parquet(out / "failures.parquet")
    samples = _read_samples(out)

    # The selection is every non-deleted post rated e, q or s.
    assert totals["selected"] > 500
    assert f"selected {totals['selected']}, written {len(samples)}" in summary
    assert len(samples) == totals["selected"] - failures.height
    assert failures.height == sum(totals["failed"].values())
    # The demo has every kind of failure a real dataset has, and each has a reason.
    assert {"missing", "undecodable", "unsupported", "corrupt"} <= set(failures["kind"])
    assert failures["message"].str.len_chars().min() > 10
    assert failures["stage"].is_in(["select", "fetch", "image"]).all()

    keys = set()
    for sample in samples:
        assert {"webp", "txt", "json"} <= set(sample), sample["__key__"]
        meta = json.loads(sample["json"])
        assert sample["__key__"] == f"{meta['site']}/{meta['id']}" == meta["key"]
        assert meta["rating"] in ("e", "q", "s")
        image = Image.open(io.BytesIO(sample["webp"]))
        image.load()
        assert image.format == "WEBP"
        assert image.mode == "RGB"
        assert image.width * image.height <= MAX_PIXELS
        assert max(image.size) <= 16383
        assert list(image.size) == meta["size"]
        assert sample["txt"].decode() == meta["caption"]["text"] == meta["caption"]["tags"]
        keys.add(sample["__key__"])
    assert len(keys) == len(samples)
    # Large sources were scaled down; compliant WebP passed through untouched.
    metas = [json.loads(s["json"]) for s in samples]
    assert any(
        m["reencoded"] and m["original_size"][0] * m["original_size"][1] > MAX_PIXELS for m in metas
    )
    assert any(not m["reencoded"] for m in metas)
    assert set(failures["id"]).isdisjoint(int(k.split("/")[1]) for k in keys)


@pytest.mark.slow
def test_rerun_continues_and_other_config_is_refused(small_demo, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["pull", "--mirror", str(small_demo), "--out", str(out), "--shard-size", "20", "--quiet"]
    assert main(args) == 0
    first = {p.name: p.read_bytes() for p in (out / "shards").glob("*.tar")}
    (out / "shards" / "00001.stats.json").unlink()  # shard 1 looks unfinished
    capsys.readouterr()
    assert main(args) == 0
    assert "(2 already complete)" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in (out / "shards").glob("*.tar")} == first

    assert main([*args, "--rating", "e"]) == 2
    assert "different configuration" in capsys.readouterr().err
    assert main([*args, "--rating", "e", "--overwrite"]) == 0


def test_empty_selection_stops_unless_allowed(small_demo, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["pull", "--mirror", str(small_demo), "--out", str(out), "--quiet",
            "--query", "solo no_such_tag_anywhere"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "warning: tag 'no_such_tag_anywhere' is on no post" in err
    assert "the selection is empty: 'no_such_tag_anywhere' matches no post" in err
    assert "--allow-empty" in err
    assert not (out / "plan.parquet").exists()
    assert main([*args, "--allow-empty"]) == 0
    assert "selected 0, written 0" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["shards"] == []


@pytest.mark.parametrize("flag", ["--sample", "--limit"])
def test_asking_for_more_posts_than_the_selection_holds_says_so(flag, small_demo, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["pull", "--mirror", str(small_demo), "--out", str(out), "--quiet",
            "--workers", "1", "--rating", "s", flag, "5000"]  # fmt: skip
    assert main(args) in (0, 1)
    err = capsys.readouterr().err
    selected = json.loads((out / "manifest.json").read_text())["totals"]["selected"]
    assert 0 < selected < 5000
    assert f"warning: {flag} 5,000: the selection holds only {selected:,} posts" in err
    args[4] = str(tmp_path / "exact")
    assert main([*args[:-1], str(selected)]) in (0, 1)  # as many as there are: no warning
    assert "warning" not in capsys.readouterr().err


def test_pull_without_a_source_says_how_to_get_one(tmp_path, capsys, monkeypatch):
    import socket

    with socket.socket() as s:  # no Hub here: a port nobody listens on
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.getsockname()[1]}")
    monkeypatch.setenv("E6INGEST_CACHE", str(tmp_path / "cache"))
    assert main(["pull", "--out", str(tmp_path / "o"), "--rating", "e"]) == 3
    err = capsys.readouterr().err
    assert "--mirror" in err and "--demo" in err


@pytest.mark.slow
def test_log_json_reports_every_shard_and_the_summary(small_demo, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["pull", "--mirror", str(small_demo), "--out", str(out), "--shard-size", "20",
            "--log-json"]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]
    assert captured.err == ""  # no bars
    names = [e["event"] for e in events if e["event"] != "posts"]
    planned = events[[e["event"] for e in events].index("planned")]
    assert names == ["planning", "planned"] + ["shard"] * planned["todo"] + ["summary"]
    posts = [e for e in events if e["event"] == "posts"]
    assert sum(e["written"] + e["failed"] for e in posts) == planned["posts_todo"]
    manifest = json.loads((out / "manifest.json").read_text())
    summary = events[-1]
    assert summary["written"] == manifest["totals"]["written"] > 0
    assert summary["selected"] == planned["selected"] == planned["posts_todo"]
    assert summary["failed"] == manifest["totals"]["failed"]
    assert summary["bytes"] == sum(s["bytes"] for s in manifest["shards"])
    assert summary["samples_per_second"] > 0
    assert sum(e["samples"] for e in events if e["event"] == "shard") == summary["written"]
