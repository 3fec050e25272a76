"""The Hub source through the real huggingface_hub client against a local Hub server."""

from __future__ import annotations

import hashlib
import json

import polars as pl
import pytest

from e6ingest.config import make_config
from e6ingest.manifests import load_manifest
from e6ingest.pipeline import pull
from e6ingest.pipeline.events import Warned
from e6ingest.readers.verify import verify_output
from e6ingest.sources import FailureKind, HubError, HubOptions, HubSource, MirrorSource
from e6ingest.sources.base import PostFailure
from tests.hubserver import Faults, HubServer


def _options(hub: HubServer, tmp_path, **kw) -> HubOptions:
    return HubOptions(endpoint=hub.endpoint, cache_dir=str(tmp_path / "cache"), backoff=0.02,
                      max_backoff=0.2, **kw)  # fmt: skip


def _some_ids(root, n=25):
    manifest = load_manifest("e621")
    ids = []
    with MirrorSource(root, manifest) as mirror:
        for repo in manifest.images:
            for path in sorted((root / repo.index_repo_id).rglob("*.json")):
                files = json.loads(path.read_text())["files"]
                ids += [int(name.split("/")[-1].split(".")[0]) for name in files]
                if len(ids) >= n:
                    break
        good = []
        for post_id in ids:
            try:
                good.append((post_id, mirror.fetch(post_id).data))
            except PostFailure:
                continue
    return good[:n]


def test_range_reads_match_the_mirror(small_demo, tmp_path):
    expected = _some_ids(small_demo)
    with (
        HubServer(small_demo) as hub,
        HubSource(load_manifest("e621"), _options(hub, tmp_path)) as source,
    ):
        results = list(source.fetch_many(post_id for post_id, _ in expected))
        ranged = [r for r in hub.requests if r[1].startswith("/cdn/")]
    assert [r.data for r in results] == [data for _, data in expected]
    assert len(ranged) == len(expected)  # one GET per post, no whole tars


@pytest.mark.parametrize("faults", [Faults(), Faults(error_5xx=0.15, drop=0.1, seed=4)])
def test_whole_shards_are_downloaded_once_and_read_locally(small_demo, tmp_path, faults):
    expected = _some_ids(small_demo, 10)
    manifest = load_manifest("e621")
    shards = frozenset(manifest.images[0].shard_of(i) for i, _ in expected)
    with HubServer(small_demo, faults) as hub:
        with HubSource(manifest, _options(hub, tmp_path), whole_shards=shards) as source:
            assert [source.fetch(i).data for i, _ in expected] == [d for _, d in expected]
        tar_gets = [r for r in hub.requests if r[1].startswith("/cdn/") and not r[2]]
    assert 0 < len(tar_gets) <= len(shards) * 2


def test_transient_faults_are_retried(small_demo, tmp_path):
    expected = _some_ids(small_demo)
    faults = Faults(error_5xx=0.1, drop=0.05, truncate=0.05, corrupt=0.1, seed=1)
    with (
        HubServer(small_demo, faults) as hub,
        HubSource(load_manifest("e621"), _options(hub, tmp_path, io_workers=4)) as source,
    ):
        results = [source.fetch(i).data for i, _ in expected]
        injected = [r for r in hub.requests if r[2]]
    assert results == [d for _, d in expected]
    assert len(injected) >= 5


def test_index_that_always_fails_is_unavailable_never_missing(small_demo, tmp_path):
    post_id, _ = _some_ids(small_demo, 1)[0]
    with (
        HubServer(small_demo, Faults(always_fail=(r"\.json$",))) as hub,
        HubSource(load_manifest("e621"), _options(hub, tmp_path, attempts=3)) as source,
        pytest.raises(PostFailure) as info,
    ):
        source.fetch(post_id)
    assert info.value.kind is FailureKind.UNAVAILABLE
    assert "gave up after 3 attempts" in info.value.message


def test_wrong_bytes_never_pass(small_demo, tmp_path):
    post_id, _data = _some_ids(small_demo, 1)[0]
    with (
        HubServer(small_demo, Faults(corrupt_always=(r"\.tar$",))) as hub,
        HubSource(load_manifest("e621"), _options(hub, tmp_path)) as source,
        pytest.raises(PostFailure) as info,
    ):
        source.fetch(post_id)
    assert info.value.kind is FailureKind.CORRUPT


