"""``e6ingest verify``: check an output folder against its manifest and shard indexes."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow.parquet as pq

from e6ingest.readers.reader import split_name
from e6ingest.shards.layout import PLAN_FILE, SHARDS_DIR, OutputError
from e6ingest.shards.manifest import ShardEntry, read_manifest
from e6ingest.shards.stats import ShardStats
from e6ingest.shards.writer import MEMBER_ORDER, shard_name, shard_paths

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

SHARD_TAR = re.compile(r"^(\d{5})\.tar$")


def shard_number(name: str) -> int:
    """The number of the shard ``name`` (``shards/NNNNN.tar``) lists."""
    match = SHARD_TAR.match(Path(name).name)
    if match is None:
        raise OutputError(f"manifest.json: {name!r} is not a shard's name (shards/NNNNN.tar)")
    return int(match.group(1))


@dataclass
class VerifyReport:
    """What ``verify`` found: shards and samples checked, and every problem by name."""

    out: Path
    shards: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


class _HashingReader(io.RawIOBase):
    """A read-only file that hashes what is read through it."""

    def __init__(self, raw: io.BufferedReader) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        n = self.raw.readinto(buffer)
        self.sha256.update(memoryview(buffer)[:n])
        self.size += n
        return n

    def drain(self) -> None:
        """Read (and hash) what is left."""
        while self.read(1 << 20):
            pass


def _members(tar: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, bytes]]:
    for member in tar:
        handle = tar.extractfile(member) if member.isfile() else None
        yield member, handle.read() if handle is not None else b""


def _describes(meta: Mapping[str, Any], text: str) -> bool:
    """Whether ``{key}.txt`` holds what the record says: its caption, or its variants a
    line each, the caption's first."""
    caption = (meta.get("caption") or {}).get("text")
    variants = meta.get("captions")
    if text == caption or not isinstance(variants, dict) or not isinstance(caption, str):
        return text == caption
    lines = text.split("\n")
    every = {line for v in variants.values() if isinstance(v, str) for line in v.split("\n")}
    return lines[0] == caption.split("\n")[0] and set(lines) == every - {""}


def _check_sample_deep(
    where: str, key: str, data: dict[str, bytes], row: Mapping[str, Any]
) -> list[str]:
    from PIL import Image

    problems = []
    try:
        with Image.open(io.BytesIO(data["webp"])) as image:
            image.load()
            if image.format != "WEBP" or list(image.size) != [row["width"], row["height"]]:
                problems.append(
                    f"{where}: {key}.webp is {image.format} {image.size[0]}x{image.size[1]}, "
                    f"the index says WEBP {row['width']}x{row['height']}"
                )
    except Exception as exc:
        problems.append(f"{where}: {key}.webp does not decode: {exc}")
    try:
        meta = json.loads(data["json"])
        text = data["txt"].decode("utf-8")
        if meta.get("key") != key or not _describes(meta, text):
            problems.append(f"{where}: {key}.json does not describe {key} and its caption")
    except (ValueError, UnicodeDecodeError) as exc:
        problems.append(f"{where}: {key}.json or {key}.txt is unreadable: {exc}")
    return problems


def _check_listed(
    where: str, listed: dict[str, Any], member: tarfile.TarInfo, payload: bytes
) -> list[str]:
    """A member as the indexed-tar JSON lists it (offset, size, sha256)."""
    entry = listed.pop(member.name, None)
    if not isinstance(entry, dict):
        return [f"{where}: {member.name} is not in its indexed-tar JSON"]
    found = (member.offset_data, member.size, hashlib.sha256(payload).hexdigest())
    if (entry.get("offset"), entry.get("size"), entry.get("sha256")) != found:
        return [f"{where}: {member.name} differs from its indexed-tar JSON entry"]
    return []


