"""Dataset manifests: the bundled ones load; hostile or mistyped values are refused when the
manifest loads, naming the file and the key, before any path is made from them."""

from __future__ import annotations

import copy

import pytest

from e6ingest.manifests import ManifestError, load_manifest, parse_manifest

GOOD = {
    "name": "t",
    "site": "e621",
    "images": [{"repo": "o/images", "tar": "images/{shard:04d}.tar",
                "index": "images/{shard:04d}.json", "shards": 10}],
    "metadata": [{"repo": "o/meta", "path": "m.parquet", "schema": "e621_newest"}],
}  # fmt: skip


def _with(table: str, key: str, value):
    data = copy.deepcopy(GOOD)
    target = data if table == "top" else data[table][0]
    target[key] = value
    return data


def test_bundled_manifests_load():
    for name in ("e621", "danbooru2024"):
        manifest = load_manifest(name)
        assert manifest.images and manifest.metadata
    assert parse_manifest(GOOD, "t.toml").images[0].tar_path(3) == "images/0003.tar"


@pytest.mark.parametrize(
    ("table", "key", "value", "says"),
    [
        ("images", "repo", "../evil", "repository name"),
        ("images", "repo", "o/../x", "repository name"),
        ("images", "repo", "/etc/x", "repository name"),
        ("images", "repo", "a/b/c", "repository name"),
        ("metadata", "repo", "o\\meta", "repository name"),
        ("images", "index_repo", "..", "repository name"),
        ("images", "revision", "../../x", "revision"),
        ("metadata", "revision", "/abs", "revision"),
        ("images", "tar", "../../{shard}.tar", "relative path"),
        ("images", "tar", "/etc/{shard}", "relative path"),
        ("images", "index", "{shard}/../../x.json", "relative path"),
        ("images", "tar", "shard.tar", "one file for every shard"),
        ("images", "tar", "{other}.tar", "template"),
        ("metadata", "path", "/etc/passwd", "relative path"),
        ("metadata", "path", "a/../../b.parquet", "relative path"),
        ("images", "shards", 0, "at least 1"),
        ("images", "shards", -3, "at least 1"),
        ("images", "shards", "1000", "must be an integer"),
        ("images", "shards", 1.5, "must be an integer"),
        ("top", "gated", "false", "must be true or false"),
        ("top", "site", "gelbooru", "site"),
        ("top", "name", 5, "must be a string"),
        ("top", "tags", "deepghs/tags", "must be a table"),
        ("top", "ratings", ["s", "g"], "'g' is not one of the e621 ratings"),
        ("images", "index_rep", "o/index", "unknown key 'index_rep'; did you mean 'index_repo'?"),
        ("metadata", "shema", "e621_2024", "unknown key 'shema'; did you mean 'schema'?"),
        ("top", "galted", True, "unknown key 'galted'; did you mean 'gated'?"),
    ],
)
def test_hostile_or_mistyped_values_are_refused(table, key, value, says):
    with pytest.raises(ManifestError) as info:
        parse_manifest(_with(table, key, value), "evil.toml")
    message = str(info.value)
    assert "evil.toml" in message and key in message and says in message


def test_a_missing_required_key_is_named():
    data = copy.deepcopy(GOOD)
    del data["metadata"][0]["path"]
    with pytest.raises(
        ManifestError, match=r"evil.toml \[\[metadata\]\]: missing required key 'path'"
    ):
        parse_manifest(data, "evil.toml")


def test_pinned_manifest_reads_each_repository_at_its_commit():
    data = _with("images", "index_repo", "o/index")
    manifest = parse_manifest(data, "t.toml").pinned(
        {"o/images": "a" * 40, "o/index": "b" * 40, "o/meta": "c" * 40}
    )
    assert manifest.images[0].revision == "a" * 40
    assert manifest.images[0].index_repo_revision == "b" * 40
    assert manifest.metadata[0].revision == "c" * 40
