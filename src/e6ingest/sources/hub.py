"""The Hugging Face Hub: range reads through each shard's index, or whole shards.

huggingface_hub supplies the session, URLs and token; e6ingest owns what the ecosystem
tools get wrong: one retry layer with exponential backoff and jitter on timeouts,
connection errors, 5xx and 429 (honouring Retry-After), bounded bodies and deadlines
(``hubhttp``), pinned commits, verification of every byte against the index, and telling
apart a post that is missing from a Hub that could not be reached.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from e6ingest.cache import cache_dir
from e6ingest.core import FailureKind, PostFailure
from e6ingest.manifests import DatasetManifest, ImageRepo, MetadataFile
from e6ingest.sources.base import (
    Fetched,
    IndexedTarSource,
    IndexEntry,
    TarIndex,
    parse_index,
    verify,
)
from e6ingest.sources.hubcache import COMMIT, HubCache
from e6ingest.sources.hubhttp import HubHttp
from e6ingest.sources.retry import (
    BadBytes,
    HubError,
    Retrier,
    reachable,
    require_reachable,
    unreachable,
)

T = TypeVar("T")
K = TypeVar("K")


@dataclass(frozen=True)
class HubOptions:
    """How the Hub is reached. Defaults suit the public datasets on a home connection."""

    endpoint: str | None = None  # None: HF_ENDPOINT, else the Hub
    cache_dir: str | None = None  # None: <e6ingest cache>/hub
    io_workers: int = 16
    attempts: int = 8
    backoff: float = 0.25  # first retry delay in seconds, doubled each attempt
    max_backoff: float = 30.0
    timeout: float = 120.0  # seconds one request may take in all (whole shards: more)
    whole_shard_share: float = 0.75  # benchmarks/whole_shard_bench.py, RESULTS.md
    delete_shards_after_use: bool = False
    read_ahead_mb: int = 256  # fetched images held ahead of the consumer, at most
    token: str | None = field(default=None, repr=False)  # None: HF_TOKEN / hf auth login

    def __post_init__(self) -> None:
        for name in ("io_workers", "attempts", "read_ahead_mb"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, not {value!r}")
        if not self.timeout > 0:
            raise ValueError(f"--timeout must be positive, not {self.timeout!r}")
        if not self.whole_shard_share >= 0:
            raise ValueError(f"--whole-shard-share must be 0 or more, not {self.whole_shard_share}")

    def resolved_endpoint(self) -> str:
        """The endpoint in use."""
        from huggingface_hub import constants

        return (self.endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")

    def cache(self) -> HubCache:
        """e6ingest's cache of Hub files."""
        return HubCache(self.cache_dir or cache_dir() / "hub")


