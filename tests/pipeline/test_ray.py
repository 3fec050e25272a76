"""The same pull on a Ray cluster: a real one-node cluster started here, every socket on
127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps Ray off the machine's other addresses).
Its output is byte for byte the local executor's; a task whose worker is killed is run
again; a run begun on one executor finishes on the other."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from e6ingest.config import make_config
from e6ingest.pipeline import pull

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}  # conftest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ray.scripts.scripts", *args],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node Ray cluster with 2 CPUs on loopback; its address."""
    temp = tmp_path_factory.mktemp("ray")
    # a home of its own: Ray turns token auth on for a cluster started where an earlier
    # local Ray left ~/.ray/auth_token, and this test's driver has no token to give
    env = {**os.environ, **RAY_ENV, "HOME": str(temp)}
    port = _free_port()
    started = _ray("start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                   "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                   f"--temp-dir={temp}", env=env)  # fmt: skip
    assert started.returncode == 0, started.stderr
    yield f"127.0.0.1:{port}"
    with contextlib.suppress(Exception):
        ray.shutdown()
    _ray("stop", "--force", env=env)


def _executor(address: str):
    from e6ingest.pipeline.ray_executor import RayExecutor

    return RayExecutor(address, node_ip_address="127.0.0.1")


def _digests(out: Path) -> dict[str, str]:
    files = [*out.glob("shards/*.tar"), *out.glob("shards/*.parquet"), *out.glob("shards/*.json")]
    files = [p for p in files if not p.name.endswith(".stats.json")]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(files)}


CONFIG = {"ratings": "e,q,s", "shard_size": 6}


def test_a_pull_on_ray_writes_the_local_bytes(cluster, small_demo, tmp_path):
    local = pull(make_config(CONFIG), tmp_path / "local", small_demo, workers=2)
    executor = _executor(cluster)
    try:
        on_ray = pull(make_config(CONFIG), tmp_path / "ray", small_demo, executor=executor)
    finally:
        executor.close()
    assert (on_ray.written, on_ray.failed) == (local.written, local.failed)
    assert _digests(tmp_path / "ray") == _digests(tmp_path / "local")
    manifest = (tmp_path / "ray" / "manifest.json").read_bytes()
    assert manifest == (tmp_path / "local" / "manifest.json").read_bytes()


def _task_workers() -> list[int]:
    """Ray worker processes running one of e6ingest's tasks (process title ray::_run)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if cmdline.read_bytes().startswith(b"ray::_run"):
                pids.append(int(cmdline.parent.name))
    return pids


def test_a_task_whose_worker_dies_is_run_again(cluster, small_demo, tmp_path):
    killed: list[int] = []
    stop = threading.Event()

    def kill_one() -> None:
        while not stop.is_set() and not killed:
            for pid in _task_workers():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one, daemon=True)
    executor = _executor(cluster)
    try:
        killer.start()
        on_ray = pull(make_config(CONFIG), tmp_path / "ray", small_demo, executor=executor)
    finally:
        stop.set()
        executor.close()
    local = pull(make_config(CONFIG), tmp_path / "local", small_demo, workers=1)
    assert killed, "no task worker was seen running"
    assert on_ray.written == local.written
    assert _digests(tmp_path / "ray") == _digests(tmp_path / "local")


def test_a_run_begun_locally_finishes_on_ray(cluster, small_demo, tmp_path):
    out = tmp_path / "out"
    first = pull(make_config(CONFIG), out, small_demo, workers=1)
    reference = _digests(out)
    for stats in sorted(out.glob("shards/*.stats.json"))[::2]:
        stats.unlink()  # every other shard unfinished
    executor = _executor(cluster)
    try:
        again = pull(make_config(CONFIG), out, small_demo, executor=executor)
    finally:
        executor.close()
    assert 0 < again.shards_skipped < first.shards
    assert _digests(out) == reference