def test_gated_repo_gives_one_clear_error(small_demo, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secretsecretsecret")
    manifest = load_manifest("danbooru2024")
    faults = Faults(gated=("deepghs/danbooru2024-webp-4Mpixel",))
    with (
        HubServer(small_demo, faults) as hub,
        HubSource(manifest, _options(hub, tmp_path)) as source,
        pytest.raises(HubError) as info,
    ):
        source.metadata_file(manifest.metadata[0])
    message = str(info.value)
    assert "gated" in message and "hf auth login" in message and "HF_TOKEN" in message
    assert "secret" not in message


def _tars(out):
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "shards").glob("*.tar")
    }


@pytest.mark.slow
def test_pull_from_hub_with_20_percent_faults_equals_pull_from_mirror(demo_root, tmp_path):
    config = make_config({"ratings": "e,q", "shard_size": 250})
    faults = Faults(error_5xx=0.06, rate_limit=0.02, drop=0.04, truncate=0.04, corrupt=0.04, seed=5)
    with HubServer(demo_root, faults) as hub:
        options = _options(hub, tmp_path, io_workers=8, whole_shard_share=2.0)  # ranges only
        faulty = pull(config, tmp_path / "hub", None, workers=2, hub=options)
        # Rarely a post meets a fault on every one of its attempts; it is then recorded as
        # retryable, and one rerun with retry_failed (what the summary tells a user) gets it.
        assert faulty.retryable <= 2
        if faulty.retryable:
            faulty = pull(config, tmp_path / "hub", None, workers=2, hub=options,
                          retry_failed=True)  # fmt: skip
        injected = sum(1 for r in hub.requests if r[2])
    mirror = pull(config, tmp_path / "mirror", demo_root, workers=2)
    assert injected > 50
    assert faulty.retryable == 0
    assert (faulty.selected, faulty.written, faulty.failed) == (
        mirror.selected,
        mirror.written,
        mirror.failed,
    )
    assert _tars(tmp_path / "hub") == _tars(tmp_path / "mirror")


@pytest.mark.slow
def test_unavailable_posts_are_retried_with_retry_failed(small_demo, tmp_path):
    out = tmp_path / "out"
    # Every index of source shards 0-499 of the 2024 repository fails.
    failing = (r"e621-2024-webp-4Mpixel_index/resolve/[^/]+/original/data-0[0-4]\d\d\.json$",)
    config = make_config({"ratings": "e,q,s", "shard_size": 10})
    with HubServer(small_demo, Faults(always_fail=failing)) as hub:
        first = pull(config, out, None, workers=1, hub=_options(hub, tmp_path, attempts=2))
    failures = pl.read_parquet(out / "failures.parquet").filter(pl.col("kind") == "unavailable")
    assert first.retryable == failures.height > 0
    assert failures["message"].str.contains("data-0").all()
    affected = _tars(out)
    stats = {p.name: json.loads(p.read_text()) for p in (out / "shards").glob("*.stats.json")}
    touched = {n.replace(".stats.json", ".tar") for n, s in stats.items()
               if any(f["kind"] == "unavailable" for f in s["failures"])}  # fmt: skip
    untouched = {k: v for k, v in affected.items() if k not in touched}
    assert touched and untouched

    with HubServer(small_demo) as hub:
        again = pull(config, out, None, workers=1, hub=_options(hub, tmp_path))
        assert again.retryable == first.retryable  # a plain rerun keeps complete shards
        retried = pull(config, out, None, workers=1, hub=_options(hub, tmp_path),
                       retry_failed=True)  # fmt: skip
    assert retried.retryable == 0
    assert retried.shards_skipped == len(untouched)
    clean = pull(config, tmp_path / "clean", small_demo, workers=1)
    assert _tars(out) == _tars(tmp_path / "clean")
    assert retried.written == clean.written


@pytest.mark.parametrize("expire", [False, True])
def test_cdn_address_is_reused_until_it_expires(small_demo, tmp_path, expire):
    post_id, data = _some_ids(small_demo, 1)[0]
    with (
        HubServer(small_demo) as hub,
        HubSource(load_manifest("e621"), _options(hub, tmp_path)) as source,
    ):
        fetched = []
        for _ in range(3):
            fetched.append(source.fetch(post_id).data)
            if expire:
                hub.expire_cdn()
        assert fetched == [data] * 3
        resolves = [r for r in hub.requests if "/resolve/" in r[1] and r[1].endswith(".tar")]
        expired = [r for r in hub.requests if r[2] == "expired"]
    # Fresh addresses: one resolve request (rate-limited on the Hub), then the CDN only.
    # Expired ones: the CDN refuses, and the source goes back through resolve each time.
    assert (len(resolves), len(expired)) == ((3, 2) if expire else (1, 0))


