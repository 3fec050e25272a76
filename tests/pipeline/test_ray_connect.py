"""A Ray cluster that cannot be joined (wrong address, credentials it asks for) is one line
and exit 3, like a Hub out of reach; an error of another kind from Ray stays a bug."""

from __future__ import annotations

import socket
import time

import pytest

from e6ingest.cli.failures import failure
from e6ingest.pipeline import ClusterUnavailable
from e6ingest.pipeline.ray_executor import RayExecutor

ray = pytest.importorskip("ray")


@pytest.fixture()
def answering():
    """An address where something listens (the cluster's port answers; Ray, mocked, then
    fails to join it)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield f"127.0.0.1:{listener.getsockname()[1]}"


def _refusing(exc: BaseException):
    def init(*args, **kwargs):
        raise exc

    return init


@pytest.mark.parametrize(
    "raised",
    [
        ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6399"),
        RuntimeError("Failed to connect to GCS. Last connection error: InvalidAuthToken"),
    ],
)
def test_a_cluster_out_of_reach_is_one_line_and_exit_3(monkeypatch, answering, raised):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", _refusing(raised))
    with pytest.raises(ClusterUnavailable) as caught:
        RayExecutor(answering).parallel_tasks()
    code, message = failure(caught.value)
    assert code == 3 and "\n" not in message
    assert message.startswith(f"cannot join the Ray cluster at {answering} (")
    assert "--ray-address" in message and str(raised) in message


def test_another_error_from_ray_init_is_not_taken_for_an_unreachable_cluster(
    monkeypatch, answering
):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", _refusing(RuntimeError("Unknown keyword argument(s): x")))
    with pytest.raises(RuntimeError, match="Unknown keyword"):
        RayExecutor(answering).parallel_tasks()


def test_an_address_where_nothing_answers_fails_at_once(monkeypatch):
    """Ray would retry for minutes; nothing listens on the port of a socket just closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", _refusing(AssertionError("Ray was not to be asked")))
    began = time.monotonic()
    with pytest.raises(ClusterUnavailable, match=f"cannot join the Ray cluster at 127.0.0.1:{port} "
                       r"\(ConnectionRefusedError"):  # fmt: skip
        RayExecutor(f"127.0.0.1:{port}").parallel_tasks()
    assert time.monotonic() - began < 5


def test_pull_with_an_address_where_nothing_answers_stops_before_planning(tmp_path, capsys):
    from e6ingest.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    code = main(["pull", "--demo", "--out", str(out), "--executor", "ray",
                 "--ray-address", f"127.0.0.1:{port}"])  # fmt: skip
    assert code == 3 and not out.exists()
    assert f"cannot join the Ray cluster at 127.0.0.1:{port}" in capsys.readouterr().err
