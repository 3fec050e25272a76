"""The events a pull reports are typed, and ``--log-json`` writes them in the JSON shape it
has always written: ``event``, ``time`` and the event's fields."""

from __future__ import annotations

import io
import json
from pathlib import Path

from e6ingest.cli.progress import JsonReporter
from e6ingest.pipeline.events import (
    Finished,
    IndexBuilt,
    Planned,
    PlanningStarted,
    PostsDone,
    ShardDone,
    Warned,
)
from e6ingest.pipeline.results import PullSummary
from e6ingest.shards.stats import FailureRecord, ShardStats


def _logged(event) -> dict:
    stream = io.StringIO()
    JsonReporter(stream)(event)
    record = json.loads(stream.getvalue())
    assert isinstance(record.pop("time"), float)
    return record


def test_each_event_is_logged_as_its_name_and_fields():
    assert _logged(PlanningStarted()) == {"event": "planning"}
    assert _logged(Warned("no tags table")) == {"event": "warning", "message": "no tags table"}
    assert _logged(IndexBuilt(5, 10)) == {"event": "index", "done": 5, "total": 10}
    assert _logged(Planned(7, 2, 1, 4)) == {"event": "planned", "selected": 7, "shards": 2,
                                            "todo": 1, "posts_todo": 4}  # fmt: skip
    assert _logged(PostsDone(3, 1)) == {"event": "posts", "written": 3, "failed": 1}


def test_a_shard_is_logged_with_its_counts_and_without_its_failures():
    failure = FailureRecord(7, "e621", "fetch", "corrupt", "bad bytes")
    stats = ShardStats("00003", 2, 1, {"written": 1, "corrupt": 1}, (failure,), 1, 0.5, 1.0,
                       2048, "ab" * 32, "plan-1")  # fmt: skip
    record = _logged(ShardDone(stats))
    assert record.pop("event") == "shard" and "failures" not in record
    assert record == {"shard": "00003", "selected": 2, "samples": 1,
                      "outcomes": {"written": 1, "corrupt": 1}, "reencoded": 1,
                      "image_seconds": 0.5, "seconds": 1.0, "tar_bytes": 2048,
                      "tar_sha256": "ab" * 32, "plan": "plan-1", "kept": False}  # fmt: skip


def test_the_summary_is_logged_as_the_summary_reads():
    summary = PullSummary(Path("out"), selected=3, written=2, failed={"corrupt": 1}, seconds=2.0,
                          written_now=2)  # fmt: skip
    record = _logged(Finished(summary))
    assert record.pop("event") == "summary"
    assert record == json.loads(json.dumps(summary.to_dict()))
    assert record["samples_per_second"] == 1.0
