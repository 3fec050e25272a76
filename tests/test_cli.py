"""`e6ingest pull` from the Hub as users type it: the real client, pointed at a local Hub
server with HF_ENDPOINT, for both datasets; offline and gated runs fail at once, clearly."""

from __future__ import annotations

import hashlib
import socket

import pytest

from e6ingest.cli import main
from tests.hubserver import Faults, HubServer


def _tars(out):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.glob("shards/*.tar")}


@pytest.fixture
def hub_env(monkeypatch, tmp_path):
    """The index cache inside the test's folder (tests pass --cache-dir for the Hub cache)."""
    monkeypatch.setenv("E6INGEST_CACHE", str(tmp_path / "e6"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return monkeypatch


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["e621", "danbooru2024"])
def test_pull_from_the_hub_writes_what_the_mirror_pull_writes(
    dataset, small_demo, tmp_path, hub_env, capsys
):
    common = ["--rating", "e,q,s", "--shard-size", "20", "--workers", "1", "--quiet",
              "--cache-dir", str(tmp_path / "hf")]  # fmt: skip
    if dataset != "e621":
        common += ["--dataset", dataset]
    with HubServer(small_demo) as hub:
        hub_env.setenv("HF_ENDPOINT", hub.endpoint)
        code = main(["pull", "--out", str(tmp_path / "hub"), *common])
        served = len(hub.requests)
    hub_summary = capsys.readouterr().out
    assert code == 0, hub_summary
    assert served > 10
    code = main(["pull", "--mirror", str(small_demo), "--out", str(tmp_path / "mirror"), *common])
    mirror_summary = capsys.readouterr().out
    assert code == 0
    assert hub_summary.splitlines()[0] == mirror_summary.splitlines()[0]  # selected, written
    assert _tars(tmp_path / "hub") and _tars(tmp_path / "hub") == _tars(tmp_path / "mirror")


def test_offline_pull_fails_at_once_naming_mirror_and_demo(tmp_path, hub_env, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hub_env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    attempts = []
    connect = socket.create_connection

    def counted(address, *args, **kwargs):
        attempts.append(address)
        return connect(address, *args, **kwargs)

    hub_env.setattr(socket, "create_connection", counted)
    code = main(["pull", "--rating", "e,q,s", "--out", str(tmp_path / "out"), "--quiet",
                 "--cache-dir", str(tmp_path / "hf")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 3
    assert "--mirror" in err and "--demo" in err
    assert len(attempts) == 1  # one look, no retries


def test_gated_dataset_without_access_is_one_message(small_demo, tmp_path, hub_env, capsys):
    hub_env.setenv("HF_TOKEN", "hf_notgoodenoughtoken")
    faults = Faults(gated=("deepghs/danbooru2024-webp-4Mpixel",))
    with HubServer(small_demo, faults) as hub:
        hub_env.setenv("HF_ENDPOINT", hub.endpoint)
        args = ["--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "hf"), "--quiet"]
        code = main(["pull", "--dataset", "danbooru2024", "--rating", "g", *args])
    err = capsys.readouterr().err
    assert code == 3
    assert len(err.strip().splitlines()) == 1, err
    assert "gated" in err and "HF_TOKEN" in err and "notgoodenough" not in err
    assert not (tmp_path / "out" / "shards").exists()


@pytest.mark.parametrize("flag", ["--quiet", "--log-json"])
def test_quiet_pull_builds_the_demo_without_a_bar(flag, small_demo, tmp_path, monkeypatch):
    """--quiet and --log-json promise no bars: the demo's first build shows none either."""
    import e6ingest.demo

    asked = []

    def demo_mirror(posts=1000, seed=0, progress=True):
        asked.append(progress)
        return small_demo

    monkeypatch.setattr(e6ingest.demo, "demo_mirror", demo_mirror)
    out = tmp_path / "out"
    assert main(["pull", "--demo", "--out", str(out), "--rating", "s", "--sample", "3", flag]) in (
        0,
        1,
    )
    assert asked == [False]
    assert main(
        ["pull", "--demo", "--out", str(tmp_path / "o2"), "--rating", "s", "--sample", "3"]
    ) in (0, 1)
    assert asked == [False, True]