@pytest.mark.slow
def test_retry_failed_with_the_hub_gone_changes_nothing(small_demo, tmp_path):
    out = tmp_path / "out"
    failing = (r"e621-2024-webp-4Mpixel_index/resolve/[^/]+/original/data-0[0-4]\d\d\.json$",)
    config = make_config({"ratings": "e,q,s", "shard_size": 10})
    with HubServer(small_demo, Faults(always_fail=failing)) as hub:
        options = _options(hub, tmp_path, attempts=2)
        first = pull(config, out, None, workers=1, hub=options)
    assert first.retryable > 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # The server is gone: the same retry must stop before it touches a finished shard.
    with pytest.raises(HubError, match="cannot reach"):
        pull(config, out, None, workers=1, hub=options, retry_failed=True)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    problems = verify_output(out).problems  # whole, but the unavailable posts are said
    assert len(problems) == 1 and "--retry-failed" in problems[0]


@pytest.mark.slow
def test_retry_failed_against_a_hub_answering_500_keeps_every_finished_shard(small_demo, tmp_path):
    out = tmp_path / "out"
    failing = (r"e621-2024-webp-4Mpixel_index/resolve/[^/]+/original/data-0[0-4]\d\d\.json$",)
    config = make_config({"ratings": "e,q,s", "shard_size": 10})
    ranges = {"attempts": 2, "whole_shard_share": 2.0}  # images read by range, never cached
    with HubServer(small_demo, Faults(always_fail=failing)) as hub:
        first = pull(config, out, None, workers=1, hub=_options(hub, tmp_path, **ranges))
    assert first.retryable > 0
    tars = _tars(out)
    samples = {
        p.name: json.loads(p.read_text())["samples"] for p in out.glob("shards/*.stats.json")
    }
    events = []
    with HubServer(small_demo, Faults(always_fail=(r".",))) as hub:  # every request: HTTP 500
        retried = pull(config, out, None, workers=1, hub=_options(hub, tmp_path, **ranges),
                       retry_failed=True, progress=events.append)  # fmt: skip
    assert _tars(out) == tars  # not one shard rewritten with fewer samples
    after = {p.name: json.loads(p.read_text())["samples"] for p in out.glob("shards/*.stats.json")}
    assert after == samples and retried.written == first.written
    kept = [e.message for e in events if isinstance(e, Warned) and "kept as it was" in e.message]
    assert kept and retried.written_now == 0
    report = verify_output(out)  # the output is whole, but posts of its plan are missing
    assert not report.ok and any("--retry-failed" in p for p in report.problems)


@pytest.mark.parametrize("status", [400, 416])
@pytest.mark.parametrize("token", ["hf_SecretToken1234567890", "plain-secret-42"])
def test_a_server_echoing_the_token_never_gets_it_stored(small_demo, tmp_path, status, token):
    import io

    from e6ingest.cli.progress import JsonReporter

    log = io.StringIO()
    with HubServer(small_demo, Faults(echo_auth=status)) as hub:
        options = HubOptions(endpoint=hub.endpoint, cache_dir=str(tmp_path / "cache"),
                             token=token, attempts=2, whole_shard_share=2.0, backoff=0.01,
                             max_backoff=0.02)  # fmt: skip
        summary = pull(make_config({"ratings": "e,q,s", "shard_size": 20}), tmp_path / "out",
                       None, workers=1, hub=options, progress=JsonReporter(log))  # fmt: skip
    assert summary.failed.get("unavailable", 0) > 0  # the server did echo it back
    stored = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert not [p for p in stored if token.encode() in p.read_bytes()]
    assert token not in log.getvalue() and "\n".join(summary.lines()).count(token) == 0
    assert "HTTP" in pl.read_parquet(tmp_path / "out/failures.parquet")["message"][0]


def test_the_cache_never_keeps_a_ref_outside_its_folder(tmp_path):
    from e6ingest.sources.hubcache import HubCache

    cache = HubCache(tmp_path / "cache").ensure()
    with pytest.raises(ValueError, match="leave the cache"):
        cache.set_ref("o/n", "../../../x", "0" * 40)
    assert cache.ref("o/n", "../../../x") is None
    assert not (tmp_path / "x").exists()