def _check_layout(
    where: str, tar: tarfile.TarFile, index: pl.DataFrame, deep: bool, listed: dict[str, Any]
) -> list[str]:
    """Members in index order, the members of a sample together and in the fixed order,
    each image where (and as) the index says, and each member as the indexed-tar JSON
    (``listed``, emptied as members are found) says."""
    problems: list[str] = []
    rows = index.iter_rows(named=True)
    members = _members(tar)
    for position, row in enumerate(rows):
        key, data = row["key"], {}
        for ext in MEMBER_ORDER:
            member, payload = next(members, (None, b""))
            if member is None:
                return [*problems, f"{where}: ends before {key}.{ext} (sample {position})"]
            if split_name(member.name) != (key, ext):
                return [*problems, f"{where}: member {member.name!r} where {key}.{ext} belongs"]
            data[ext] = payload
            problems += _check_listed(where, listed, member, payload)
            if ext == "webp":
                digest = hashlib.sha256(payload).hexdigest()
                if (member.offset_data, member.size, digest) != (
                    row["offset"], row["bytes"], row["sha256"]
                ):  # fmt: skip
                    problems.append(f"{where}: {key}.webp differs from its index row")
        if deep:
            problems += _check_sample_deep(where, key, data, row)
    extra = next(members, None)
    if extra is not None:
        problems.append(f"{where}: member {extra[0].name!r} is not in the index")
    return problems


def verify_shard(shards_dir: Path, entry: ShardEntry, deep: bool = False) -> list[str]:
    """The problems of one shard listed in the manifest; empty when it is whole."""
    number = shard_number(entry.name)
    paths = shard_paths(shards_dir, number)
    where = f"{SHARDS_DIR}/{paths.tar.name}"
    missing = [f"{SHARDS_DIR}/{p.name} is missing" for p in paths.all() if not p.is_file()]
    if not paths.tar.is_file() or not paths.index.is_file():
        return missing
    try:
        index = pl.read_parquet(paths.index)
    except Exception as exc:
        return [*missing, f"{SHARDS_DIR}/{paths.index.name} is unreadable: {exc}"]
    problems = list(missing)
    listed, tar_index = {}, _read_tar_index(paths.tarindex)
    if isinstance(tar_index, str):
        problems.append(f"{SHARDS_DIR}/{paths.tarindex.name} {tar_index}")
        tar_index = {}
    listed = dict(tar_index.get("files") or {})
    if index.height != entry.samples:
        problems.append(
            f"{where}: the index has {index.height} samples, the manifest {entry.samples}"
        )
    with paths.tar.open("rb") as raw:
        reader = _HashingReader(raw)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                problems += _check_layout(where, tar, index, deep, listed)
        except (tarfile.TarError, EOFError, OSError) as exc:
            problems.append(f"{where}: unreadable tar: {exc}")
        reader.drain()
    if reader.size != entry.bytes:
        problems.append(f"{where}: {reader.size} bytes, the manifest says {entry.bytes}")
    if reader.sha256.hexdigest() != entry.sha256:
        problems.append(f"{where}: sha256 differs from the manifest")
    if tar_index:
        json_name = f"{SHARDS_DIR}/{paths.tarindex.name}"
        if (tar_index.get("filesize"), tar_index.get("hash_lfs")) != (
            reader.size, reader.sha256.hexdigest()
        ):  # fmt: skip
            problems.append(f"{json_name}: filesize or hash_lfs is not the tar's")
        problems += [f"{json_name}: lists {name}, which the tar lacks" for name in listed]
    return problems


def _read_tar_index(path: Path) -> dict[str, Any] | str:
    """The indexed-tar JSON of a shard, or what is wrong with it."""
    if not path.is_file():
        return {}  # reported as missing with the shard's other files
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        return f"is unreadable: {exc}"
    if not isinstance(document, dict) or not isinstance(document.get("files"), dict):
        return "is not an indexed-tar JSON (no 'files' table)"
    return document


def _readable(path: Path) -> bool:
    """Whether ``path`` is a parquet file whose footer reads (an unreadable one is reported
    by the check of its own file, and left out of the checks across files)."""
    try:
        pq.read_metadata(path)
    except (OSError, ValueError):
        return False
    return True


def _repeated_keys(indexes: list[Path]) -> list[str]:
    """A key must name one sample in the whole output (readers reject repeats)."""
    if not indexes:
        return []
    keys = pl.scan_parquet(indexes, include_file_paths="index").select("key", "index")
    repeated = (
        keys.group_by("key")
        .agg(pl.len().alias("n"), pl.col("index").first())
        .filter(pl.col("n") > 1)
        .sort("key")
        .collect()
    )
    return [
        f"key {row['key']} is in the output {row['n']} times (first in "
        f"{SHARDS_DIR}/{Path(row['index']).with_suffix('.tar').name})"
        for row in repeated.head(20).iter_rows(named=True)
    ] + ([f"... {repeated.height - 20} more repeated keys"] if repeated.height > 20 else [])


