"""Sources that cannot hurt a run: whole shards verified before use, bodies bounded in bytes
and time, one retry layer, and every request of a run at the commits its plan pinned."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from pathlib import Path

import pytest

from e6ingest.config import make_config
from e6ingest.core import FailureKind, PostFailure
from e6ingest.demo import build_demo
from e6ingest.manifests import load_manifest, parse_manifest
from e6ingest.pipeline import pull
from e6ingest.sources import HubError, HubOptions, HubSource
from tests.hubserver import COMMIT, Faults, HubServer

COMMIT_B = "b" * 40


def _options(hub: HubServer, tmp_path: Path, **kw) -> HubOptions:
    return HubOptions(endpoint=hub.endpoint, cache_dir=str(tmp_path / "cache"), backoff=0.01,
                      max_backoff=0.05, **kw)  # fmt: skip


def _tars(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.glob("shards/*.tar")}


def _one_repo(root: Path, files: dict[int, bytes], padding: int = 0):
    """A one-shard image repository ``o/images`` on disk, and its manifest."""
    buf = io.BytesIO()
    index = {}
    with tarfile.open(fileobj=buf, mode="w") as tar:
        members = [(f"{i}.webp", data) for i, data in files.items()]
        members += [("padding.bin", bytes(padding))] if padding else []
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            index[name] = {"offset": tar.offset - -(-len(data) // 512) * 512, "size": len(data),
                           "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
    blob = buf.getvalue()
    (root / "o/images").mkdir(parents=True, exist_ok=True)
    (root / "o/images/0000.tar").write_bytes(blob)
    document = {"filesize": len(blob), "hash_lfs": hashlib.sha256(blob).hexdigest(),
                "files": index}  # fmt: skip
    (root / "o/images/0000.json").write_text(json.dumps(document))
    return parse_manifest(
        {"name": "t", "site": "e621",
         "images": [{"repo": "o/images", "tar": "{shard:04d}.tar", "index": "{shard:04d}.json",
                     "shards": 1}],
         "metadata": [{"repo": "o/meta", "path": "m.parquet", "schema": "e621_newest"}]},
        "test.toml",
    )  # fmt: skip


# -- whole shards: verified after download, re-read by range when their bytes fail --------


@pytest.mark.slow
def test_a_whole_shard_damaged_in_transit_loses_no_post(small_demo, tmp_path):
    config = make_config({"ratings": "e,q,s", "shard_size": 20})
    faults = Faults(corrupt_whole_once=(r"\.tar$",))
    with HubServer(small_demo, faults) as hub:
        options = _options(hub, tmp_path, whole_shard_share=0.0)  # every shard whole
        result = pull(config, tmp_path / "hub", None, workers=1, hub=options)
        corrupted = [r for r in hub.requests if r[2] == "corrupt"]
    clean = pull(config, tmp_path / "mirror", small_demo, workers=1)
    assert corrupted  # the first download of every tar was damaged
    assert (result.written, result.failed) == (clean.written, clean.failed)
    assert _tars(tmp_path / "hub") == _tars(tmp_path / "mirror")


def test_a_damaged_cached_shard_is_discarded_and_read_by_range(tmp_path):
    files = {1: b"one" * 100, 2: b"two" * 200}
    manifest = _one_repo(tmp_path / "root", files)
    with HubServer(tmp_path / "root") as hub:
        options = _options(hub, tmp_path)
        with HubSource(manifest, options, whole_shards=frozenset({0})) as source:
            assert source.fetch(1).data == files[1]
            cached = source.cached_tar(manifest.images[0], 0)
        assert cached is not None and cached.is_file()
        data = bytearray(cached.read_bytes())
        data[data.index(b"twotwo")] ^= 0xFF  # rots on disk after a good download
        cached.write_bytes(bytes(data))
        hub.requests.clear()
        with HubSource(manifest, options, whole_shards=frozenset({0})) as source:
            assert source.fetch(2).data == files[2]
            assert source.fetch(1).data == files[1]
        assert not cached.exists()  # discarded
        assert len([r for r in hub.requests if r[1].startswith("/cdn/")]) == 2  # by range


# -- bodies bounded in bytes and in time ----------------------------------------------------


def test_a_server_ignoring_ranges_costs_no_more_than_the_span(tmp_path):
    manifest = _one_repo(tmp_path / "root", {1: b"x" * 1000}, padding=40 << 20)
    with (
        HubServer(tmp_path / "root", Faults(ignore_range=True)) as hub,
        HubSource(manifest, _options(hub, tmp_path, attempts=3)) as source,
        pytest.raises(PostFailure) as info,
    ):
        source.fetch(1)
    assert info.value.kind is FailureKind.UNAVAILABLE  # retryable, not lost
    assert "ignored the byte range" in info.value.message
    tar_answers = [n for n in hub.sent if n > 100_000]
    assert max(tar_answers, default=0) < 16 << 20  # never the 40 MB file


@pytest.mark.slow
def test_a_slow_drip_server_cannot_hang_a_run(tmp_path):
    manifest = _one_repo(tmp_path / "root", {1: b"x" * 1000}).pinned({"o/images": COMMIT})
    start = time.monotonic()
    with (
        HubServer(tmp_path / "root", Faults(drip=0.02)) as hub,
        HubSource(manifest, _options(hub, tmp_path, attempts=2, timeout=1.0)) as source,
        pytest.raises(PostFailure) as info,
    ):
        source.fetch(1)  # its index alone would take 30 s to drip
    assert info.value.kind is FailureKind.UNAVAILABLE
    assert "--timeout" in info.value.message
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("only_ranges", [True, False])
def test_headers_dripped_a_byte_a_second_end_by_the_timeout(tmp_path, only_ranges):
    manifest = _one_repo(tmp_path / "root", {1: b"x" * 1000}).pinned({"o/images": COMMIT})
    faults = Faults(drip_headers=0.2, only_ranges=only_ranges)
    start = time.monotonic()
    with (
        HubServer(tmp_path / "root", faults) as hub,
        HubSource(manifest, _options(hub, tmp_path, attempts=2, timeout=1.0)) as source,
        pytest.raises(PostFailure) as info,
    ):
        source.fetch(1)  # each answer's headers alone would take 20 s and more
    assert info.value.kind is FailureKind.UNAVAILABLE
    assert "deadline" in info.value.message or "--timeout" in info.value.message
    assert time.monotonic() - start < 6  # two attempts of at most a second each, and slack


def test_one_retry_layer_for_a_failing_metadata_file(small_demo, tmp_path):
    manifest = load_manifest("e621")
    failing = (r"table\.parquet$",)
    with HubServer(small_demo, Faults(always_fail=failing)) as hub:
        with (
            HubSource(manifest, _options(hub, tmp_path, attempts=3)) as source,
            pytest.raises(HubError, match=r"table\.parquet"),
        ):
            source.metadata_file(manifest.metadata[1])
        asked = [r for r in hub.requests if r[1].endswith("table.parquet")]
    assert len(asked) == 3  # e6ingest's attempts, and no other layer's


def test_rate_limit_honours_retry_after(small_demo, tmp_path):
    manifest = _one_repo(tmp_path / "root", {1: b"x" * 1000})
    sleeps: list[float] = []
    with HubServer(tmp_path / "root", Faults(rate_limit_first=2)) as hub:
        with HubSource(manifest, _options(hub, tmp_path, attempts=5)) as source:
            source.retry.sleep = sleeps.append
            assert source.fetch(1).data == b"x" * 1000
        limited = [r for r in hub.requests if r[2] == "rate_limit"]
    assert len(limited) == 2
    assert sleeps == [0.05, 0.05]  # Retry-After: 1, capped by max_backoff


# -- commits pinned for the whole run -------------------------------------------------------


@pytest.fixture(scope="module")
def moved_demo(tmp_path_factory) -> Path:
    """The same repositories at a later commit: other posts, other images."""
    root = tmp_path_factory.mktemp("moved") / "demo"
    build_demo(root, posts=60, seed=4, workers=1)
    return root


@pytest.mark.slow
def test_a_resume_reads_the_commits_its_plan_pinned(small_demo, moved_demo, tmp_path):
    config = make_config({"ratings": "e,q,s", "shard_size": 20})
    out = tmp_path / "out"
    with HubServer(small_demo, commits={COMMIT: small_demo, COMMIT_B: moved_demo}) as hub:
        options = _options(hub, tmp_path, whole_shard_share=2.0)  # every post by range
        pull(config, out, None, workers=1, hub=options)
        first = _tars(out)
        manifest = json.loads((out / "manifest.json").read_text())
        assert set(manifest["dataset"]["repos"].values()) == {COMMIT}
        for name in ("00001.tar", "00001.stats.json"):
            (out / "shards" / name).unlink()  # an unfinished shard
        hub.move_main(COMMIT_B)  # days later, the repositories moved on
        hub.requests.clear()
        resumed = pull(config, out, None, workers=1, hub=options)
        asked = [r[1] for r in hub.requests if "/resolve/" in r[1]]
        resolved = [r[1] for r in hub.requests if r[1].startswith("/api/")]
    assert resumed.shards_skipped == resumed.shards - 1
    assert _tars(out) == first
    assert asked and all(f"/resolve/{COMMIT}/" in path for path in asked)
    assert not resolved  # the plan's commits, not main's


@pytest.mark.slow
def test_revision_flag_pins_a_commit(small_demo, moved_demo, tmp_path):
    repos = load_manifest("e621").repos
    with HubServer(small_demo, commits={COMMIT: small_demo, COMMIT_B: moved_demo}) as hub:
        options = _options(hub, tmp_path)
        pinned = make_config({"ratings": "e,q,s", "revisions": dict.fromkeys(repos, COMMIT_B)})
        pull(pinned, tmp_path / "pinned", None, workers=1, hub=options)
        hub.move_main(COMMIT_B)
        pull(make_config({"ratings": "e,q,s"}), tmp_path / "main", None, workers=1, hub=options)
    assert _tars(tmp_path / "pinned") == _tars(tmp_path / "main")
    manifest = json.loads((tmp_path / "pinned" / "manifest.json").read_text())
    assert set(manifest["dataset"]["repos"].values()) == {COMMIT_B}


def test_a_mirror_run_records_local(small_pull):
    manifest = json.loads((small_pull / "manifest.json").read_text())
    assert set(manifest["dataset"]["repos"].values()) == {"local"}


# -- whole shards deleted once used, and nothing else ---------------------------------------


@pytest.mark.slow
def test_delete_shards_after_use_deletes_only_the_shards_it_downloaded(small_demo, tmp_path):
    config = make_config({"ratings": "e,q,s", "shard_size": 20})
    with HubServer(small_demo) as hub:
        keep = _options(hub, tmp_path / "keep", whole_shard_share=0.0)
        pull(config, tmp_path / "a", None, workers=1, hub=keep)
        kept = sorted((tmp_path / "keep" / "cache").rglob("*.tar"))
        cache = tmp_path / "drop" / "cache"
        drop = _options(hub, tmp_path / "drop", whole_shard_share=0.0,
                        delete_shards_after_use=True)  # fmt: skip
        HubSource(load_manifest("e621"), drop).cache.ensure()
        mine = cache / "my-own.tar"
        mine.write_bytes(b"not e6ingest's")
        pull(config, tmp_path / "b", None, workers=1, hub=drop)
    assert len(kept) > 5  # without the flag, downloaded shards stay for later runs
    assert sorted(cache.rglob("*.tar")) == [mine]
    assert mine.read_bytes() == b"not e6ingest's"
    assert _tars(tmp_path / "a") == _tars(tmp_path / "b")


def test_a_cache_folder_that_is_not_ours_is_refused(small_demo, tmp_path):
    from e6ingest.cache import CacheError

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "photos.zip").write_bytes(b"mine")
    with HubServer(small_demo) as hub:
        options = _options(hub, tmp_path)
        with pytest.raises(CacheError, match=r"photos\.zip"):
            pull(make_config({"ratings": "e"}), tmp_path / "out", None, workers=1, hub=options)
    assert [p.name for p in cache.iterdir()] == ["photos.zip"]


def test_a_cached_index_changed_on_disk_is_fetched_again(tmp_path):
    manifest = _one_repo(tmp_path / "root", {1: b"x" * 1000}).pinned({"o/images": COMMIT})
    with HubServer(tmp_path / "root") as hub:
        options = _options(hub, tmp_path, whole_shard_share=2.0)
        with HubSource(manifest, options) as source:
            assert source.fetch(1).data == b"x" * 1000
        cached = next((tmp_path / "cache").rglob("0000.json"))
        document = json.loads(cached.read_text())
        document["files"]["1.webp"]["sha256"] = "0" * 64  # rotted: every read would fail
        cached.write_text(json.dumps(document))
        with HubSource(manifest, options) as source:
            assert source.fetch(1).data == b"x" * 1000  # the index was fetched again
        cached.write_text("{" * 50_000)  # unreadable, too deeply nested to parse
        with HubSource(manifest, options) as source:
            assert source.fetch(1).data == b"x" * 1000
