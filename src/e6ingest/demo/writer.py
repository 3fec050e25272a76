"""Write the demo mirror: a synthetic, deterministic copy of every repository the bundled
datasets use, laid out exactly as on the Hub (one folder per ``owner/name``)."""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import json
import random
import shutil
import tarfile
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq

from e6ingest.core import available_cores
from e6ingest.demo.images import NO_FILE, DemoImage, choose_image, render
from e6ingest.demo.tables import (
    DemoPost,
    danbooru_table,
    e621_2024_table,
    e621_newest_table,
)
from e6ingest.demo.vocab import E621_CATEGORY_NUMBERS, IMPLIES, post_tags, vocabulary
from e6ingest.manifests import DatasetManifest, ImageRepo, load_manifest
from e6ingest.pipeline.executor import process_pool
from e6ingest.shards.layout import OutputError

DEMO_DATASETS = ("danbooru2024", "e621")
TABLE_WRITERS = {
    "danbooru2024": danbooru_table,
    "e621_2024": e621_2024_table,
    "e621_newest": e621_newest_table,
}
RATING_SHARES: dict[str, dict[str, float]] = {
    # e621: the real counts of the combined metadata (e 3.07M, s 1.18M, q 0.94M).
    "e621": {"e": 3_072_274, "s": 1_177_482, "q": 938_021},
    # danbooru2024: approximate shares of general, sensitive, questionable, explicit.
    "danbooru": {"g": 0.34, "s": 0.36, "q": 0.14, "e": 0.16},
}
ID_RANGE = {"danbooru": (1, 8_200_000), "e621": (1, 5_217_944)}
EPOCH = {"danbooru": datetime(2005, 5, 24, tzinfo=timezone.utc),
         "e621": datetime(2007, 2, 10, tzinfo=timezone.utc)}  # fmt: skip
LAST = datetime(2024, 10, 31, tzinfo=timezone.utc)
E621_2024_LAST_ID = 4_700_000  # posts after this id are only in the newest repositories
TAR_MTIME = 1_700_000_000
Report = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class DemoSummary:
    """What the demo wrote, per dataset: posts in metadata and images in shards."""

    out: Path
    posts: dict[str, int]
    images: dict[str, int]


def _posts(site: str, count: int, seed: int) -> list[tuple[DemoPost, DemoImage, str]]:
    rng = random.Random(f"posts-{site}-{seed}")
    vocab = vocabulary(site, seed)
    lo, hi = ID_RANGE[site]
    ids = sorted(rng.sample(range(lo, hi + 1), count))
    shares = RATING_SHARES[site]
    span = (LAST - EPOCH[site]).total_seconds()
    out = []
    for post_id in ids:
        image = choose_image(rng)
        score = int(rng.paretovariate(1.3) * 4) - 3
        post = DemoPost(
            id=post_id,
            rating=rng.choices(list(shares), weights=list(shares.values()))[0],
            tags=post_tags(vocab, site, rng),
            width=image.width,
            height=image.height,
            file_ext=image.file_ext,
            file_size=0,
            md5="",
            score=score,
            fav_count=max(0, int(score * 1.3) + rng.randint(0, 5)),
            created_at=EPOCH[site] + timedelta(seconds=int(span * (post_id - lo) / (hi - lo))),
            parent_id=rng.randint(lo, post_id) if rng.random() < 0.05 else None,
            is_deleted=site == "e621" and rng.random() < 0.02,
        )
        out.append((post, image, f"{site}-{seed}-{post_id}"))
    return out


