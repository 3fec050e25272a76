"""The Hugging Face Hub: range reads through each shard's index, or whole shards.

huggingface_hub does the HTTP (token, endpoint, cache); e6ingest owns what the ecosystem
tools get wrong: retries with exponential backoff and jitter on timeouts, connection
errors, 5xx and 429 (honouring Retry-After), verification of every byte against the index,
and telling apart a post that is missing from a Hub that could not be reached.
"""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from huggingface_hub import get_session, hf_hub_download, hf_hub_url
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

from e6ingest.cache import cache_dir
from e6ingest.manifests import REPO_TYPE, DatasetManifest, ImageRepo, MetadataFile
from e6ingest.sources.base import (
    FailureKind,
    Fetched,
    IndexedTarSource,
    PostFailure,
    TarIndex,
    verify,
)
from e6ingest.sources.retry import (
    BadBytes,
    Retrier,
    ShortRead,
    access_error,
    offline,
    reachable,
    require_reachable,
)

T = TypeVar("T")


@dataclass(frozen=True)
class HubOptions:
    """How the Hub is reached. Defaults suit the public datasets on a home connection."""

    endpoint: str | None = None  # None: HF_ENDPOINT, else the Hub
    cache_dir: str | None = None  # None: the Hugging Face cache
    io_workers: int = 16
    attempts: int = 8
    backoff: float = 0.25  # first retry delay in seconds, doubled each attempt
    max_backoff: float = 30.0
    timeout: float = 60.0
    whole_shard_share: float = 0.75  # benchmarks/whole_shard_bench.py, RESULTS.md
    delete_shards_after_use: bool = False
    read_ahead_mb: int = 256  # fetched images held ahead of the consumer, at most
    index_cache: str | None = None  # None: <e6ingest cache>/indexes
    token: str | None = field(default=None, repr=False)  # None: HF_TOKEN / hf auth login

    def resolved_endpoint(self) -> str:
        """The endpoint in use."""
        from huggingface_hub import constants

        return (self.endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")

    def index_folder(self) -> Path:
        """Where downloaded shard indexes are kept between runs."""
        return Path(self.index_cache) if self.index_cache else cache_dir() / "indexes"


class HubSource(IndexedTarSource):
    """Reads posts from the dataset's repositories on the Hub.

    Single files are fetched with one ranged GET each, located by the shard's index (itself
    downloaded once, kept in the index cache). Shards listed in ``whole_shards`` are
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
        # ``io_workers`` requests at a time; more threads than that, so a post waiting out a
        # backoff holds no request slot and never stalls the others.
        self.retry = Retrier(options, slots=threading.Semaphore(max(1, options.io_workers)))
        self._indexes: dict[tuple[str, int], Future] = {}
        self._tars: dict[tuple[str, int], Future] = {}
        self._fetched: set[tuple[str, int]] = set()  # indexes downloaded by this run
        self._cdn: dict[tuple[str, str, str], str] = {}  # file -> its CDN address
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max(1, options.io_workers) * 4, "e6ingest-io")

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
        """The local copy of a metadata file; HubError at once when the Hub is unreachable
        (the cached copy is used then, if there is one)."""
        online = reachable(self.endpoint)
        try:
            return Path(
                hf_hub_download(
                    entry.repo, entry.path, repo_type=REPO_TYPE, revision=entry.revision,
                    cache_dir=self.options.cache_dir, endpoint=self.endpoint,
                    token=self.options.token, local_files_only=not online,
                )
            )  # fmt: skip
        except Exception as exc:
            if not online:
                require_reachable(self.endpoint, f"to get {entry.repo}/{entry.path} (not cached)")
            denied = access_error(exc, entry.repo)
            if denied is not None:
                raise denied from None
            if offline(exc):
                require_reachable(self.endpoint, f"to get {entry.repo}/{entry.path}")
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

    def _index(self, repo: ImageRepo, shard: int, fresh: bool = False) -> TarIndex:
        """The shard's index: from this run, else the index cache, else one GET.

        ``fresh`` refetches an index that came from the cache of an earlier run, in case the
        repository moved on since (bytes that fail verification against it trigger this).
        """
        key = (repo.repo, shard)
        if fresh and key not in self._fetched:
            with self._lock:
                self._indexes.pop(key, None)
        what = f"{repo.index_repo_id}/{repo.index_path(shard)}"
        cached = self.options.index_folder() / repo.index_repo_id / repo.revision
        cached = cached / repo.index_path(shard)

        def attempt() -> TarIndex:
            data = self._get(repo.index_repo_id, repo.index_path(shard), repo.revision)
            try:
                index = TarIndex(json.loads(data), what)
            except (ValueError, PostFailure) as exc:  # damaged in transit: fetch it again
                raise BadBytes(f"unreadable index: {exc}") from None
            _write_atomic(cached, data)
            self._fetched.add(key)
            return index

        def load() -> TarIndex:
            if not fresh and cached.is_file():
                try:
                    return TarIndex(json.loads(cached.read_bytes()), what)
                except (ValueError, PostFailure):
                    cached.unlink(missing_ok=True)
            try:
                return self.retry(attempt, what, repo.index_repo_id)
            except PostFailure as exc:  # an index we cannot read never means "no such post"
                raise PostFailure(FailureKind.UNAVAILABLE, exc.message) from None

        return self._once(self._indexes, key, load)

    def _local_tar(self, repo: ImageRepo, shard: int) -> Path:
        return self._once(
            self._tars,
            (repo.repo, shard),
            lambda: self._download(repo.repo, repo.tar_path(shard), repo.revision),
        )

    def _get(self, repo_id: str, path: str, revision: str, span: tuple[int, int] | None = None):
        """One GET of a file, or of ``span`` = (offset, size) of it; errors raise.

        The Hub answers a file's ``/resolve/`` URL with a redirect to its CDN, and rate-limits
        resolve requests (a few thousand per 5 minutes). The CDN address is kept per file and
        reused for the next ranges of the same shard until the CDN refuses it (expired).
        """
        key = (repo_id, path, revision)
        ranged = {} if span is None else {"Range": f"bytes={span[0]}-{span[0] + span[1] - 1}"}
        cdn = self._cdn.get(key)
        response = None
        if cdn is not None:  # no token to the CDN: its address carries its own signature
            response = get_session().get(cdn, headers=ranged, timeout=self.options.timeout)
            if response.status_code in (401, 403, 404, 410):
                self._cdn.pop(key, None)
                response = None
        if response is None:
            url = hf_hub_url(repo_id, path, repo_type=REPO_TYPE, revision=revision,
                             endpoint=self.endpoint)  # fmt: skip
            headers = {**build_hf_headers(token=self.options.token), **ranged}
            response = get_session().get(url, headers=headers, timeout=self.options.timeout)
            if response.history and response.status_code < 400:
                self._cdn[key] = str(response.url)
            elif response.history and response.status_code in (401, 403, 410):
                raise ConnectionError(f"the CDN refused {path} (HTTP {response.status_code})")
        if response.status_code >= 400:
            hf_raise_for_status(response)
        data = response.content
        if span is not None and response.status_code == 200:  # the server ignored Range
            data = data[span[0] : span[0] + span[1]]
        return data

    def _read(self, repo: ImageRepo, shard: int, post_id: int, entry) -> bytes:
        where = f"{repo.repo}/{repo.tar_path(shard)}"
        failed = False

        def attempt() -> bytes:
            nonlocal entry, failed
            if failed:  # the index may be older than the shard: make sure it is not
                entry = self._index(repo, shard, fresh=True).lookup(post_id) or entry
            if shard in self.whole_shards:
                with self._local_tar(repo, shard).open("rb") as f:
                    f.seek(entry.offset)
                    data = f.read(entry.size)
            else:
                data = self._get(repo.repo, repo.tar_path(shard), repo.revision,
                                 (entry.offset, entry.size))  # fmt: skip
            if len(data) != entry.size and shard not in self.whole_shards:
                raise ShortRead(f"{where}: {len(data)} of {entry.size} bytes arrived")
            try:
                return verify(entry, data, where)
            except PostFailure as exc:
                failed = True
                raise BadBytes(exc.message) from None

        return self.retry(attempt, f"{where}:{entry.member}", repo.repo)

    def fetch_many(self, post_ids: Iterable[int]) -> Iterator[Fetched | PostFailure]:
        """Fetch concurrently (``io_workers`` requests at a time), yielding results in order.

        Fetching runs ahead of the consumer by up to ``read_ahead_mb`` of fetched bytes (and
        64 posts per I/O worker), so a post waiting out retries does not stall the others.
        """
        max_posts = max(1, self.options.io_workers) * 64
        max_bytes = self.options.read_ahead_mb * 2**20
        pending: deque[Future] = deque()
        lock = threading.Lock()
        ready = 0  # bytes fetched and not yet yielded

        def fetched(future: Future) -> None:
            nonlocal ready
            if future.exception() is None:
                with lock:
                    ready += len(future.result().data)

        def take() -> Fetched | PostFailure:
            nonlocal ready
            try:
                result = pending.popleft().result()
            except PostFailure as exc:
                return exc
            with lock:
                ready -= len(result.data)
            return result

        for post_id in post_ids:
            while pending and (len(pending) >= max_posts or ready >= max_bytes):
                yield take()
            future = self._pool.submit(self.fetch, post_id)
            future.add_done_callback(fetched)
            pending.append(future)
        while pending:
            yield take()

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


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    partial.write_bytes(data)
    partial.replace(path)


def delete_cached_tar(path: Path) -> None:
    """Remove a downloaded file from the Hugging Face cache (snapshot link and blob)."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    if blob != path:
        blob.unlink(missing_ok=True)
