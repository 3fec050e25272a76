"""How a pull reports as it goes: tqdm bars, nothing (``--quiet``) or JSON lines
(``--log-json``). Events may come from the progress thread as well as the main one."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO, Any

from e6ingest.core import redact
from e6ingest.pipeline.events import (
    Event,
    IndexBuilt,
    Planned,
    PlanningStarted,
    PostsDone,
    ShardDone,
    Warned,
)


class BarReporter:
    """tqdm bars on stderr: planning, then shards and posts (rate and ETA from posts, which
    advance as each post is done); warnings printed above the bars."""

    PLAN_STEPS = 2  # reading and selecting, then the saved plan

    def __init__(self, stream: IO[str] | None = None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.bars: dict[str, Any] = {}  # tqdm bars by name
        self.written = self.failed = 0
        self._lock = threading.Lock()

    def _bar(self, name: str, **kwargs: Any) -> Any:
        from tqdm import tqdm

        self.bars[name] = tqdm(file=self.stream, dynamic_ncols=True, **kwargs)
        return self.bars[name]

    def __call__(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, Warned):
                self._warn(event.message)
            elif self.quiet:
                return
            elif isinstance(event, PlanningStarted):
                self._bar("plan", desc="planning", total=self.PLAN_STEPS, unit="step").update(1)
            elif isinstance(event, IndexBuilt):
                self._index(event)
            elif isinstance(event, Planned):
                self._planned(event)
            elif isinstance(event, PostsDone) and "posts" in self.bars:
                self.written += event.written
                self.failed += event.failed
                bar = self.bars["posts"]
                bar.set_postfix(written=self.written, failed=self.failed, refresh=False)
                bar.update(event.written + event.failed)
            elif isinstance(event, ShardDone) and "shards" in self.bars:
                self.bars["shards"].update(1)

    def _index(self, event: IndexBuilt) -> None:
        bar = self.bars.get("index") or self._bar(
            "index", desc="tag index", total=event.total, unit="post"
        )  # fmt: skip
        bar.update(event.done - bar.n)
        if event.done >= event.total:
            self.bars.pop("index").close()

    def _warn(self, message: str) -> None:
        from tqdm import tqdm

        tqdm.write(f"warning: {redact(message)}", file=self.stream)

    def _planned(self, event: Planned) -> None:
        plan = self.bars.pop("plan", None)
        if plan is not None:
            plan.update(self.PLAN_STEPS - plan.n)
            plan.set_postfix(selected=event.selected, shards=event.shards)
            plan.close()
        self._bar("shards", desc="shards", total=event.todo, unit="shard")
        self._bar("posts", desc="posts", total=event.posts_todo, unit="post")

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

    def __call__(self, event: Event) -> None:
        record = {"event": event.name, "time": round(time.time(), 3), **event.fields()}
        with self._lock:
            self.stream.write(redact(json.dumps(record, sort_keys=True, default=str)) + "\n")
            self.stream.flush()

    def close(self) -> None:
        """Nothing to close."""