def write_indexed_tar(
    root: Path, repo: ImageRepo, shard: int, files: list[tuple[int, str, bytes, bool]]
) -> None:
    """One tar and its hfutils-format index; ``files`` is (id, ext, data, break_hash)."""
    buf = io.BytesIO()
    index: dict[str, dict[str, object]] = {}
    prefix = "./" if repo.index_repo else ""  # the 2024 e621 tars carry ./ member names
    flips: list[int] = []
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for post_id, ext, data, break_hash in files:
            info = tarfile.TarInfo(f"{prefix}{post_id}.{ext}")
            info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o644
            tar.addfile(info, io.BytesIO(data))
            offset = tar.offset - (-(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE)
            index[info.name] = {
                "offset": offset,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            if break_hash and data:
                flips.append(offset + len(data) // 2)
    flipped = bytearray(buf.getvalue() if files else bytes(2 * tarfile.BLOCKSIZE))
    for position in flips:  # bytes that no longer match the index: a corrupt upload
        flipped[position] ^= 0xFF
    blob = bytes(flipped)
    tar_path = root / repo.repo / repo.tar_path(shard)
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    tar_path.write_bytes(blob)
    git_sha1 = hashlib.sha1(f"blob {len(blob)}\0".encode() + blob).hexdigest()
    document = {
        "filesize": len(blob),
        "hash": git_sha1,
        "hash_lfs": hashlib.sha256(blob).hexdigest(),
        "files": index,
    }
    index_path = root / repo.index_repo_id / repo.index_path(shard)
    index_path.parent.mkdir(parents=True, exist_ok=True)
    index_path.write_text(json.dumps(document), encoding="utf-8")


def _metadata_part(manifest: DatasetManifest, post: DemoPost) -> list[int]:
    """Which metadata entries (and so image repos) hold ``post``."""
    if len(manifest.metadata) == 1:
        return [0]
    if post.id > E621_2024_LAST_ID:
        return [1]
    # A few older posts were re-published in the newest table (which wins on combination).
    return [0, 1] if post.id % 37 == 0 else [0]


@dataclass(frozen=True)
class ShardJob:
    """One source shard of the demo: its posts' images to make, the tar and index to write."""

    root: str
    repo: ImageRepo
    shard: int
    posts: tuple[tuple[int, str, DemoImage, str], ...]  # id, extension, image, seed


def write_shard(job: ShardJob) -> list[tuple[int, str, int]]:
    """Make a shard's images, write its tar and index; each post's id, bytes' md5 and size."""
    files, digests = [], []
    for post_id, ext, image, seed in job.posts:
        data = render(image, seed)
        if data is None:  # posts without a file are kept out of the shards' jobs
            raise ValueError(f"demo post {post_id} has no file to write into a shard")
        files.append((post_id, ext, data, image.kind == "hash_mismatch"))
        digest = hashlib.md5(data if data else str(post_id).encode()).hexdigest()
        digests.append((post_id, digest, len(data)))
    write_indexed_tar(Path(job.root), job.repo, job.shard, files)
    return digests


@dataclass
class DatasetPlan:
    """One dataset of the demo: its posts, which metadata tables hold each, its shards."""

    manifest: DatasetManifest
    generated: list[tuple[DemoPost, DemoImage, str]]
    jobs: list[ShardJob]


def plan_dataset(root: Path, manifest: DatasetManifest, posts: int, seed: int) -> DatasetPlan:
    """The posts of one dataset and a job per source shard (every shard, as on the Hub:
    most demo shards hold few files)."""
    generated = _posts(manifest.site, posts, seed)
    shards: dict[tuple[int, int], list[tuple[int, str, DemoImage, str]]] = defaultdict(list)
    for post, image, image_seed in generated:
        if image.kind in NO_FILE:
            continue
        part = _metadata_part(manifest, post)[0]
        repo = manifest.images[min(part, len(manifest.images) - 1)]
        shards[(part, repo.shard_of(post.id))].append((post.id, post.file_ext, image, image_seed))
    jobs = [
        ShardJob(str(root), repo, shard, tuple(shards.get((part, shard), ())))
        for part, repo in enumerate(manifest.images)
        for shard in range(repo.shards)
    ]
    return DatasetPlan(manifest, generated, jobs)


def write_tables(root: Path, plan: DatasetPlan, made: dict[int, tuple[str, int]]) -> int:
    """The metadata tables of one dataset (``made``: each imaged post's md5 and size);
    returns how many images its shards hold."""
    manifest = plan.manifest
    tables: dict[int, list[DemoPost]] = defaultdict(list)
    for post, _, _ in plan.generated:
        digest, size = made.get(post.id, (None, None))
        if digest is None:  # no file: an md5 and a size as the site's metadata would give
            digest, size = hashlib.md5(str(post.id).encode()).hexdigest(), 50_000 + post.id % 9999
        post = DemoPost(**{**post.__dict__, "md5": digest, "file_size": size})
        for part in _metadata_part(manifest, post):
            tables[part].append(post)
    for part, entry in enumerate(manifest.metadata):
        path = root / entry.repo / entry.path
        path.parent.mkdir(parents=True, exist_ok=True)
        table = TABLE_WRITERS[entry.schema](tables[part])
        pq.write_table(table, path, row_group_size=max(1, len(plan.generated) // 4))
    write_tag_tables(root, manifest, [post for post, _, _ in plan.generated])
    return sum(len(job.posts) for job in plan.jobs)


def _write_csv_gz(path: Path, header: list[str], rows: Sequence[tuple[object, ...]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(buffer.getvalue().encode(), mtime=0))


def write_tag_tables(root: Path, manifest: DatasetManifest, posts: list[DemoPost]) -> None:
    """The tags and implications tables the manifest names, as the e621 export has them
    (``id,name,category,post_count``; ``id,antecedent_name,consequent_name,status``)."""
    if manifest.tags is not None:
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for post in posts:
            for category, tags in post.tags.items():
                for tag in tags:
                    counts[(tag, category)] += 1
        rows = [(i, tag, E621_CATEGORY_NUMBERS[category], n)
                for i, ((tag, category), n) in enumerate(sorted(counts.items()), 1)]  # fmt: skip
        _write_csv_gz(root / manifest.tags.repo / manifest.tags.path,
                      ["id", "name", "category", "post_count"], rows)  # fmt: skip
    if manifest.implications is not None:
        implied = [(i, a, c, "active") for i, (a, c) in enumerate(sorted(IMPLIES.items()), 1)]
        _write_csv_gz(root / manifest.implications.repo / manifest.implications.path,
                      ["id", "antecedent_name", "consequent_name", "status"], implied)  # fmt: skip


def build_demo(
    out: str | Path, posts: int = 1000, seed: int = 0, workers: int | None = None,
    report: Report | None = None,
) -> DemoSummary:  # fmt: skip
    """Write the demo mirror of every bundled dataset into ``out`` (which must be empty);
    ``report(done, total)`` hears the progress (source shards written).

    The mirror is built in a temporary folder beside ``out`` and renamed into place, so an
    interrupted build never leaves a half-written mirror behind.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; the demo mirror needs an empty folder")
    if out.exists() and any(out.iterdir()):
        raise OutputError(f"--out {out} is not empty; the demo mirror needs an empty folder")
    if posts < 1:
        raise ValueError(f"--posts must be at least 1, not {posts}")
    workers = workers or available_cores()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        _write_all(tmp, posts, seed, workers, report)
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # made by this call, above
        raise
    return _summary(out)


def _write_all(tmp: Path, posts: int, seed: int, workers: int, report: Report | None) -> None:
    plans = {name: plan_dataset(tmp, load_manifest(name), posts, seed) for name in DEMO_DATASETS}
    jobs = [job for plan in plans.values() for job in plan.jobs]
    made: dict[int, tuple[str, int]] = {}
    with contextlib.ExitStack() as stack:
        if workers > 1:  # every dataset's shards in one pool: images made, files written
            pool = stack.enter_context(process_pool(workers))
            results = pool.map(write_shard, jobs, chunksize=16)
        else:
            results = map(write_shard, jobs)
        for done, digests in enumerate(results, 1):
            made.update((post_id, (digest, size)) for post_id, digest, size in digests)
            if report is not None and (done % 50 == 0 or done == len(jobs)):
                report(done, len(jobs))
    counts, images = {}, {}
    for name, plan in plans.items():
        counts[name], images[name] = posts, write_tables(tmp, plan, made)
    (tmp / "DEMO.json").write_text(
        json.dumps({"posts": posts, "seed": seed, "datasets": list(DEMO_DATASETS),
                    "counts": counts, "images": images}),
        encoding="utf-8",
    )  # fmt: skip


def _summary(out: Path) -> DemoSummary:
    info = json.loads((out / "DEMO.json").read_text(encoding="utf-8"))
    return DemoSummary(out, info["counts"], info["images"])
