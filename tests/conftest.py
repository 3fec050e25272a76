"""Shared fixtures: the 1k-post demo mirror (built once per session), the real sample data
in ``tests/data`` and metadata files shaped like the real sample rows."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from e6ingest.demo import build_demo

REFERENCE = Path(__file__).resolve().parent / "data"
# Ray reads this when it is imported: without it, it turns 127.0.0.1 into the machine's other
# address. Test traffic stays on loopback.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"


@pytest.fixture(scope="session", autouse=True)
def own_cache(tmp_path_factory):
    """e6ingest's cache (Hub files, tag vocabularies, the demo) in a folder of the tests,
    never the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("E6INGEST_CACHE", str(tmp_path_factory.mktemp("e6ingest-cache")))
        yield


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A demo mirror of 1000 posts per site, as users get from `e6ingest demo`."""
    root = tmp_path_factory.mktemp("mirror") / "demo"
    build_demo(root, posts=1000, seed=0)
    return root


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> Path:
    """A small demo mirror (60 posts per site) for tests that need few posts."""
    root = tmp_path_factory.mktemp("small") / "demo"
    build_demo(root, posts=60, seed=3, workers=1)
    return root


@pytest.fixture(scope="session")
def small_pull(small_demo, tmp_path_factory) -> Path:
    """A finished pull of the small demo (shards of 20); copy it before changing it."""
    from e6ingest.config import make_config
    from e6ingest.pipeline import pull

    out = tmp_path_factory.mktemp("pulled") / "out"
    pull(make_config({"ratings": "e,q,s", "shard_size": 20}), out, small_demo, workers=1)
    return out


@pytest.fixture(scope="session")
def reference() -> Path:
    """The folder of real format samples of the public datasets (``tests/data``)."""
    return REFERENCE


@pytest.fixture()
def danbooru_sample(reference, tmp_path):
    """The 5 real danbooru2024 rows, written as pandas does (``id`` as the index)."""
    data = json.loads((reference / "danbooru2024-metadata-sample.json").read_text())
    frame = pd.DataFrame(data)
    frame.index = frame.index.astype("int64").rename("id")
    path = tmp_path / "metadata.parquet"
    frame.to_parquet(path)
    return path


# The e621 2024 export row printed in e621-2024-posts-row.txt (id 14), plus a deleted one.
E621_2024_ROWS = [
    {"id": 14, "uploader_id": 7, "md5": "3e47080200fbde2d7d2ccf419343ab0a",
     "created_at": datetime(2007, 2, 10, 7, 17, 30, 687994, tzinfo=timezone.utc),
     "source": "https://www.furaffinity.net/view/267581/", "rating": "e",
     "image_width": 581, "image_height": 793,
     "tag_string": "2006 4_toes anthro balls dragon incendax male solo solo_focus_x "
                   "monochrome greyscale wings",
     "locked_tags": None, "fav_count": 1205, "file_ext": "jpg", "parent_id": None,
     "change_seq": 56599769, "approver_id": 59725.0, "file_size": 96998,
     "comment_count": 729, "description": "", "duration": None,
     "updated_at": datetime(2024, 4, 6, 23, 34, 37, tzinfo=timezone.utc),
     "is_deleted": "f", "is_pending": "f", "is_flagged": "f", "score": 1050,
     "up_score": 1081, "down_score": -33, "is_rating_locked": "t",
     "is_status_locked": "f", "is_note_locked": "t"},
    {"id": 15, "uploader_id": 7, "md5": "0" * 32,
     "created_at": datetime(2007, 2, 11, tzinfo=timezone.utc), "source": "", "rating": "s",
     "image_width": 100, "image_height": 100, "tag_string": "deleted_post solo",
     "locked_tags": None, "fav_count": 0, "file_ext": "png", "parent_id": 14.0,
     "change_seq": 1, "approver_id": None, "file_size": 1, "comment_count": 0,
     "description": "", "duration": None,
     "updated_at": datetime(2007, 2, 11, tzinfo=timezone.utc), "is_deleted": "t",
     "is_pending": "f", "is_flagged": "f", "score": 0, "up_score": 0, "down_score": 0,
     "is_rating_locked": "f", "is_status_locked": "f", "is_note_locked": "f"},
]  # fmt: skip

# The e621 newest row printed in e621-newest-table-row.txt (id 4999999), shortened.
E621_NEWEST_ROWS = [
    {"id": 4999999, "filename": "4999999.jpg", "mimetype": "image/jpeg", "extension": "jpg",
     "width": 1676, "height": 1529, "rating": "s", "file_ext": "jpg",
     "md5": "64f69577b3203ab5ad0f1bd17397b57e", "file_size": 172269,
     "tags": ["anthro", "blep", "solo", "fleurfurr", "ailurid", "mammal", "red_panda",
              "2024", "hi_res", "watermark"],
     "score": 22, "fav_count": 26, "is_deleted": False, "parent_id": None,
     "created_at": "2024-08-21T06:10:49.344-04:00"},
    # Also in the 2024 export with other tags: the newest table wins.
    {"id": 14, "filename": "14.jpg", "mimetype": "image/jpeg", "extension": "jpg",
     "width": 581, "height": 793, "rating": "q", "file_ext": "jpg",
     "md5": "3e47080200fbde2d7d2ccf419343ab0a", "file_size": 96998,
     "tags": ["dragon", "retagged"], "score": 1100, "fav_count": 1300,
     "is_deleted": False, "parent_id": None, "created_at": "2007-02-10T02:17:30.687-05:00"},
]  # fmt: skip


@pytest.fixture()
def e621_2024_sample(tmp_path):
    path = tmp_path / "posts-2024-04-07.parquet"
    pq.write_table(pa.Table.from_pylist(E621_2024_ROWS), path)
    return path


@pytest.fixture()
def e621_newest_sample(tmp_path):
    path = tmp_path / "table.parquet"
    pq.write_table(pa.Table.from_pylist(E621_NEWEST_ROWS), path)
    return path


def pytest_collection_modifyitems(items):
    """Tests on the 1k-post demo are end-to-end runs: slow (``-m "not slow"`` skips them)."""
    for item in items:
        if "demo_root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
