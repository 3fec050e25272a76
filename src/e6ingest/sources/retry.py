"""Talking to the Hub reliably: e6ingest's one retry layer (exponential backoff with jitter
on timeouts, dropped connections, 5xx and 429, honouring Retry-After), and the
classification of what went wrong (no access, not found, offline, wrong bytes, a bug).

Only errors known to be about the network or the server are retried; anything else is a
coding error and is raised as it is."""

from __future__ import annotations

import errno
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from e6ingest.core import FailureKind, PostFailure, redact

if TYPE_CHECKING:
    from e6ingest.sources.hub import HubOptions

T = TypeVar("T")
LOCAL_DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
BAD_BYTES_ATTEMPTS = 3  # bytes that keep failing the sha256 are corrupt upstream
_ERROR_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")  # EntryNotFound, GatedRepo...
# Transport errors of the HTTP client (httpx or its successors), known by class name so
# that no particular client version is imported here.
_TRANSPORT_ERRORS = frozenset({"TransportError", "TimeoutException", "NetworkError"})


class HubError(RuntimeError):
    """The Hub cannot serve this run at all (offline, no access to a gated repository)."""


@dataclass
class HttpStatus(Exception):
    """A response with an error status: its status, the Hub's error code, Retry-After."""

    status: int
    url: str
    error_code: str = ""
    retry_after: float | None = None

    def __post_init__(self) -> None:  # a server's header, kept only when shaped as a code
        if not _ERROR_CODE.match(self.error_code or ""):
            self.error_code = ""

    def __str__(self) -> str:
        code = f" {self.error_code}" if self.error_code else ""
        return f"HTTP {self.status}{code}"


class ShortRead(Exception):
    """A response cut short, too long, or late: retried like any transient error."""


class BadBytes(Exception):
    """Bytes that do not match the index: retried, CORRUPT when they never match."""


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _transport(exc: BaseException) -> bool:
    """A network error (retried); an error of the local disk (full, read-only, no
    permission) is none: it ends the run with its own exit code."""
    if isinstance(exc, OSError) and exc.errno in LOCAL_DISK_ERRORS:
        return False
    return isinstance(exc, OSError) or any(
        cls.__name__ in _TRANSPORT_ERRORS for cls in type(exc).__mro__
    )


def access_error(exc: BaseException, repo: str) -> HubError | None:
    """The run-ending error an HTTP failure stands for (no access, no such repository)."""
    if not isinstance(exc, HttpStatus):
        return None
    if exc.status in (401, 403) or exc.error_code == "GatedRepo":
        return HubError(
            f"no access to {repo}: it is gated or private. Accept its terms on the Hub "
            f"(https://huggingface.co/datasets/{repo}) and log in with `hf auth login` "
            "or set HF_TOKEN"
        )
    if exc.status == 404 and exc.error_code == "RepoNotFound":
        return HubError(f"repository {repo} was not found on the Hub (or needs a token)")
    return None


def offline(exc: BaseException) -> bool:
    """Whether an error means the Hub could not be reached at all."""
    return any(
        type(c).__name__ in ("ConnectError", "gaierror", "ConnectionRefusedError")
        for c in _chain(exc)
    )


def reachable(endpoint: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to the endpoint's host can be opened (a quick offline test)."""
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def unreachable(endpoint: str, purpose: str) -> HubError:
    """The error of a run that needs the Hub and cannot reach it, with the way out."""
    return HubError(
        f"cannot reach the Hugging Face Hub at {endpoint} {purpose}. Without network, "
        "use --mirror DIR (a local copy of the repositories) or --demo"
    )


def require_reachable(endpoint: str, purpose: str) -> None:
    """Raise HubError at once when the Hub cannot be reached."""
    if not reachable(endpoint):
        raise unreachable(endpoint, purpose)


class Retrier:
    """Runs a call with exponential backoff and jitter on transient failures."""

    def __init__(
        self,
        options: HubOptions,
        sleep: Callable[[float], None] = time.sleep,
        slots: threading.Semaphore | None = None,
    ) -> None:
        self.options = options
        self.sleep = sleep
        self.slots = slots or threading.Semaphore(max(1, options.io_workers))
        self._held = threading.local()  # a retried call inside another keeps its slot
        self._rng = random.Random()

    def _attempt(self, call: Callable[[], T]) -> T:
        if getattr(self._held, "slot", False):
            return call()
        with self.slots:
            self._held.slot = True
            try:
                return call()
            finally:
                self._held.slot = False

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``: none after the first failure (one
        dropped connection or 5xx from one CDN node should cost nothing), then exponential
        with jitter; ``Retry-After`` when the server gives one."""
        if retry_after is not None:
            return min(self.options.max_backoff, retry_after)
        if attempt == 0:
            return 0.0
        base = min(self.options.max_backoff, self.options.backoff * 2.0 ** (attempt - 1))
        return base * (0.5 + self._rng.random() / 2)

    def __call__(self, call: Callable[[], T], what: str, repo: str) -> T:
        """``call()``; raises HubError (no access) or PostFailure once retries run out.
        Errors that are not about the network or the server propagate unchanged."""
        last: BaseException | None = None
        bad_bytes = 0
        for attempt in range(self.options.attempts):
            retry_after = None
            try:
                return self._attempt(call)  # a request slot, never held while backing off
            except BadBytes as exc:  # not a sign of overload: read again at once
                last = exc
                bad_bytes += 1
                retry_after = 0.0
            except HttpStatus as exc:
                denied = access_error(exc, repo)
                if denied is not None:
                    raise denied from None
                if exc.status == 404:
                    raise PostFailure(
                        FailureKind.UNAVAILABLE, f"{what}: not found on the Hub"
                    ) from None
                if exc.status not in TRANSIENT_STATUS:
                    raise PostFailure(FailureKind.UNAVAILABLE, f"{what}: {exc}") from None
                last, retry_after = exc, exc.retry_after
            except ShortRead as exc:
                last = exc
            except Exception as exc:
                if not _transport(exc):
                    raise  # a coding error, never a "failed post"
                last = exc
            if attempt + 1 >= self.options.attempts or bad_bytes >= BAD_BYTES_ATTEMPTS:
                break
            self.sleep(self.delay(attempt, retry_after))
        kind = FailureKind.CORRUPT if isinstance(last, BadBytes) else FailureKind.UNAVAILABLE
        detail = redact(f"{type(last).__name__}: {last}".splitlines()[0])
        raise PostFailure(kind, f"{what}: gave up after {attempt + 1} attempts ({detail})")
