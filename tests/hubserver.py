"""A local server speaking the Hugging Face Hub's HTTP protocol over a mirror folder.

The real huggingface_hub client works against it unmodified (``endpoint=`` or
``HF_ENDPOINT=http://127.0.0.1:PORT``). It serves dataset repositories from a folder laid out
as ``ROOT/owner/name/path`` (or several such folders, one per commit, with ``main`` moving
between them) and can inject faults: 5xx answers, 429 with Retry-After, dropped connections,
truncated bodies, wrong bytes, slow or dripping answers, ranges ignored, paths that always
fail, and gated repositories.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"
RESOLVE = re.compile(r"^/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
CDN = re.compile(r"^/cdn/([^/]+/[^/]+)/([^/]+)/(.+)$")
API_REPO = re.compile(r"^/api/datasets/([^/]+/[^/]+)(?:/revision/([^/]+))?$")
API_TREE = re.compile(r"^/api/datasets/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?$")


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # many clients connect at once; the default 5 drops SYNs
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client that hangs up mid-answer is expected here (bounded reads); quiet."""


@dataclass
class Faults:
    """What goes wrong, as a share of requests (drawn from a seeded generator)."""

    error_5xx: float = 0.0
    rate_limit: float = 0.0  # 429 with Retry-After
    drop: float = 0.0  # close the connection without an answer
    truncate: float = 0.0  # send half the body, then close
    corrupt: float = 0.0  # flip a byte of a ranged body, the first time that range is asked
    corrupt_always: tuple[str, ...] = ()  # path regexes whose ranged bodies are always wrong
    latency: float = 0.0  # seconds added to every request
    bandwidth: float = 0.0  # bytes per second shared by all responses (0: unlimited)
    always_fail: tuple[str, ...] = ()  # URL path regexes answered 500 every time
    cdn_ttl: float = 3600.0  # seconds a CDN address stays valid (403 afterwards)
    ignore_range: bool = False  # answer ranged requests with 200 and the whole file
    drip: float = 0.0  # seconds between the bytes of a body (a slow-drip server)
    drip_headers: float = 0.0  # seconds between the bytes of the status line and headers
    corrupt_whole_once: tuple[str, ...] = ()  # path regexes: flip a byte of the first whole GET
    rate_limit_first: int = 0  # the first N ranged GETs are answered 429 with Retry-After
    gated: tuple[str, ...] = ()  # repos needing a token ("Bearer good-token")
    echo_auth: int = 0  # answer ranged GETs with this status, echoing Authorization back
    only_ranges: bool = False  # faults only on Range GETs (leave metadata and indexes be)
    seed: int = 0
    _rng: random.Random = field(default=None, repr=False)  # type: ignore[assignment]
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _seen: set = field(default_factory=set, repr=False)

    def draw(self) -> str | None:
        """The fault for one request, or None."""
        with self._lock:
            if self._rng is None:
                self._rng = random.Random(self.seed)
            roll = self._rng.random()
        for name in ("error_5xx", "rate_limit", "drop", "truncate", "corrupt"):
            share = getattr(self, name)
            if roll < share:
                return name
            roll -= share
        return None


