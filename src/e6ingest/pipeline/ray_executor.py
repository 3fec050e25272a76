"""The same shard tasks on a Ray cluster: one Ray task per output shard.

Ray is an optional extra (``pip install "e6ingest[ray]"``) imported only here, when used.
The cluster is the one at ``address`` (default: ``RAY_ADDRESS``), or a local Ray started for
the run. Every node must see the output folder at the same path (a shared mount) and have
e6ingest installed; each node downloads the source shards its tasks read into its own cache.

Ray runs a task again when the worker or node running it is lost (``max_retries``), so a
task can run twice: a shard is written under a temporary name of its own and renamed into
place, the same bytes whichever run finishes, so a retry is harmless. An exception inside a
task (a coding error) is not retried: it ends the run like on the local executor. Tasks
owned by a driver that dies are stopped by Ray with their owner.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any, TypeVar

from e6ingest.config import ConfigError
from e6ingest.pipeline.executor import ClusterUnavailable, Executor, Initializer

T = TypeVar("T")
R = TypeVar("R")


def _ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise ConfigError('the Ray executor needs Ray: pip install "e6ingest[ray]"') from None
    return ray


def _run(fn: Callable[[T], R], task: T, initializer: Initializer | None, context: Any) -> R:
    if initializer is not None:
        initializer(context, 1)
    return fn(task)


def _call(fn: Callable[..., R], *args: Any) -> R:
    return fn(*args)


def _unreachable(address: str | None, exc: BaseException) -> str:
    """What to say when Ray cannot reach or join the cluster at ``address``."""
    said = " ".join(str(exc).split())
    said = said if len(said) <= 300 else said[:300] + "..."
    where = f"the Ray cluster at {address}" if address else "a local Ray"
    return (f"cannot join {where} ({type(exc).__name__}: {said}); check --ray-address or "
            "RAY_ADDRESS, and that this machine holds the credentials the cluster asks for "
            "(Ray's RAY_AUTH_MODE)")  # fmt: skip


CONNECT_SECONDS = 10.0  # how long a cluster's address may take to answer at all
_HOST_PORT = re.compile(r"(?:ray://)?\[?([^\[\]/]+?)\]?:(\d+)")


def _check_answers(address: str | None) -> None:
    """Fail at once when nothing answers at a cluster's ``host:port`` (Ray itself would
    retry for minutes before saying so); other address forms are left to Ray."""
    found = _HOST_PORT.fullmatch(address or "")
    if found is None:
        return
    host, port = found.group(1), int(found.group(2))
    try:
        socket.create_connection((host, port), timeout=CONNECT_SECONDS).close()
    except (OSError, ValueError) as exc:
        raise ClusterUnavailable(_unreachable(address, exc)) from None


class RayExecutor(Executor):
    """Runs each task as a Ray task (one CPU each), at most ``in_flight`` at a time
    (default: the cluster's CPUs), yielding results as they finish."""

    def __init__(
        self,
        address: str | None = None,
        max_retries: int = 3,
        in_flight: int | None = None,
        num_cpus: int | None = None,
        node_ip_address: str | None = None,
    ) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.max_retries = max_retries
        self.in_flight = in_flight
        self.num_cpus = num_cpus  # of a local Ray started for the run
        self.node_ip_address = node_ip_address  # this machine's address on the cluster
        self._started = False

    def check_address(self) -> None:
        """Fail at once (:class:`ClusterUnavailable`) when nothing answers at the cluster's
        address: before a run plans, not after."""
        _check_answers(self.address)

    def _connect(self) -> ModuleType:
        ray = _ray()
        if not ray.is_initialized():
            options: dict[str, Any] = {"log_to_driver": False}
            if self.node_ip_address:
                options["_node_ip_address"] = self.node_ip_address
            if self.address is None:
                options.update(num_cpus=self.num_cpus, include_dashboard=False)
            _check_answers(self.address)
            try:
                ray.init(address=self.address, **options)
            except (ConnectionError, RuntimeError) as exc:
                if isinstance(exc, RuntimeError) and "connect" not in str(exc).lower():
                    raise  # not a cluster out of reach
                raise ClusterUnavailable(_unreachable(self.address, exc)) from None
            self._started = True
        return ray

    def run(
        self,
        fn: Callable[[T], R],
        tasks: Sequence[T],
        initializer: Initializer | None = None,
        context: Any = None,
    ) -> Iterator[R]:
        if not tasks:
            return
        ray = self._connect()
        remote = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)
        run = remote(_run)
        limit = self._in_flight(ray)
        pending = iter(tasks)
        running: list[Any] = []  # Ray object references
        try:
            for task in pending:
                running.append(run.remote(fn, task, initializer, context))
                if len(running) >= limit:
                    break
            while running:
                done, running = ray.wait(running, num_returns=1)
                result = ray.get(done[0])
                for task in pending:
                    running.append(run.remote(fn, task, initializer, context))
                    break
                yield result
        except BaseException:
            for ref in running:
                ray.cancel(ref, force=True)
            raise

    def _in_flight(self, ray: ModuleType) -> int:
        return self.in_flight or max(1, int(ray.cluster_resources().get("CPU", 1)))

    def parallel_tasks(self) -> int:
        """The tasks in flight: ``in_flight``, else the cluster's CPUs."""
        return self._in_flight(self._connect())

    def on_every_node(self, fn: Callable[..., R], *args: Any) -> list[R]:
        """``fn(*args)`` once on every alive node of the cluster."""
        ray = self._connect()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        remote = ray.remote(num_cpus=0, max_retries=self.max_retries)(_call)
        refs = [
            remote.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ).remote(fn, *args)
            for node in ray.nodes()
            if node.get("Alive")
        ]
        results: list[R] = ray.get(refs)
        return results

    def close(self) -> None:
        """Disconnect from the cluster (and stop a local Ray started for the run)."""
        if self._started:
            _ray().shutdown()
            self._started = False
