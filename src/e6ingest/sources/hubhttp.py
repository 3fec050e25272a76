"""One request to the Hub, bounded: what arrives is capped at what was asked for, every
request has a total deadline, and a ranged request answered with the whole file is a
fault. huggingface_hub supplies the session, URLs and token headers; e6ingest makes each
request once here, and retries it (``retry.Retrier``) in one place only.

The Hub answers a file's ``/resolve/`` URL with a redirect to its CDN and rate-limits
resolve requests (a few thousand per 5 minutes), so the CDN address of each file is kept
and reused for its next ranges until the CDN refuses it (expired).
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from e6ingest.core import atomic_file, register_secret
from e6ingest.manifests import REPO_TYPE
from e6ingest.sources.deadline import deadline as until, deadline_client
from e6ingest.sources.retry import BadBytes, HttpStatus, ShortRead

ERROR_BODY_LIMIT = 1 << 20
API_BODY_LIMIT = 64 << 20
Span = tuple[int, int]  # (offset, size) of a byte range
Sink = Callable[[bytes], object]  # takes the body chunk by chunk


@dataclass(frozen=True)
class _Transfer:
    """One request: a file at a revision, the byte ``span`` asked for (None: all of it),
    at most ``limit`` bytes, passed to ``sink`` chunk by chunk by ``deadline``
    (``time.monotonic``)."""

    repo: str
    path: str
    revision: str
    span: Span | None
    limit: int
    sink: Sink
    deadline: float


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


DISK_RESERVE = 256 << 20  # a download stops before the disk has less free than this
DISK_CHECK_EVERY = 64 << 20


class DiskRoom:
    """Keeps a download from filling the disk: refused up front when its known size does
    not fit, and stopped (ENOSPC, naming the file) when, of unknown size, it would leave
    less than :data:`DISK_RESERVE` free."""

    def __init__(self, dest: Path, size: int | None):
        self.dest = dest
        self.unchecked = 0
        free = shutil.disk_usage(dest.parent).free
        if size is not None and free - size < DISK_RESERVE:
            self._full(f"{size:,} bytes to download, {free:,} free")

    def check(self, nbytes: int) -> None:
        """Count ``nbytes`` about to be written; look at the free space now and then."""
        self.unchecked += nbytes
        if self.unchecked < DISK_CHECK_EVERY:
            return
        self.unchecked = 0
        free = shutil.disk_usage(self.dest.parent).free
        if free < DISK_RESERVE + DISK_CHECK_EVERY:
            self._full(f"{free:,} bytes free")

    def _full(self, detail: str) -> None:
        raise OSError(errno.ENOSPC, f"not enough room for {self.dest.name} ({detail})",
                      str(self.dest.parent))  # fmt: skip


class HubHttp:
    """Bounded single requests to one Hub endpoint (thread-safe)."""

    def __init__(self, endpoint: str, token: str | None, timeout: float):
        self.endpoint = endpoint
        self.token = token
        self.timeout = timeout
        self._cdn: dict[tuple[str, str, str], str] = {}  # file -> its CDN address
        self._lock = threading.Lock()
        self._client: Any = None  # an httpx client (see deadline_client)

    def session(self) -> Any:
        """The HTTP client of this endpoint, made on first use (a light CLI start)."""
        with self._lock:
            if self._client is None:
                from huggingface_hub import get_token

                register_secret(self.token or get_token())  # never in a stored message
                self._client = deadline_client()
            return self._client

    def _check(self, response: Any, url: str) -> None:
        if response.status_code < 400:
            return
        error = HttpStatus(
            response.status_code,
            url,
            response.headers.get("X-Error-Code", ""),
            _retry_after(response.headers.get("Retry-After")),
        )
        response.close()  # the body of an error is never read: it could be anything
        raise error

    def _receive(self, response: Any, limit: int, deadline: float, sink: Sink) -> int:
        """Pass the body to ``sink`` chunk by chunk; at most ``limit`` bytes, by ``deadline``."""
        received = 0
        for chunk in response.iter_bytes():  # as it arrives, so deadlines are seen
            received += len(chunk)
            if received > limit:
                raise ShortRead(f"more than the {limit} bytes asked for arrived")
            if time.monotonic() > deadline:
                raise ShortRead(f"not complete after {self.timeout:.0f} s (--timeout)")
            sink(chunk)
        return received

    def _stream(self, transfer: _Transfer) -> int:
        try:
            with until(transfer.deadline):  # headers included: no socket wait outlives it
                return self._stream_until(transfer)
        except Exception as exc:
            if time.monotonic() < transfer.deadline or "Timeout" not in type(exc).__name__:
                raise
            raise ShortRead(f"not complete after {self.timeout:.0f} s (--timeout)") from None

    def _stream_until(self, transfer: _Transfer) -> int:
        from huggingface_hub import hf_hub_url  # on first use: a light CLI start
        from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

        key, span = (transfer.repo, transfer.path, transfer.revision), transfer.span
        ranged = {} if span is None else {"Range": f"bytes={span[0]}-{span[0] + span[1] - 1}"}
        timeout = max(1.0, min(self.timeout, transfer.deadline - time.monotonic()))
        with self._lock:
            cdn = self._cdn.get(key)
        if cdn is not None:  # no token to the CDN: its address carries its own signature
            with self.session().stream("GET", cdn, headers=ranged, timeout=timeout) as response:
                if response.status_code not in (401, 403, 404, 410):
                    return self._body(response, cdn, transfer)
            with self._lock:
                self._cdn.pop(key, None)
        url = hf_hub_url(transfer.repo, transfer.path, repo_type=REPO_TYPE,
                         revision=transfer.revision, endpoint=self.endpoint)  # fmt: skip
        headers = {**build_hf_headers(token=self.token), **ranged}
        with self.session().stream("GET", url, headers=headers, timeout=timeout) as response:
            if response.history and response.status_code < 400:
                with self._lock:
                    self._cdn[key] = str(response.url)
            elif response.history and response.status_code in (401, 403, 410):
                raise ShortRead(f"the CDN refused {transfer.path} (HTTP {response.status_code})")
            return self._body(response, url, transfer)

    def _body(self, response: Any, url: str, transfer: _Transfer) -> int:
        self._check(response, url)
        if transfer.span is not None and response.status_code != 206:
            raise ShortRead(f"the server ignored the byte range (HTTP {response.status_code})")
        return self._receive(response, transfer.limit, transfer.deadline, transfer.sink)

    def read(
        self,
        repo: str,
        path: str,
        revision: str,
        span: Span | None = None,
        limit: int | None = None,
    ) -> bytes:
        """A file, or ``span`` = (offset, size) of it, in memory: one bounded request."""
        parts: list[bytes] = []
        limit = span[1] if span is not None else (limit or API_BODY_LIMIT)
        deadline = time.monotonic() + self.timeout
        got = self._stream(_Transfer(repo, path, revision, span, limit, parts.append, deadline))
        if span is not None and got != span[1]:
            raise ShortRead(f"{repo}/{path}: {got} of {span[1]} bytes arrived")
        return b"".join(parts)

    def download(
        self, repo: str, path: str, revision: str, dest: Path, size: int | None = None,
        sha256: str | None = None, min_rate: float = 1 << 20,
    ) -> Path:  # fmt: skip
        """A whole file to ``dest`` (through a temporary name): one request, checked
        against ``size`` and ``sha256`` when known (BadBytes when they differ). The
        deadline grows with the size: ``--timeout`` plus one second per ``min_rate`` bytes."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        seconds = self.timeout + (size or 0) / min_rate
        deadline = time.monotonic() + seconds
        limit = size if size is not None else 1 << 42
        room = DiskRoom(dest, size)
        with atomic_file(dest, durable=False) as handle:

            def sink(chunk: bytes) -> None:
                digest.update(chunk)
                room.check(len(chunk))
                handle.write(chunk)

            got = self._stream(_Transfer(repo, path, revision, None, limit, sink, deadline))
            if size is not None and got != size:
                raise ShortRead(f"{repo}/{path}: {got} of {size} bytes arrived")
            if sha256 and digest.hexdigest() != sha256:
                raise BadBytes(f"{repo}/{path}: sha256 differs from the index's hash_lfs")
        return dest

    def revision_sha(self, repo: str, revision: str) -> str:
        """The commit ``revision`` of a dataset repository points at, now."""
        from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

        url = f"{self.endpoint}/api/{REPO_TYPE}s/{repo}/revision/{quote(revision, safe='')}"
        parts: list[bytes] = []
        deadline = time.monotonic() + self.timeout
        headers = build_hf_headers(token=self.token)
        with (
            until(deadline),
            self.session().stream("GET", url, headers=headers, timeout=self.timeout) as response,
        ):
            self._check(response, url)
            self._receive(response, API_BODY_LIMIT, deadline, parts.append)
        try:
            sha = json.loads(b"".join(parts))["sha"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ShortRead(f"{url}: no commit in the answer ({exc})") from None
        if not isinstance(sha, str) or len(sha) != 40:
            raise ShortRead(f"{url}: {sha!r} is not a commit id")
        return sha
