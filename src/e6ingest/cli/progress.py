"""How a pull reports as it goes: tqdm bars, nothing (``--quiet``) or JSON lines
(``--log-json``). Events may come from the progress thread as well as the main one."""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import asdict
from typing import IO

from e6ingest.core import redact


class BarReporter:
    """tqdm bars on stderr: planning, then shards and posts (rate and ETA from posts, which
    advance as each post is done); warnings printed above the bars."""

    PLAN_STEPS = 2  # reading and selecting, then the saved plan

    def __init__(self, stream: IO[str] | None = None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.bars: dict = {}
        self.written = self.failed = 0
        self._lock = threading.Lock()

    def _bar(self, name: str, **kwargs):
        from tqdm import tqdm

        self.bars[name] = tqdm(file=self.stream, dynamic_ncols=True, **kwargs)
        return self.bars[name]

    def __call__(self, event: str, info: dict) -> None:
        with self._lock:
            if event == "warning":
                self._warn(info["message"])
            elif self.quiet:
                return
            elif event == "planning":
                self._bar("plan", desc="planning", total=self.PLAN_STEPS, unit="step").update(1)
            elif event == "index":
                bar = self.bars.get("index") or self._bar(
                    "index", desc="tag index", total=info["total"], unit="post"
                )  # fmt: skip
                bar.update(info["done"] - bar.n)
                if info["done"] >= info["total"]:
                    self.bars.pop("index").close()
            elif event == "planned":
                self._planned(info)
            elif event == "posts" and "posts" in self.bars:
                self.written += info["written"]
                self.failed += info["failed"]
                bar = self.bars["posts"]
                bar.set_postfix(written=self.written, failed=self.failed, refresh=False)
                bar.update(info["written"] + info["failed"])
            elif event == "shard" and "shards" in self.bars:
                self.bars["shards"].update(1)

    def _warn(self, message: str) -> None:
        from tqdm import tqdm

        tqdm.write(f"warning: {redact(message)}", file=self.stream)

    def _planned(self, info: dict) -> None:
        plan = self.bars.pop("plan", None)
        if plan is not None:
            plan.update(self.PLAN_STEPS - plan.n)
            plan.set_postfix(selected=info["selected"], shards=info["shards"])
            plan.close()
        self._bar("shards", desc="shards", total=info["todo"], unit="shard")
        self._bar("posts", desc="posts", total=info["posts_todo"], unit="post")

    def close(self) -> None:
        """Close every open bar."""
        with self._lock:
            for bar in self.bars.values():
                bar.close()
            self.bars.clear()


class JsonReporter:
    """One JSON object per event on ``stream``: ``{"event": ..., "time": ..., ...}``."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def __call__(self, event: str, info: dict) -> None:
        stats = info.get("stats")
        if stats is not None:  # a shard: its counts; the per-post failures are in failures.parquet
            info = {k: v for k, v in asdict(stats).items() if k != "failures"}
        record = {"event": event, "time": round(time.time(), 3), **info}
        with self._lock:
            self.stream.write(redact(json.dumps(record, sort_keys=True, default=str)) + "\n")
            self.stream.flush()

    def close(self) -> None:
        """Nothing to close."""
