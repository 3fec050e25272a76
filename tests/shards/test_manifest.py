"""`manifest.json` is read through one typed reader: a newer format or a malformed field is
refused in one line that names the file and the field, never a traceback or a guess."""

from __future__ import annotations

import json
import shutil

import pytest

from e6ingest.cli import main
from e6ingest.shards.layout import OutputError
from e6ingest.shards.manifest import FORMAT_VERSION, OutputManifest, read_manifest


@pytest.fixture
def output(small_pull, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(small_pull, out)
    return out


def _rewrite(out, change):
    path = out / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_the_manifest_reads_back_as_written(output):
    manifest = read_manifest(output)
    assert manifest.format_version == FORMAT_VERSION
    assert manifest.written == sum(s.samples for s in manifest.shards) > 0
    totals = manifest.totals
    assert totals.selected == totals.written + totals.failures and manifest.dataset.site
    assert all((output / s.name).stat().st_size == s.bytes for s in manifest.shards)
    again = OutputManifest.from_dict(json.loads(manifest.to_json()), "again")
    assert again == manifest
    assert manifest.to_json() == (output / "manifest.json").read_bytes()


def test_a_newer_format_is_refused_in_one_line(output, capsys):
    _rewrite(output, lambda d: d.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(OutputError, match="newer than this e6ingest reads"):
        read_manifest(output)
    assert main(["verify", str(output)]) != 0
    captured = capsys.readouterr()
    text = (captured.out + captured.err).strip()
    assert "Traceback" not in text
    line = next(t for t in text.splitlines() if "newer" in t)
    assert "manifest.json" in line and f"format {FORMAT_VERSION + 1}" in line


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d.update(totals=[1, 2]), "totals is a list"),
        (lambda d: d["shards"][0].update(samples="many"), "shard entry"),
        (lambda d: d.update(format_version="4"), "format_version '4'"),
        (lambda d: d.update(shards={"a": 1}), "shards is a dict"),
        (lambda d: d["totals"].update(written="5"), "totals {"),
        (lambda d: d["totals"].update(failed={"missing": -1}), "are not counts"),
        (lambda d: d["dataset"].update(repos=["a"]), "dataset {"),
    ],
)
def test_a_malformed_field_is_named(output, change, named):
    _rewrite(output, change)
    with pytest.raises(OutputError, match=r"manifest\.json") as caught:
        read_manifest(output)
    assert named in str(caught.value)
    assert "\n" not in str(caught.value)


def test_keys_of_a_later_version_are_kept_aside(output):
    _rewrite(output, lambda d: d.update(bucket_stats={"512x512": 3}))
    manifest = read_manifest(output)
    assert manifest.extra == {"bucket_stats": {"512x512": 3}}