class HubServer:
    """Serve ``root`` on 127.0.0.1; use as a context manager or call start/stop."""

    def __init__(
        self, root: Path, faults: Faults | None = None, commits: dict[str, Path] | None = None
    ):
        self.commits = {k: Path(v) for k, v in (commits or {COMMIT: root}).items()}
        self.main = next(iter(self.commits)) if commits else COMMIT
        self.root = self.commits[self.main]
        self.faults = faults or Faults()
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, fault
        self.sent: list[int] = []  # body bytes written per answered GET (until the client left)
        self._cdn_epoch = 0
        self._bandwidth_lock = threading.Lock()
        self._link_free = 0.0
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def move_main(self, commit: str) -> None:
        """Point ``main`` at another commit (the repository moved on)."""
        self.main, self.root = commit, self.commits[commit]

    def expire_cdn(self) -> None:
        """Make every CDN address given out so far expire (403 from now on)."""
        self._cdn_epoch += 1

    def root_for(self, revision: str) -> Path | None:
        """The folder a revision serves: a known commit, or main."""
        if revision == "main":
            return self.root
        return self.commits.get(revision)

    def etag(self, file: Path) -> str:
        """A content tag for the file (from its path, size and time: cheap on large tars)."""
        stat = file.stat()
        return hashlib.sha256(f"{file}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms stalls between headers and body

            def log_message(self, *args) -> None:  # quiet
                pass

            def flush_headers(self) -> None:
                """Headers as the server sends them: dripped with ``drip_headers``."""
                pause = hub.faults.drip_headers
                if not pause or (hub.faults.only_ranges and "Range" not in self.headers):
                    return super().flush_headers()
                data = b"".join(getattr(self, "_headers_buffer", []))
                self._headers_buffer = []
                try:
                    for i in range(len(data)):
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        time.sleep(pause)
                except OSError:  # the client hung up
                    self.close_connection = True
                return None

            def _send(self, status: int, body: bytes = b"", headers: dict | None = None):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, str(value))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self._write(body)

            def _write(self, body: bytes) -> None:
                sent = 0
                try:
                    if hub.faults.drip:
                        for i in range(len(body)):
                            self.wfile.write(body[i : i + 1])
                            self.wfile.flush()
                            sent += 1
                            time.sleep(hub.faults.drip)
                    else:
                        sent = self._write_rated(body)
                except OSError:  # the client hung up
                    self.close_connection = True
                finally:
                    hub.sent.append(sent)

            def _write_rated(self, body: bytes) -> int:
                rate, step = hub.faults.bandwidth, 1 << 16
                if not rate:
                    for start in range(0, len(body), step):
                        self.wfile.write(body[start : start + step])
                    return len(body)
                for start in range(0, len(body), step):
                    chunk = body[start : start + step]
                    with hub._bandwidth_lock:  # one shared link: chunks take turns on it
                        done = max(time.monotonic(), hub._link_free) + len(chunk) / rate
                        hub._link_free = done
                    time.sleep(max(0.0, done - time.monotonic()))
                    self.wfile.write(chunk)
                return len(body)

            def _error(self, status: int, code: str, message: str) -> None:
                body = json.dumps({"error": message}).encode()
                self._send(status, body, {"X-Error-Code": code, "X-Error-Message": message,
                                          "Content-Type": "application/json"})  # fmt: skip

            def _fault(self, path: str) -> str | None:
                faults = hub.faults
                if faults.latency:
                    time.sleep(faults.latency)
                if any(re.search(p, unquote(self.path)) for p in faults.always_fail):
                    return "always_fail"
                if faults.only_ranges and "Range" not in self.headers:
                    return None
                return faults.draw()

            def _resolve(self, repo: str, revision: str, path: str, cdn: bool = False) -> None:
                root = hub.root_for(revision)
                if root is None:
                    hub.requests.append((self.command, self.path, None))
                    return self._error(404, "RevisionNotFound", f"no revision {revision}")
                if path.endswith(".tar") and self.command == "GET" and not cdn:
                    # Large files live on a CDN, as on the Hub: the client follows a redirect.
                    hub.requests.append((self.command, self.path, None))
                    expires = time.time() + hub.faults.cdn_ttl
                    location = (f"/cdn/{repo}/{revision}/{path}?expires={expires}"
                                f"&epoch={hub._cdn_epoch}")  # fmt: skip
                    return self._send(302, b"", {"Location": location, "X-Repo-Commit": COMMIT})
                fault = self._fault(path)
                ranged = self.headers.get("Range")
                if ranged and hub.faults.rate_limit_first > 0:
                    with hub.faults._lock:
                        hub.faults.rate_limit_first -= 1
                    fault = "rate_limit"
                if fault == "corrupt":  # in transit: only where the client can check, once
                    key = (path, ranged)
                    with hub.faults._lock:
                        fault = None if ranged is None or key in hub.faults._seen else fault
                        hub.faults._seen.add(key)
                if not ranged and any(re.search(p, path) for p in hub.faults.corrupt_whole_once):
                    with hub.faults._lock:
                        fault = None if path in hub.faults._seen else "corrupt"
                        hub.faults._seen.add(path)
                if ranged and any(re.search(p, path) for p in hub.faults.corrupt_always):
                    fault = "corrupt"
                hub.requests.append((self.command, self.path, fault))
                if hub.faults.echo_auth and ranged:
                    said = self.headers.get("Authorization", "")
                    body = json.dumps({"error": f"bad request with {said}"}).encode()
                    return self._send(hub.faults.echo_auth, body, {"X-Error-Code": said[:60],
                                      "X-Error-Message": f"you sent {said}"})  # fmt: skip
                if fault in ("always_fail", "error_5xx"):
                    return self._error(503 if fault == "error_5xx" else 500, "Internal", "boom")
                if fault == "rate_limit":
                    return self._send(429, b"slow down", {"Retry-After": "1"})
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return None
                if repo in hub.faults.gated and self.headers.get("Authorization") != (
                    "Bearer good-token"
                ):
                    status = 403 if self.headers.get("Authorization") else 401
                    return self._error(status, "GatedRepo", f"Access to {repo} is restricted")
                file = root / repo / path
                if not file.is_file():
                    return self._error(404, "EntryNotFound", f"{path} does not exist")
                size = file.stat().st_size
                headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hub.etag(file)}"',
                           "Accept-Ranges": "bytes"}  # fmt: skip
                match = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                match = None if hub.faults.ignore_range else match
                if self.command == "HEAD":
                    return self._send(200, b"", {**headers, "X-Linked-Size": size}) or None
                start, end, status = 0, size - 1, 200
                if match:
                    start = int(match[1])
                    end = min(int(match[2]) if match[2] else size - 1, size - 1)
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
                with file.open("rb") as f:
                    f.seek(start)
                    body = f.read(end - start + 1)
                if fault == "corrupt" and body:
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                if fault == "truncate" and len(body) > 1:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return None
                return self._send(status, body, headers)

            def _api(self) -> None:
                path = unquote(self.path.split("?", 1)[0])
                hub.requests.append((self.command, self.path, None))
                tree = API_TREE.match(path)
                if tree:
                    base = hub.root / tree[1] / (tree[3] or "")
                    entries = [
                        {"type": "file" if p.is_file() else "directory",
                         "path": str(p.relative_to(hub.root / tree[1])),
                         "size": p.stat().st_size if p.is_file() else 0, "oid": COMMIT}
                        for p in sorted(base.iterdir())
                    ] if base.is_dir() else []  # fmt: skip
                    return self._send(200, json.dumps(entries).encode(),
                                      {"Content-Type": "application/json"})  # fmt: skip
                repo = API_REPO.match(path)
                revision = (repo[2] or "main") if repo else "main"
                sha = hub.main if revision == "main" else revision
                if repo and sha in hub.commits and (hub.commits[sha] / repo[1]).is_dir():
                    body = json.dumps({"id": repo[1], "sha": sha, "siblings": []}).encode()
                    return self._send(200, body, {"Content-Type": "application/json"})
                return self._error(404, "RepoNotFound", f"{path} not found")

            def _dispatch(self) -> None:
                path = unquote(self.path.split("?", 1)[0])
                match = RESOLVE.match(path)
                if match:
                    return self._resolve(match[1], match[2], match[3])
                cdn = CDN.match(path)
                if cdn:
                    expires = re.search(r"expires=([\d.]+)&epoch=(\d+)", self.path)
                    if (
                        expires is None
                        or float(expires[1]) < time.time()
                        or int(expires[2]) != hub._cdn_epoch
                    ):
                        hub.requests.append((self.command, self.path, "expired"))
                        return self._error(403, "Expired", "Request has expired")
                    return self._resolve(cdn[1], cdn[2], cdn[3], cdn=True)
                if path.startswith("/api/"):
                    return self._api()
                return self._error(404, "NotFound", path)

            do_GET = _dispatch
            do_HEAD = _dispatch

        return Handler
