"""Metadata tables of the demo in the three real schemas (danbooru2024, e621 2024, e621 newest).

Column names, order and types follow the real files (see the project's format reference):
danbooru2024 has 88 columns with ``id`` last as the pandas index; the e621 2024 export has a
single ``tag_string`` and 't'/'f' flags; e621 newest has a ``tags`` list and boolean flags.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pyarrow as pa

_TYPES = {"s": pa.string(), "i": pa.int64(), "d": pa.float64(), "b": pa.bool_()}
_VARIANT = (("type", "s"), ("url", "s"), ("width", "d"), ("height", "d"), ("file_ext", "s"))
DANBOORU_COLUMNS: tuple[tuple[str, str], ...] = (
    *[(n, t) for n, t in (
        ("created_at", "s"), ("uploader_id", "i"), ("score", "i"), ("source", "s"),
        ("md5", "s"), ("last_comment_bumped_at", "s"), ("rating", "s"),
        ("image_width", "i"), ("image_height", "i"), ("tag_string", "s"),
        ("fav_count", "i"), ("file_ext", "s"), ("last_noted_at", "s"), ("parent_id", "d"),
        ("has_children", "b"), ("approver_id", "d"), ("tag_count_general", "i"),
        ("tag_count_artist", "i"), ("tag_count_character", "i"), ("tag_count_copyright", "i"),
        ("file_size", "i"), ("up_score", "i"), ("down_score", "i"), ("is_pending", "b"),
        ("is_flagged", "b"), ("is_deleted", "b"), ("tag_count", "i"), ("updated_at", "s"),
        ("is_banned", "b"), ("pixiv_id", "d"), ("last_commented_at", "s"),
        ("has_active_children", "b"), ("bit_flags", "i"), ("tag_count_meta", "i"),
        ("has_large", "b"), ("has_visible_children", "b"), ("media_asset.id", "i"),
        ("media_asset.created_at", "s"), ("media_asset.updated_at", "s"),
        ("media_asset.md5", "s"), ("media_asset.file_ext", "s"),
        ("media_asset.file_size", "i"), ("media_asset.image_width", "i"),
        ("media_asset.image_height", "i"), ("media_asset.duration", "d"),
        ("media_asset.status", "s"), ("media_asset.file_key", "s"),
        ("media_asset.is_public", "b"), ("media_asset.pixel_hash", "s"),
    )],
    *[(f"media_asset.variants.{i}.{n}", t) for i in range(4) for n, t in _VARIANT],
    ("tag_string_general", "s"), ("tag_string_character", "s"),
    ("tag_string_copyright", "s"), ("tag_string_artist", "s"), ("tag_string_meta", "s"),
    ("file_url", "s"), ("large_file_url", "s"), ("preview_file_url", "s"),
    *[(f"media_asset.variants.{i}.{n}", t) for i in (4, 5) for n, t in _VARIANT],
    ("id", "i"),
)  # fmt: skip


@dataclass(frozen=True)
class DemoPost:
    """One synthetic post, with everything the three schemas need."""

    id: int
    rating: str
    tags: dict[str, list[str]]
    width: int
    height: int
    file_ext: str
    file_size: int
    md5: str
    score: int
    fav_count: int
    created_at: datetime
    parent_id: int | None = None
    is_deleted: bool = False

    def tag_string(self) -> str:
        return " ".join(sorted(t for tags in self.tags.values() for t in tags))


_SITE_ZONE = timezone(timedelta(hours=-4))  # both sites print times in US Eastern


def _iso(ts: datetime) -> str:
    return ts.astimezone(_SITE_ZONE).isoformat(timespec="milliseconds")


def _cdn(post: DemoPost, variant: str, ext: str) -> str:
    return f"https://cdn.donmai.us/{variant}/{post.md5[:2]}/{post.md5[2:4]}/{post.md5}.{ext}"


def _danbooru_row(post: DemoPost) -> dict:
    tags = post.tags
    row = {name: None for name, _ in DANBOORU_COLUMNS}
    row.update(
        {
            "created_at": _iso(post.created_at), "uploader_id": post.id % 9973 + 1,
            "score": post.score, "source": f"https://www.pixiv.net/artworks/{post.id * 7}",
            "md5": post.md5, "rating": post.rating, "image_width": post.width,
            "image_height": post.height, "tag_string": post.tag_string(),
            "fav_count": post.fav_count, "file_ext": post.file_ext,
            "parent_id": float(post.parent_id) if post.parent_id else None,
            "has_children": False, "tag_count_general": len(tags["general"]),
            "tag_count_artist": len(tags["artist"]),
            "tag_count_character": len(tags["character"]),
            "tag_count_copyright": len(tags["copyright"]), "file_size": post.file_size,
            "up_score": post.score + 3, "down_score": -3, "is_pending": False,
            "is_flagged": False, "is_deleted": post.is_deleted,
            "tag_count": sum(len(v) for v in tags.values()),
            "updated_at": _iso(post.created_at), "is_banned": False,
            "has_active_children": False, "bit_flags": 0,
            "tag_count_meta": len(tags["meta"]), "has_large": post.width > 850,
            "has_visible_children": False, "media_asset.id": post.id + 11,
            "media_asset.created_at": _iso(post.created_at),
            "media_asset.updated_at": _iso(post.created_at),
            "media_asset.md5": post.md5, "media_asset.file_ext": post.file_ext,
            "media_asset.file_size": post.file_size,
            "media_asset.image_width": post.width, "media_asset.image_height": post.height,
            "media_asset.status": "active", "media_asset.file_key": f"k{post.id:08x}",
            "media_asset.is_public": True, "media_asset.pixel_hash": post.md5[::-1],
            "tag_string_general": " ".join(tags["general"]),
            "tag_string_character": " ".join(tags["character"]),
            "tag_string_copyright": " ".join(tags["copyright"]),
            "tag_string_artist": " ".join(tags["artist"]),
            "tag_string_meta": " ".join(tags["meta"]),
            "file_url": _cdn(post, "original", post.file_ext),
            "large_file_url": _cdn(post, "original", post.file_ext),
            "preview_file_url": _cdn(post, "180x180", "jpg"),
            "id": post.id,
        }
    )  # fmt: skip
    for i, (variant, side) in enumerate((("180x180", 180), ("360x360", 360), ("720x720", 720))):
        scale = min(1.0, side / max(post.width, post.height))
        row.update(
            {
                f"media_asset.variants.{i}.type": variant,
                f"media_asset.variants.{i}.url": _cdn(post, variant, "jpg"),
                f"media_asset.variants.{i}.width": float(round(post.width * scale)),
                f"media_asset.variants.{i}.height": float(round(post.height * scale)),
                f"media_asset.variants.{i}.file_ext": "jpg",
            }
        )
    row["media_asset.variants.3.type"] = "original"
    row["media_asset.variants.3.url"] = _cdn(post, "original", post.file_ext)
    row["media_asset.variants.3.width"] = float(post.width)
    row["media_asset.variants.3.height"] = float(post.height)
    row["media_asset.variants.3.file_ext"] = post.file_ext
    return row


def danbooru_table(posts: list[DemoPost]) -> pa.Table:
    """danbooru2024 ``metadata.parquet``: 88 columns, ``id`` last and the pandas index."""
    rows = [_danbooru_row(p) for p in posts]
    schema = pa.schema([(n, _TYPES[t]) for n, t in DANBOORU_COLUMNS])
    table = pa.Table.from_pylist(rows, schema=schema)
    pandas_meta = {
        "index_columns": ["id"],
        "column_indexes": [],
        "columns": [
            {
                "name": n,
                "field_name": n,
                "pandas_type": {"s": "unicode", "i": "int64", "d": "float64", "b": "bool"}[t],
                "numpy_type": {"s": "object", "i": "int64", "d": "float64", "b": "bool"}[t],
                "metadata": None,
            }
            for n, t in DANBOORU_COLUMNS
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.1.4",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def e621_2024_table(posts: list[DemoPost]) -> pa.Table:
    """The e621 database export (``posts-2024-04-07.parquet``): 't'/'f' flags, tag_string."""
    flag = {True: "t", False: "f"}
    columns = {
        "id": pa.array([p.id for p in posts], pa.int64()),
        "uploader_id": pa.array([p.id % 7919 + 1 for p in posts], pa.int64()),
        "created_at": pa.array([p.created_at for p in posts], pa.timestamp("us", "UTC")),
        "md5": [p.md5 for p in posts],
        "source": [f"https://www.furaffinity.net/view/{p.id * 3}/" for p in posts],
        "rating": [p.rating for p in posts],
        "image_width": pa.array([p.width for p in posts], pa.int64()),
        "image_height": pa.array([p.height for p in posts], pa.int64()),
        "tag_string": [p.tag_string() for p in posts],
        "locked_tags": pa.array([None] * len(posts), pa.string()),
        "fav_count": pa.array([p.fav_count for p in posts], pa.int64()),
        "file_ext": [p.file_ext for p in posts],
        "parent_id": pa.array([float(p.parent_id) if p.parent_id else None for p in posts]),
        "change_seq": pa.array([50_000_000 + p.id for p in posts], pa.int64()),
        "approver_id": pa.array([None] * len(posts), pa.float64()),
        "file_size": pa.array([p.file_size for p in posts], pa.int64()),
        "comment_count": pa.array([p.id % 13 for p in posts], pa.int64()),
        "description": ["" for _ in posts],
        "duration": pa.array([None] * len(posts), pa.float64()),
        "updated_at": pa.array([p.created_at for p in posts], pa.timestamp("us", "UTC")),
        "is_deleted": [flag[p.is_deleted] for p in posts],
        "is_pending": ["f" for _ in posts],
        "is_flagged": ["f" for _ in posts],
        "score": pa.array([p.score for p in posts], pa.int64()),
        "up_score": pa.array([p.score + 2 for p in posts], pa.int64()),
        "down_score": pa.array([-2 for _ in posts], pa.int64()),
        "is_rating_locked": ["f" for _ in posts],
        "is_status_locked": ["f" for _ in posts],
        "is_note_locked": ["f" for _ in posts],
    }
    return pa.table(columns)


def _e621_url(post: DemoPost, kind: str = "") -> str:
    prefix = f"{kind}/" if kind else ""
    return f"https://static1.e621.net/data/{prefix}{post.md5[:2]}/{post.md5[2:4]}/{post.md5}.{post.file_ext}"


def e621_newest_table(posts: list[DemoPost]) -> pa.Table:
    """deepghs/e621_newest ``table.parquet``: a ``tags`` list, boolean flags, ISO dates."""
    mimes = {"jpg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp",
             "avif": "image/avif", "webm": "video/webm"}  # fmt: skip
    n = len(posts)
    alternates = pa.StructArray.from_arrays(
        [pa.array([None] * n, pa.string()) for _ in range(4)],
        names=["480p", "720p", "__dummy", "original"],
    )
    ints = pa.list_(pa.int64())
    columns = {
        "id": pa.array([p.id for p in posts], pa.int64()),
        "filename": [f"{p.id}.{p.file_ext}" for p in posts],
        "mimetype": [mimes[p.file_ext] for p in posts],
        "extension": [p.file_ext for p in posts],
        "width": pa.array([p.width for p in posts], pa.int64()),
        "height": pa.array([p.height for p in posts], pa.int64()),
        "rating": [p.rating for p in posts],
        "file_url": [_e621_url(p) for p in posts],
        "file_ext": [p.file_ext for p in posts],
        "md5": [p.md5 for p in posts],
        "file_size": pa.array([p.file_size for p in posts], pa.int64()),
        "tags": pa.array(
            [[t for tags in p.tags.values() for t in tags] for p in posts], pa.list_(pa.string())
        ),
        "uploader_id": pa.array([p.id % 7919 + 1 for p in posts], pa.int64()),
        "approver_id": pa.array([None] * n, pa.float64()),
        "score": pa.array([p.score for p in posts], pa.int64()),
        "up_score": pa.array([p.score + 2 for p in posts], pa.int64()),
        "down_score": pa.array([-2] * n, pa.int64()),
        "fav_count": pa.array([p.fav_count for p in posts], pa.int64()),
        "preview_width": pa.array([150] * n, pa.int64()),
        "preview_height": pa.array([150] * n, pa.int64()),
        "preview_url": [_e621_url(p, "preview") for p in posts],
        "sample_has": [p.width > 850 for p in posts],
        "sample_height": pa.array([min(p.height, 850) for p in posts], pa.int64()),
        "sample_width": pa.array([min(p.width, 850) for p in posts], pa.int64()),
        "sample_url": [_e621_url(p, "sample") for p in posts],
        "sample_alternates": alternates,
        **{f: [False] * n for f in ("is_pending", "is_flagged", "is_note_locked",
                                     "is_status_locked", "is_rating_locked")},
        "is_deleted": [p.is_deleted for p in posts],
        "parent_id": pa.array([float(p.parent_id) if p.parent_id else None for p in posts]),
        "has_children": [False] * n,
        "has_active_children": [False] * n,
        "children": pa.array([[] for _ in posts], ints),
        "created_at": [_iso(p.created_at) for p in posts],
        "updated_at": [_iso(p.created_at) for p in posts],
        "locked_tags": pa.array([[] for _ in posts], pa.list_(pa.string())),
        "change_seq": pa.array([60_000_000 + p.id for p in posts], pa.int64()),
        "sources": pa.array([[f"https://twitter.com/a/status/{p.id}"] for p in posts]),
        "pools": pa.array([[] for _ in posts], ints),
        "description": [""] * n,
        "comment_count": pa.array([p.id % 5 for p in posts], pa.int64()),
        "is_favorited": [False] * n,
        "has_notes": [False] * n,
        "duration": pa.array([None] * n, pa.float64()),
    }  # fmt: skip
    return pa.table(columns)
