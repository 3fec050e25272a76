"""How a pull reports as it goes: tqdm bars, nothing (``--quiet``) or JSON lines
(``--log-json``)."""

from __future__ import annotations

import json
import sys
import time
from typing import IO


class BarReporter:
    """tqdm bars on stderr: planning, then shards and samples with rate and ETA."""

    PLAN_STEPS = 2  # reading and selecting, then the saved plan

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stderr
        self.bars: dict = {}
        self.written = self.failed = 0

    def _bar(self, name: str, **kwargs):
        from tqdm import tqdm

        self.bars[name] = tqdm(file=self.stream, dynamic_ncols=True, **kwargs)
        return self.bars[name]

    def __call__(self, event: str, info: dict) -> None:
        if event == "planning":
            self._bar("plan", desc="planning", total=self.PLAN_STEPS, unit="step").update(1)
        elif event == "planned":
            plan = self.bars.pop("plan", None)
            if plan is not None:
                plan.update(self.PLAN_STEPS - plan.n)
                plan.set_postfix(selected=info["selected"], shards=info["shards"])
                plan.close()
            self._bar("shards", desc="shards", total=info["todo"], unit="shard")
            self._bar("samples", desc="samples", total=info["posts_todo"], unit="post")
        elif event == "shard":
            self.bars["shards"].update(1)
            samples = self.bars["samples"]
            samples.update(info["selected"])
            written = info["outcomes"].get("written", 0)
            self.written += written
            self.failed += info["selected"] - written
            samples.set_postfix(written=self.written, failed=self.failed, refresh=False)

    def close(self) -> None:
        """Close every open bar."""
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


class JsonReporter:
    """One JSON object per event on ``stream``: ``{"event": ..., "time": ..., ...}``."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stdout

    def __call__(self, event: str, info: dict) -> None:
        if event == "shard":  # the per-post failures are in failures.parquet
            info = {k: v for k, v in info.items() if k != "failures"}
        record = {"event": event, "time": round(time.time(), 3), **info}
        self.stream.write(json.dumps(record, sort_keys=True) + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Nothing to close."""
