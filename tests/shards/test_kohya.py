"""`e6ingest export kohya`: the sd-scripts fine-tuning layout and metadata, resumable and
safe against keys that would leave the target folder."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

from PIL import Image

from e6ingest.cli import main
from e6ingest.shards.kohya import export_kohya, metadata_entry, safe_paths
from e6ingest.shards.reader import iter_samples


def _sd_scripts_captions(metadata: dict, separator: str = ", ") -> dict[str, str]:
    """What sd-scripts' fine-tuning dataset trains on for each image of a metadata dict."""
    out = {}
    for image_key, md in metadata.items():
        assert os.path.exists(image_key), image_key  # sd-scripts looks the key up as a path
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
    trained = _sd_scripts_captions(metadata)
    for key, members in samples.items():
        site, post_id = key.split("/")
        image = to / site / f"{post_id}.webp"
        assert image.read_bytes() == members["webp"]
        assert (to / site / f"{post_id}.txt").read_bytes() == members["txt"]
        entry = metadata[str(image)]
        meta = json.loads(members["json"])
        assert entry["image_size"] == list(Image.open(image).size) == meta["size"]
        assert trained[str(image)] == meta["caption"]["tags"]
    assert f"{len(samples)} images written, 0 already there" in capsys.readouterr().out


def test_export_jsonl_and_resume(small_pull, tmp_path):
    to = tmp_path / "kohya"
    first = export_kohya(small_pull, to, jsonl=True)
    lines = [json.loads(line) for line in (to / "metadata.jsonl").read_text().splitlines()]
    assert len(lines) == first.exported
    assert all({"image_path", "tags", "image_size"} <= set(line) for line in lines)
    assert all(os.path.isfile(line["image_path"]) for line in lines)

    # An export cut short: one image never written, another left as a temporary file.
    gone, partial = (os.path.relpath(line["image_path"], to) for line in lines[:2])
    (to / gone).unlink()
    (to / partial).rename(to / os.path.dirname(partial) / f".{os.path.basename(partial)}.tmp")
    again = export_kohya(small_pull, to, jsonl=True)
    assert (again.exported, again.kept) == (2, first.exported - 2)
    assert (to / "metadata.jsonl").read_text().splitlines() == [
        json.dumps(line, ensure_ascii=False) for line in lines
    ]


def test_metadata_entry_puts_natural_language_in_caption():
    meta = {"size": [640, 480], "caption": {"text": "a, b", "tags": "a, b", "nl": ["A cat."]}}
    assert metadata_entry(meta) == {"tags": "a, b", "caption": "A cat.", "image_size": [640, 480]}
    assert "caption" not in metadata_entry({**meta, "caption": {"tags": "a", "nl": []}})


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
    manifest = {"shards": [{"name": "shards/00000.tar", "samples": 5}]}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_unsafe_keys_are_refused_and_nothing_leaves_the_folder(tmp_path):
    to = tmp_path / "deep" / "kohya"
    summary = export_kohya(_evil_output(tmp_path), to)
    assert summary.refused == ["../../escape/1", "/abs/2", "e621/../../3", "e621/5x"]
    assert summary.exported == 1
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert [w for w in written if not w.startswith("evil")] == [
        "deep/kohya/e621/4.txt", "deep/kohya/e621/4.webp", "deep/kohya/metadata.json",
    ]  # fmt: skip


def test_safe_paths():
    assert safe_paths(Path("/data"), "e621/12") == (
        Path("/data/e621/12.webp"), Path("/data/e621/12.txt"),
    )  # fmt: skip
    for key in ("..", "e621/..", "../1", "e621/1/2", "E621/1", "e621/-1", "e621/1.webp"):
        assert safe_paths(Path("/data"), key) is None, key
