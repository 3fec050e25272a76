"""The Hugging Face Hub: range reads through each shard's index, or whole shards.

huggingface_hub does the HTTP (token, endpoint, cache); e6ingest owns what the ecosystem
tools get wrong: retries with exponential backoff and jitter on timeouts, connection
errors, 5xx and 429 (honouring Retry-After), verification of every byte against the index,
and telling apart a post that is missing from a Hub that could not be reached.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from huggingface_hub import get_session, hf_hub_download, hf_hub_url
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

from e6ingest.manifests import REPO_TYPE, DatasetManifest, ImageRepo, MetadataFile
from e6ingest.sources.base import FailureKind, Fetched, PostFailure, Source, TarIndex, verify

T = TypeVar("T")
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
BAD_BYTES_ATTEMPTS = 3  # bytes that keep failing the sha256 are corrupt upstream
_TOKEN = re.compile(r"hf_[A-Za-z0-9]{8,}")


class HubError(RuntimeError):
    """The Hub cannot serve this run at all (offline, no access to a gated repository)."""


@dataclass(frozen=True)
class HubOptions:
    """How the Hub is reached. Defaults suit the public datasets on a home connection."""

    endpoint: str | None = None  # None: HF_ENDPOINT, else the Hub
    cache_dir: str | None = None  # None: the Hugging Face cache
    io_workers: int = 16
    attempts: int = 6
    backoff: float = 0.5  # first retry delay in seconds, doubled each attempt
    max_backoff: float = 30.0
    timeout: float = 60.0
    whole_shard_share: float = 0.25
    delete_shards_after_use: bool = False
    token: str | None = field(default=None, repr=False)  # None: HF_TOKEN / hf auth login

    def resolved_endpoint(self) -> str:
        """The endpoint in use."""
        from huggingface_hub import constants

        return (self.endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def redact(text: str) -> str:
    """``text`` with anything shaped like a Hub token removed."""
    return _TOKEN.sub("hf_***", text)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class _BadBytes(Exception):
    """Bytes that do not match the index: retried, CORRUPT when they never match."""


def _access_error(exc: BaseException, repo: str) -> HubError | None:
    for cause in _chain(exc):
        if isinstance(cause, GatedRepoError) or _status(cause) in (401, 403):
            return HubError(
                f"no access to {repo}: it is gated or private. Accept its terms on the Hub "
                f"(https://huggingface.co/datasets/{repo}) and log in with `hf auth login` "
                "or set HF_TOKEN"
            )
        if isinstance(cause, RepositoryNotFoundError):
            return HubError(f"repository {repo} was not found on the Hub (or needs a token)")
    return None


def _not_found(exc: BaseException) -> bool:
    # Only a real 404 from the server: huggingface_hub also raises EntryNotFoundError
    # subclasses for connection problems, which must be retried instead.
    return any(_status(c) == 404 for c in _chain(exc))


def _offline(exc: BaseException) -> bool:
    names = {type(c).__name__ for c in _chain(exc)}
    return bool(names & {"ConnectError", "OfflineModeIsEnabled", "gaierror"})


class Retrier:
    """Runs a call with exponential backoff and jitter on transient failures."""

    def __init__(self, options: HubOptions, sleep: Callable[[float], None] = time.sleep):
        self.options = options
        self.sleep = sleep
        self._rng = random.Random()

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        if retry_after is not None:
            return min(self.options.max_backoff, retry_after)
        base = min(self.options.max_backoff, self.options.backoff * 2**attempt)
        return base * (0.5 + self._rng.random() / 2)

    def __call__(self, call: Callable[[], T], what: str, repo: str) -> T:
        """``call()``; raises HubError (no access) or PostFailure once retries run out."""
        last: BaseException | None = None
        attempts = self.options.attempts
        for attempt in range(self.options.attempts):
            try:
                return call()
            except _BadBytes as exc:
                last = exc
                attempts = min(attempts, BAD_BYTES_ATTEMPTS)
                retry_after = self.options.backoff
            except (PostFailure, HubError):
                raise
            except Exception as exc:
                denied = _access_error(exc, repo)
                if denied is not None:
                    raise denied from None
                if _not_found(exc):
                    raise PostFailure(
                        FailureKind.UNAVAILABLE, f"{what}: not found on the Hub"
                    ) from None
                statuses = [s for s in map(_status, _chain(exc)) if s is not None]
                if statuses and statuses[0] not in TRANSIENT_STATUS:
                    raise PostFailure(
                        FailureKind.UNAVAILABLE, f"{what}: HTTP {statuses[0]}"
                    ) from None
                last = exc
                retry_after = next(filter(None, map(_retry_after, _chain(exc))), None)
            if attempt + 1 >= attempts:
                break
            self.sleep(self.delay(attempt, retry_after))
        kind = FailureKind.CORRUPT if isinstance(last, _BadBytes) else FailureKind.UNAVAILABLE
        detail = redact(f"{type(last).__name__}: {last}".splitlines()[0])
        raise PostFailure(kind, f"{what}: gave up after {attempt + 1} attempts ({detail})")


class HubSource(Source):
    """Reads posts from the dataset's repositories on the Hub.

    Single files are fetched with one ranged GET each, located by the shard's index (itself
    downloaded once into the Hugging Face cache). Shards listed in ``whole_shards`` are
    downloaded whole (cached, reused) and read locally.
    """

    def __init__(
        self,
        manifest: DatasetManifest,
        options: HubOptions = HubOptions(),
        whole_shards: frozenset[int] = frozenset(),
    ):
        self.manifest = manifest
        self.options = options
        self.whole_shards = whole_shards
        self.endpoint = options.resolved_endpoint()
        self.retry = Retrier(options)
        self._indexes: dict[tuple[str, int], Future] = {}
        self._tars: dict[tuple[str, int], Future] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max(1, options.io_workers), "e6ingest-io")

    def _download(self, repo: str, path: str, revision: str) -> Path:
        """One file into the cache (reused when there), with retries."""
        return Path(
            self.retry(
                lambda: hf_hub_download(
                    repo, path, repo_type=REPO_TYPE, revision=revision,
                    cache_dir=self.options.cache_dir, endpoint=self.endpoint,
                    token=self.options.token,
                ),
                f"{repo}/{path}",
                repo,
            )
        )  # fmt: skip

    def metadata_file(self, entry: MetadataFile) -> Path:
        """The local copy of a metadata file; HubError at once when the Hub is unreachable."""
        try:
            return Path(
                hf_hub_download(
                    entry.repo, entry.path, repo_type=REPO_TYPE, revision=entry.revision,
                    cache_dir=self.options.cache_dir, endpoint=self.endpoint,
                    token=self.options.token,
                )
            )  # fmt: skip
        except Exception as exc:
            denied = _access_error(exc, entry.repo)
            if denied is not None:
                raise denied from None
            if _offline(exc):
                raise HubError(
                    f"cannot reach the Hugging Face Hub at {self.endpoint} to get "
                    f"{entry.repo}/{entry.path}, and it is not in the cache. Without network, "
                    "use --mirror DIR (a local copy of the repositories) or --demo"
                ) from None
        return self._download(entry.repo, entry.path, entry.revision)  # transient: retry

    def _once(self, table: dict, key, load: Callable[[], T]) -> T:
        with self._lock:
            future = table.get(key)
            if future is None:
                future = Future()
                table[key] = future
                owner = True
            else:
                owner = False
        if owner:
            try:
                future.set_result(load())
            except BaseException as exc:
                future.set_exception(exc)
                with self._lock:  # a failure is not cached: the next post tries again
                    table.pop(key, None)
        return future.result()

    def _index(self, repo: ImageRepo, shard: int) -> TarIndex:
        def load() -> TarIndex:
            path = self._download(repo.index_repo_id, repo.index_path(shard), repo.revision)
            try:
                return TarIndex(json.loads(path.read_bytes()), str(path))
            except ValueError as exc:
                raise PostFailure(
                    FailureKind.UNAVAILABLE, f"{repo.index_repo_id}: bad index {path}: {exc}"
                ) from exc

        return self._once(self._indexes, (repo.repo, shard), load)

    def _local_tar(self, repo: ImageRepo, shard: int) -> Path:
        return self._once(
            self._tars,
            (repo.repo, shard),
            lambda: self._download(repo.repo, repo.tar_path(shard), repo.revision),
        )

    def _range_get(self, repo: ImageRepo, shard: int, offset: int, size: int) -> bytes:
        url = hf_hub_url(repo.repo, repo.tar_path(shard), repo_type=REPO_TYPE,
                         revision=repo.revision, endpoint=self.endpoint)  # fmt: skip
        headers = build_hf_headers(token=self.options.token)
        headers["Range"] = f"bytes={offset}-{offset + size - 1}"
        response = get_session().get(url, headers=headers, timeout=self.options.timeout)
        if response.status_code >= 400:
            hf_raise_for_status(response)
        data = response.content
        if response.status_code == 200 and len(data) > size:  # the server ignored Range
            data = data[offset : offset + size]
        return data

    def _read(self, repo: ImageRepo, shard: int, post_id: int, entry) -> bytes:
        where = f"{repo.repo}/{repo.tar_path(shard)}"

        def attempt() -> bytes:
            if shard in self.whole_shards:
                with self._local_tar(repo, shard).open("rb") as f:
                    f.seek(entry.offset)
                    data = f.read(entry.size)
            else:
                data = self._range_get(repo, shard, entry.offset, entry.size)
            try:
                return verify(entry, data, where)
            except PostFailure as exc:
                raise _BadBytes(exc.message) from None

        return self.retry(attempt, f"{where}:{entry.member}", repo.repo)

    def fetch(self, post_id: int) -> Fetched:
        """Verified bytes of ``post_id``; PostFailure(missing/corrupt/unavailable) otherwise."""
        unavailable: PostFailure | None = None
        for repo in self.manifest.images:
            shard = repo.shard_of(post_id)
            try:
                entry = self._index(repo, shard).lookup(post_id)
            except PostFailure as exc:
                unavailable = exc
                continue
            if entry is not None:
                data = self._read(repo, shard, post_id, entry)
                location = f"{repo.repo}/{repo.tar_path(shard)}:{entry.member}"
                return Fetched(post_id, data, location)
        if unavailable is not None:  # never "no such post" when an index could not be read
            raise unavailable
        raise PostFailure(FailureKind.MISSING, f"post {post_id} is in none of its shards")

    def fetch_many(self, post_ids: Iterable[int]) -> Iterator[Fetched | PostFailure]:
        """Fetch concurrently (``io_workers`` at a time), yielding results in order."""
        window = max(1, self.options.io_workers) * 2
        pending: list[Future] = []

        def result(future: Future) -> Fetched | PostFailure:
            try:
                return future.result()
            except PostFailure as exc:
                return exc

        for post_id in post_ids:
            pending.append(self._pool.submit(self.fetch, post_id))
            if len(pending) >= window:
                yield result(pending.pop(0))
        while pending:
            yield result(pending.pop(0))

    def cached_tar(self, repo: ImageRepo, shard: int) -> Path | None:
        """The cached copy of a whole shard, if it was downloaded."""
        try:
            return Path(
                hf_hub_download(
                    repo.repo, repo.tar_path(shard), repo_type=REPO_TYPE,
                    revision=repo.revision, cache_dir=self.options.cache_dir,
                    endpoint=self.endpoint, local_files_only=True,
                )
            )  # fmt: skip
        except Exception:
            return None

    def close(self) -> None:
        """Stop the I/O threads."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def delete_cached_tar(path: Path) -> None:
    """Remove a downloaded shard from the Hugging Face cache (snapshot link and blob)."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    if blob != path:
        blob.unlink(missing_ok=True)
