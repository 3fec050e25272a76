"""An HTTP client whose requests end by a deadline, headers included.

The HTTP client under huggingface_hub (httpx, or its successor httpx2) bounds each socket
read, not a request: a server dripping its status line and headers a byte a second keeps a
request alive for ever. The client made here reads and writes its sockets through a network
layer that waits at most until the deadline of the request the calling thread is making
(:func:`deadline`); past it, a read ends with the library's own timeout error, which the
retry layer treats as any timeout.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from collections.abc import Iterator
from typing import Any

_state = threading.local()


@contextlib.contextmanager
def deadline(at: float) -> Iterator[None]:
    """Requests this thread makes inside the block end by ``at`` (``time.monotonic``)."""
    previous = getattr(_state, "at", None)
    _state.at = at
    try:
        yield
    finally:
        _state.at = previous


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """The wait allowed for one socket operation: ``timeout``, cut at the deadline."""
    at: float | None = getattr(_state, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("the request's deadline passed (--timeout)")
    return left if timeout is None else min(timeout, left)


def _network_layer(core: Any) -> Any:
    """A network backend of the ``httpcore`` module ``core`` that keeps to deadlines."""

    # the classes' bases come from the httpcore module found at run time
    class Stream(core.NetworkStream):  # type: ignore[misc]
        def __init__(self, inner: Any):
            self._inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            data: bytes = self._inner.read(max_bytes, _left(timeout, core.ReadTimeout))
            return data

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._inner.write(buffer, _left(timeout, core.WriteTimeout))

        def close(self) -> None:
            self._inner.close()

        def start_tls(
            self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
        ) -> Stream:
            wait = _left(timeout, core.ConnectTimeout)
            return Stream(self._inner.start_tls(ssl_context, server_hostname, wait))

        def get_extra_info(self, info: str) -> Any:
            return self._inner.get_extra_info(info)

    class Backend(core.NetworkBackend):  # type: ignore[misc]
        def __init__(self) -> None:
            self._inner = core.SyncBackend()

        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Any = None,
        ) -> Stream:
            wait = _left(timeout, core.ConnectTimeout)
            return Stream(self._inner.connect_tcp(host, port, wait, local_address, socket_options))

        def connect_unix_socket(
            self, path: str, timeout: float | None = None, socket_options: Any = None
        ) -> Stream:
            wait = _left(timeout, core.ConnectTimeout)
            return Stream(self._inner.connect_unix_socket(path, wait, socket_options))

        def sleep(self, seconds: float) -> None:
            self._inner.sleep(seconds)

    return Backend()


def deadline_client() -> Any:
    """A client of the library huggingface_hub uses (same TLS settings, redirects followed,
    huggingface_hub's request hooks) whose connections keep to :func:`deadline`."""
    from huggingface_hub import get_session

    session = get_session()
    http = importlib.import_module(type(session).__module__.split(".")[0])  # httpx, httpx2
    core = importlib.import_module(http.__name__.replace("httpx", "httpcore"))
    transport = http.HTTPTransport()
    transport._pool = core.ConnectionPool(  # the transport's pool, on the deadline layer
        ssl_context=http.create_ssl_context(),
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=_network_layer(core),
    )
    # Proxies from the environment get the library's own transports: bounded per read only.
    return http.Client(transport=transport, follow_redirects=True, timeout=None,
                       event_hooks=session.event_hooks)  # fmt: skip
