"""`e6ingest export kohya`: the sd-scripts fine-tuning layout and metadata, resumable and
safe against keys that would leave the target folder."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from e6ingest import tomlfile
from e6ingest.cli import main
from e6ingest.readers.kohya import ExportError, export_kohya, metadata_entry, safe_paths
from e6ingest.readers.reader import iter_samples
from e6ingest.shards.manifest import (
    FORMAT_VERSION,
    OutputDataset,
    OutputManifest,
    OutputTotals,
    ShardEntry,
)


def _sd_scripts_captions(metadata: dict, image_dir: Path, separator: str = ", ") -> dict[str, str]:
    """What sd-scripts 0.10's fine-tuning dataset trains on for each image of a metadata
    dict: a relative key is joined with the subset's image_dir and must name the file."""
    out = {}
    for image_key, md in metadata.items():
        path = image_key if os.path.isabs(image_key) else os.path.join(image_dir, image_key)
        assert os.path.isfile(path), image_key
        caption, tags = md.get("caption"), md.get("tags")
        if caption is None:
            caption = tags
        elif tags:
            caption = caption + separator + tags
        out[image_key] = caption
    return out


def test_export_layout_and_metadata_dict(small_pull, tmp_path, capsys):
    to = tmp_path / "kohya"
    assert main(["export", "kohya", str(small_pull), "--to", str(to), "--quiet"]) == 0
    samples = dict(iter_samples(small_pull))
    metadata = json.loads((to / "metadata.json").read_text())
    assert len(metadata) == len(samples) > 20
    trained = _sd_scripts_captions(metadata, to)
    for key, members in samples.items():
        site, post_id = key.split("/")
        image = to / site / f"{post_id}.webp"
        assert image.read_bytes() == members["webp"]
        assert (to / site / f"{post_id}.txt").read_bytes() == members["txt"]
        entry = metadata[f"{site}/{post_id}.webp"]
        meta = json.loads(members["json"])
        assert entry["image_size"] == list(Image.open(image).size) == meta["size"]
        assert trained[f"{site}/{post_id}.webp"] == meta["caption"]["tags"]
    assert f"{len(samples)} images written, 0 already there" in capsys.readouterr().out


def test_export_jsonl_and_resume(small_pull, tmp_path):
    to = tmp_path / "kohya"
    first = export_kohya(small_pull, to, jsonl=True)
    lines = [json.loads(line) for line in (to / "metadata.jsonl").read_text().splitlines()]
    assert len(lines) == first.exported
    assert all({"image_path", "caption", "image_size"} <= set(line) for line in lines)
    assert all((to / line["image_path"]).is_file() for line in lines)

    # An export cut short: one image never written, another left as a temporary file.
    gone, partial = (line["image_path"] for line in lines[:2])
    (to / gone).unlink()
    (to / partial).rename(
        to / os.path.dirname(partial) / f".{os.path.basename(partial)}.1-0123456789ab.tmp"
    )
    again = export_kohya(small_pull, to, jsonl=True)
    assert (again.exported, again.kept) == (2, first.exported - 2)
    assert (to / "metadata.jsonl").read_text().splitlines() == [
        json.dumps(line, ensure_ascii=False) for line in lines
    ]


def test_metadata_entry_puts_natural_language_in_caption():
    meta = {"size": [640, 480], "caption": {"text": "a, b", "tags": "a, b", "nl": ["A cat."]}}
    assert metadata_entry(meta) == {"tags": "a, b", "caption": "A cat.", "image_size": [640, 480]}
    # No NL text: the tags are the caption (sd-scripts 0.10 with wildcards reads caption alone)
    assert metadata_entry({**meta, "caption": {"tags": "a", "nl": []}}) == {
        "caption": "a", "image_size": [640, 480],
    }  # fmt: skip