class HubSource(IndexedTarSource):
    """Reads posts from the dataset's repositories on the Hub, at pinned commits.

    Single files are fetched with one ranged GET each, located by the shard's index (itself
    downloaded once and cached). Shards listed in ``whole_shards`` are downloaded whole
    (checked against the index's size and sha256, cached, reused) and read locally; a post
    whose bytes fail in a cached shard discards it and is read by range instead.
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
        self.http = HubHttp(self.endpoint, options.token, options.timeout)
        self.cache = options.cache()
        # ``io_workers`` requests at a time; more threads than that, so a post waiting out a
        # backoff holds no request slot and never stalls the others.
        self.retry = Retrier(options, slots=threading.Semaphore(options.io_workers))
        self._commits: dict[tuple[str, str], Future[str]] = {}
        self._indexes: dict[tuple[str, int], Future[TarIndex]] = {}
        self._tars: dict[tuple[str, int], Future[Path]] = {}
        self._ranged: set[tuple[str, int]] = set()  # whole shards given up: read by range
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(options.io_workers * 4, "e6ingest-io")

    def _once(self, table: dict[K, Future[T]], key: K, load: Callable[[], T]) -> T:
        with self._lock:
            future: Future[T] | None = table.get(key)
            owner = future is None
            if future is None:
                future = table[key] = Future()
        if owner:
            try:
                future.set_result(load())
            except BaseException as exc:
                future.set_exception(exc)
                with self._lock:  # a failure is not kept: the next post tries again
                    table.pop(key, None)
        return future.result()

    def commit(self, repo: str, revision: str) -> str:
        """The commit ``revision`` of ``repo`` points at: itself when it is one, else asked
        of the Hub (and remembered); without network, the commit last seen for it."""
        if COMMIT.match(revision):
            return revision

        def load() -> str:
            self.cache.ensure()
            if not reachable(self.endpoint):
                known = self.cache.ref(repo, revision)
                if known is not None:
                    return known
                raise unreachable(self.endpoint, f"to find what {repo}@{revision} is")
            try:
                sha = self.retry(lambda: self.http.revision_sha(repo, revision),
                                 f"{repo}@{revision}", repo)  # fmt: skip
            except PostFailure as exc:
                raise HubError(f"cannot resolve {repo}@{revision}: {exc.message}") from None
            self.cache.set_ref(repo, revision, sha)
            return sha

        return self._once(self._commits, (repo, revision), load)

    def metadata_file(self, entry: MetadataFile) -> Path:
        """The local copy of a metadata file at its pinned commit (downloaded once; a
        cached copy without a parquet footer, damaged since, is downloaded again)."""
        self.cache.ensure()
        from e6ingest.metadata.identity import footer_sha256  # driver only
        from e6ingest.metadata.schemas import SchemaError

        path = self.cache.file(entry.repo, self.commit(entry.repo, entry.revision), entry.path)
        if path.is_file():
            try:
                footer_sha256(path)
                return path
            except (OSError, SchemaError):  # damaged on disk since: downloaded again
                self.cache.remove(path)
        require_reachable(self.endpoint, f"to get {entry.repo}/{entry.path} (not cached)")
        commit = self.commit(entry.repo, entry.revision)
        what = f"{entry.repo}/{entry.path}"
        try:
            self.retry(lambda: self.http.download(entry.repo, entry.path, commit, path),
                       what, entry.repo)  # fmt: skip
        except PostFailure as exc:
            raise HubError(f"cannot get the metadata file {exc.message}") from None
        return path

    def _index(self, repo: ImageRepo, shard: int) -> TarIndex:
        """The shard's index: from this run, else the cache, else one GET."""
        index_repo = repo.index_repo_id
        commit = self.commit(index_repo, repo.revision)
        what = f"{index_repo}/{repo.index_path(shard)}"
        cached = self.cache.file(index_repo, commit, repo.index_path(shard))

        def attempt() -> TarIndex:
            data = self.http.read(index_repo, repo.index_path(shard), commit)
            try:
                index = parse_index(data, what)
            except PostFailure as exc:  # damaged in transit: fetch it again
                raise BadBytes(exc.message) from None
            self.cache.keep_checked(cached, data)
            return index

        def load() -> TarIndex:
            data = self.cache.read_checked(cached)  # None when absent or changed on disk
            if data is not None:
                try:
                    return parse_index(data, what)
                except PostFailure:
                    self.cache.remove(cached)
            try:
                return self.retry(attempt, what, index_repo)
            except PostFailure as exc:  # an index we cannot read never means "no such post"
                raise PostFailure(FailureKind.UNAVAILABLE, exc.message) from None

        return self._once(self._indexes, (repo.repo, shard), load)

    def _local_tar(self, repo: ImageRepo, shard: int) -> Path:
        """The whole shard on disk: cached, else downloaded and checked against its index."""
        index = self._index(repo, shard)
        commit = self.commit(repo.repo, repo.revision)
        path = self.cache.file(repo.repo, commit, repo.tar_path(shard))

        def load() -> Path:
            if path.is_file() and index.filesize in (None, path.stat().st_size):
                return path
            self.retry(
                lambda: self.http.download(repo.repo, repo.tar_path(shard), commit, path,
                                           index.filesize, index.hash_lfs),
                f"{repo.repo}/{repo.tar_path(shard)}", repo.repo,
            )  # fmt: skip
            return path

        return self._once(self._tars, (repo.repo, shard), load)

    def _read_local(self, repo: ImageRepo, shard: int, entry: IndexEntry) -> bytes | None:
        """The post's verified bytes from the whole shard, or None to read it by range
        (the download failed, or the cached shard holds other bytes: then it goes)."""
        if (repo.repo, shard) in self._ranged:
            return None
        where = f"{repo.repo}/{repo.tar_path(shard)}"
        try:
            path = self._local_tar(repo, shard)
            with path.open("rb") as f:
                f.seek(entry.offset)
                return verify(entry, f.read(entry.size), where)
        except (PostFailure, OSError):
            with self._lock:
                self._ranged.add((repo.repo, shard))
                self._tars.pop((repo.repo, shard), None)
            self.discard_tar(repo, shard)
            return None

    def _read(self, repo: ImageRepo, shard: int, post_id: int, entry: IndexEntry) -> bytes:
        if shard in self.whole_shards:
            data = self._read_local(repo, shard, entry)
            if data is not None:
                return data
        where = f"{repo.repo}/{repo.tar_path(shard)}"
        commit = self.commit(repo.repo, repo.revision)

        def attempt() -> bytes:
            data = self.http.read(repo.repo, repo.tar_path(shard), commit,
                                  (entry.offset, entry.size))  # fmt: skip
            try:
                return verify(entry, data, where)
            except PostFailure as exc:
                raise BadBytes(exc.message) from None

        return self.retry(attempt, f"{where}:{entry.member}", repo.repo)

    def fetch_many(self, post_ids: Iterable[int]) -> Iterator[Fetched | PostFailure]:
        """Fetch concurrently (``io_workers`` requests at a time), yielding results in order.

        Fetching runs ahead of the consumer by up to ``read_ahead_mb`` of fetched bytes (and
        64 posts per I/O worker), so a post waiting out retries does not stall the others.
        """
        max_posts = self.options.io_workers * 64
        max_bytes = self.options.read_ahead_mb * 2**20
        pending: deque[Future[Fetched]] = deque()
        lock = threading.Lock()
        ready = 0  # bytes fetched and not yet yielded

        def fetched(future: Future[Fetched]) -> None:
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
        """The cached copy of a whole shard, if it is there."""
        path = self.cache.file(repo.repo, self.commit(repo.repo, repo.revision),
                               repo.tar_path(shard))  # fmt: skip
        return path if path.is_file() else None

    def discard_tar(self, repo: ImageRepo, shard: int) -> bool:
        """Delete the cached copy of a whole shard; True when there was one."""
        path = self.cached_tar(repo, shard)
        return path is not None and self.cache.remove(path)

    def close(self) -> None:
        """Stop the I/O threads."""
        self._pool.shutdown(wait=True, cancel_futures=True)
