"""A Ray cluster that cannot be joined (wrong address, credentials it asks for) is one line
and exit 3, like a Hub out of reach; an error of another kind from Ray stays a bug."""

from __future__ import annotations

import pytest

from e6ingest.cli.failures import failure
from e6ingest.pipeline import ClusterUnavailable
from e6ingest.pipeline.ray_executor import RayExecutor

ray = pytest.importorskip("ray")


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
def test_a_cluster_out_of_reach_is_one_line_and_exit_3(monkeypatch, raised):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", _refusing(raised))
    with pytest.raises(ClusterUnavailable) as caught:
        RayExecutor("127.0.0.1:6399").parallel_tasks()
    code, message = failure(caught.value)
    assert code == 3 and "\n" not in message
    assert message.startswith("cannot join the Ray cluster at 127.0.0.1:6399 (")
    assert "--ray-address" in message and str(raised) in message


def test_another_error_from_ray_init_is_not_taken_for_an_unreachable_cluster(monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", _refusing(RuntimeError("Unknown keyword argument(s): x")))
    with pytest.raises(RuntimeError, match="Unknown keyword"):
        RayExecutor("127.0.0.1:6399").parallel_tasks()