def _evil_output(tmp_path):
    out = tmp_path / "evil"
    (out / "shards").mkdir(parents=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for key in ("../../escape/1", "/abs/2", "e621/../../3", "e621/4", "e621/5x"):
            for ext, data in (("webp", b"RIFF"), ("txt", b"t"), ("json", b'{"size": [1, 1]}')):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("e621/6.webp")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    (out / "shards" / "00000.tar").write_bytes(buf.getvalue())
    data = buf.getvalue()
    shard = ShardEntry("shards/00000.tar", 5, len(data), hashlib.sha256(data).hexdigest())
    manifest = OutputManifest(FORMAT_VERSION, "0", OutputDataset("evil", "e621"), {},
                              OutputTotals(written=5), (shard,))  # fmt: skip
    (out / "manifest.json").write_bytes(manifest.to_json())
    return out


def test_unsafe_keys_are_refused_and_nothing_leaves_the_folder(tmp_path):
    to = tmp_path / "deep" / "kohya"
    summary = export_kohya(_evil_output(tmp_path), to)
    assert summary.refused == ["../../escape/1", "/abs/2", "e621/../../3", "e621/5x"]
    assert summary.exported == 1
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert [w for w in written if not w.startswith("evil")] == [
        "deep/kohya/.e6ingest-export.json", "deep/kohya/.e6ingest-export.parquet",
        "deep/kohya/dataset_config.toml", "deep/kohya/e621/4.txt", "deep/kohya/e621/4.webp",
        "deep/kohya/metadata.json",
    ]  # fmt: skip


def test_safe_paths():
    assert safe_paths(Path("/data"), "e621/12") == (
        Path("/data/e621/12.webp"), Path("/data/e621/12.txt"),
    )  # fmt: skip
    for key in ("..", "e621/..", "../1", "e621/1/2", "E621/1", "e621/-1", "e621/1.webp"):
        assert safe_paths(Path("/data"), key) is None, key


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def test_export_refuses_a_folder_that_is_not_its_own(small_pull, tmp_path, capsys):
    to = tmp_path / "kohya"
    (to / "e621").mkdir(parents=True)
    (to / "metadata.json").write_text('{"mine": {"caption": "my own dataset"}}')
    (to / "e621" / "1.txt").write_text("my hand-made caption")
    before = _tree(to)
    with pytest.raises(ExportError, match="did not write"):
        export_kohya(small_pull, to)
    assert _tree(to) == before
    code = main(["export", "kohya", str(small_pull), "--to", str(to), "--quiet"])
    assert code == 2 and _tree(to) == before
    capsys.readouterr()
    code = main(["export", "kohya", str(small_pull), "--to", str(to)])  # with its progress bar
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "did not write" in err, err


@pytest.mark.parametrize("inside", ["train", "shards/train", "."])
def test_export_into_the_pull_output_is_refused(small_pull, tmp_path, inside, capsys):
    """An export inside the pull's output would be files the pull did not write: its next
    run (a resume, --retry-failed) would refuse the folder."""
    out = tmp_path / "out"
    shutil.copytree(small_pull, out)
    before = _tree(out)
    code = main(["export", "kohya", str(out), "--to", str(out / inside), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "inside the pull's output" in err and len(err.strip().splitlines()) == 1
    assert _tree(out) == before


def test_reexport_never_replaces_hand_edits(small_pull, tmp_path):
    to = tmp_path / "kohya"
    export_kohya(small_pull, to)
    edited, reversed_ = sorted(to.glob("*/*.txt"))[:2]
    edited.write_text("my own words")
    original = reversed_.read_bytes()
    reversed_.write_bytes(original[::-1])  # same size, other content
    summary = export_kohya(small_pull, to)
    assert edited.read_text() == "my own words"
    assert reversed_.read_bytes() == original[::-1]
    assert sorted(summary.changed) == sorted(
        p.relative_to(to).as_posix() for p in (edited, reversed_)
    )


@pytest.mark.slow
def test_reexport_of_a_new_pull_replaces_same_size_captions(small_demo, tmp_path):
    from e6ingest.config import make_config
    from e6ingest.pipeline import pull

    plain = pull(make_config({"ratings": "e,q,s", "shard_size": 20}), tmp_path / "a", small_demo,
                 workers=1).out  # fmt: skip
    swapped = make_config({"ratings": "e,q,s", "shard_size": 20,
                           "caption": {"order": ["general", "artist", "character", "copyright",
                                                 "meta"]}})  # fmt: skip
    other = pull(swapped, tmp_path / "b", small_demo, workers=1).out
    to = tmp_path / "kohya"
    export_kohya(plain, to)
    export_kohya(other, to)
    for key, members in iter_samples(other):
        site, post_id = key.split("/")
        assert (to / site / f"{post_id}.txt").read_bytes() == members["txt"]


def test_export_never_writes_through_symlinks(small_pull, tmp_path):
    to = tmp_path / "kohya"
    export_kohya(small_pull, to)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    first = next(to.glob("*/*.webp"))
    (first.parent / "999999999.txt").symlink_to(victim)
    with pytest.raises(ExportError, match="did not write"):
        export_kohya(small_pull, to)
    assert victim.read_text() == "precious"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "link").symlink_to(elsewhere)
    with pytest.raises(ExportError, match="link is a symbolic link; export kohya follows none"):
        export_kohya(small_pull, tmp_path / "link")
    assert not any(elsewhere.iterdir())


def test_moved_export_resolves_every_key_from_its_dataset_config(small_pull, tmp_path):
    to = tmp_path / "kohya"
    export_kohya(small_pull, to, jsonl=True)
    moved = tmp_path / "elsewhere" / "mounted"
    moved.parent.mkdir()
    to.rename(moved)
    config = tomlfile.loads((moved / "dataset_config.toml").read_text())
    subset = config["datasets"][0]["subsets"][0]
    manifest = json.loads((small_pull / "manifest.json").read_text())
    assert config["general"]["resolution"] == manifest["config"]["buckets"]["resolution"]
    assert config["general"]["max_bucket_reso"] == manifest["config"]["buckets"]["max_side"]
    # sd-scripts runs in the export folder: image_dir and metadata_file resolve from there.
    metadata_file = moved / subset["metadata_file"]
    lines = [json.loads(line) for line in metadata_file.read_text().splitlines()]
    assert len(lines) == len(list(iter_samples(small_pull)))
    for line in lines:
        assert not os.path.isabs(line["image_path"]) and line["image_path"].endswith(".webp")
        assert os.path.isfile(os.path.join(moved / subset["image_dir"], line["image_path"]))


def test_absolute_keys_on_request(small_pull, tmp_path):
    to = tmp_path / "kohya"
    export_kohya(small_pull, to, absolute=True)
    metadata = json.loads((to / "metadata.json").read_text())
    assert all(os.path.isabs(key) and os.path.isfile(key) for key in metadata)


@pytest.mark.parametrize("name", ["../precious.txt", "/tmp/x/precious.txt", "e621/../../p.txt",
                                  "e621/sub/1.txt", "notes.txt"])  # fmt: skip
def test_a_tampered_export_record_never_deletes_outside_the_folder(small_pull, tmp_path, name):
    import hashlib

    import polars as pl

    to = tmp_path / "kohya"
    export_kohya(small_pull, to)
    precious = tmp_path / "precious.txt"
    precious.write_text("a user's file")
    record = pl.read_parquet(to / ".e6ingest-export.parquet")
    digest = hashlib.sha256(precious.read_bytes()).hexdigest()
    tampered = pl.concat([record, pl.DataFrame({"path": [name], "sha256": [digest]})])
    tampered.write_parquet(to / ".e6ingest-export.parquet")
    with pytest.raises(ExportError, match="no export writes"):
        export_kohya(small_pull, to, jsonl=True)
    assert precious.read_text() == "a user's file"
    code = main(["export", "kohya", str(small_pull), "--to", str(to), "--quiet"])
    assert code == 2 and precious.read_text() == "a user's file"


def test_switching_to_jsonl_removes_the_old_metadata_json(small_pull, tmp_path):
    to = tmp_path / "kohya"
    export_kohya(small_pull, to)
    assert (to / "metadata.json").is_file()
    export_kohya(small_pull, to, jsonl=True)
    assert not (to / "metadata.json").exists() and (to / "metadata.jsonl").is_file()
    export_kohya(small_pull, to)  # and back
    assert (to / "metadata.json").is_file() and not (to / "metadata.jsonl").exists()


def test_absolute_keys_hold_no_dot_dot(small_pull, tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    export_kohya(small_pull, "../kohya", absolute=True)
    metadata = json.loads((tmp_path / "kohya" / "metadata.json").read_text())
    assert all(".." not in key and Path(key).is_file() for key in metadata)


def test_a_reexport_leaves_the_trainers_caches_alone(small_pull, tmp_path):
    to = tmp_path / "kohya"
    export_kohya(small_pull, to)
    image = next(iter(sorted(to.glob("*/*.webp"))))
    caches = [image.with_name(f"{image.stem}_1024x1024_sdxl.npz"),
              image.with_name(f"{image.stem}_te.npz"), image.with_suffix(".npz")]  # fmt: skip
    for cache in caches:
        cache.write_bytes(b"latents")  # what sd-scripts' cache_latents.py writes
    again = export_kohya(small_pull, to)
    assert again.kept > 0 and all(c.read_bytes() == b"latents" for c in caches)
    (image.parent / "notes.npz").write_text("mine")  # not a cache of an image: foreign
    with pytest.raises(ExportError, match=r"notes\.npz"):
        export_kohya(small_pull, to)


def _trained_text(md: dict, version: str, wildcard: bool, separator: str = ",") -> list[str]:
    """The captions sd-scripts trains an image on from its metadata entry, as its fine-tuning
    dataset builds them (library/train_util.py, v0.9.1 and v0.10), every line a wildcard may
    pick (without wildcards, the first line)."""
    caption, tags = md.get("caption"), md.get("tags")
    if version == "0.9":
        if caption is None:
            caption, tags = tags, None
        if wildcard:
            if tags is not None:
                tags = tags.replace("\n", separator)
            if caption is not None and tags is not None:
                caption = "\n".join(f"{line}{separator}{tags}" for line in caption.split("\n")
                                    if line.strip() != "")  # fmt: skip
        elif tags:
            caption = caption + separator + tags
    else:  # 0.10
        caption = "" if caption is None else caption
        if wildcard:
            if tags is not None:
                tags = tags.replace("\n", separator)
                caption = "\n".join(f"{line}{separator}{tags}" for line in caption.split("\n")
                                    if line.strip() != "")  # fmt: skip
        elif tags:
            caption = (caption + separator if caption else "") + tags
    lines = (caption or "").split("\n")
    return lines if wildcard else lines[:1]


@pytest.mark.parametrize("version", ["0.9", "0.10"])
@pytest.mark.parametrize("wildcard", [False, True])
def test_sd_scripts_never_trains_on_an_empty_caption(small_pull, tmp_path, version, wildcard):
    to = tmp_path / "kohya"
    export_kohya(small_pull, to)
    metadata = json.loads((to / "metadata.json").read_text())
    for key, members in iter_samples(small_pull):
        meta = json.loads(members["json"])
        texts = _trained_text(metadata[f"{key}.webp"], version, wildcard)
        assert texts and all(t.strip() for t in texts), (key, version, wildcard)
        if not meta["caption"]["nl"]:  # the tag caption, whatever the version
            assert texts == [meta["caption"]["tags"]]