def _stray_shards(shards_dir: Path, listed: set[str]) -> list[str]:
    if not shards_dir.is_dir():
        return []
    return [
        f"{SHARDS_DIR}/{p.name} is not in the manifest"
        for p in sorted(shards_dir.iterdir())
        if SHARD_TAR.match(p.name) and f"{SHARDS_DIR}/{p.name}" not in listed
    ]


def _unfinished_plan(out: Path, listed: set[str]) -> list[str]:
    planned = pl.scan_parquet(out / PLAN_FILE).select(pl.col("shard").unique()).collect()
    missing = sorted(
        n for n in planned["shard"] if f"{SHARDS_DIR}/{shard_name(n)}.tar" not in listed
    )
    if not missing:
        return []
    names = ", ".join(shard_name(n) for n in missing[:10]) + (" ..." if len(missing) > 10 else "")
    return [f"{len(missing)} planned shards are not in the manifest ({names}): "
            "the run is unfinished; rerun the same pull to complete it"]  # fmt: skip


def _against_plan(
    out: Path, shards_dir: Path, entries: list[ShardEntry], plan: str, indexes: list[Path]
) -> list[str]:
    """Every shard was written for the manifest's ``plan``; every post the plan put in a
    listed shard is in it or recorded as failed; posts that failed for a reason a rerun
    may fix (their source unavailable) are missing from the output, and said so."""
    if not entries:
        return []
    numbers = [shard_number(e.name) for e in entries]
    failed, retryable, problems = [], 0, []
    for number in numbers:
        stats = ShardStats.read(shard_paths(shards_dir, number).stats)
        if stats is None:
            continue  # reported with the shard's other files
        if plan and stats.plan != plan:
            problems.append(
                f"{SHARDS_DIR}/{shard_name(number)}.tar was written for another plan "
                f"({stats.plan or 'unknown'}, the manifest's is {plan}): two runs wrote "
                "this folder; rerun the pull with --overwrite"
            )
        failed += [f.id for f in stats.failures]
        retryable += stats.retryable
    held = pl.concat([
        pl.scan_parquet(indexes).select(pl.col("id").cast(pl.Int64)) if indexes
        else pl.LazyFrame(schema={"id": pl.Int64}),
        pl.LazyFrame({"id": failed}, schema={"id": pl.Int64}),
    ])  # fmt: skip
    planned = pl.scan_parquet(out / PLAN_FILE).select(pl.col("id").cast(pl.Int64), "shard")
    lost = (
        planned.filter(pl.col("shard").is_in(numbers))
        .join(held, on="id", how="anti")
        .sort("shard", "id")
        .collect()
    )
    if lost.height:
        first = lost.row(0, named=True)
        problems.append(
            f"{lost.height:,} planned posts are neither in the output nor recorded as failed "
            f"(e.g. id {first['id']} of {SHARDS_DIR}/{shard_name(first['shard'])}.tar)"
        )
    if retryable:
        problems.append(
            f"{retryable:,} planned posts are missing because their source was unavailable: "
            "rerun the same pull with --retry-failed to complete the output"
        )
    return problems


def verify_output(out: str | Path, deep: bool = False) -> VerifyReport:
    """Check every shard of ``out`` against the manifest and its index (counts, size,
    sha256, member layout); with ``deep``, also decode every image and record."""
    out = Path(out)
    report = VerifyReport(out)
    try:
        manifest = read_manifest(out)
    except OutputError as exc:
        report.problems.append(str(exc))
        return report
    shards_dir = out / SHARDS_DIR
    entries = list(manifest.shards)
    listed = {e.name for e in entries}
    for entry in entries:
        report.problems += verify_shard(shards_dir, entry, deep)
        report.shards += 1
        report.samples += entry.samples
    indexes = [p for e in entries if _readable(p := shards_dir / Path(e.name).with_suffix(
        ".parquet").name)]  # fmt: skip
    report.problems += _repeated_keys(indexes)
    report.problems += _stray_shards(shards_dir, listed)
    plan_file = out / PLAN_FILE
    if plan_file.is_file() and not _readable(plan_file):
        report.problems.append(f"{PLAN_FILE} is unreadable: not a parquet file")
    elif plan_file.is_file():
        report.problems += _unfinished_plan(out, listed)
        report.problems += _against_plan(out, shards_dir, entries, manifest.plan, indexes)
    if manifest.written != report.samples:
        report.problems.append(
            f"manifest.json: totals say {manifest.written} written, "
            f"its shards hold {report.samples}"
        )
    return report
