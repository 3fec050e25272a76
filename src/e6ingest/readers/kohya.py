"""``e6ingest export kohya``: a pull's output as the folder layout kohya-ss/sd-scripts
fine-tuning reads: ``{site}/{id}.webp`` and ``{site}/{id}.txt``, its metadata file and a
``dataset_config.toml``.

The metadata is a JSON object keyed by image path (``metadata.json``, read by sd-scripts
0.9 and 0.10) or, with ``jsonl``, one object per line with ``image_path``
(``metadata.jsonl``, sd-scripts >= 0.10 only). Each entry holds ``tags`` (the caption's tag
part), ``caption`` (the first natural-language caption; absent when there is none, so
sd-scripts trains on the tags alone) and ``image_size`` [W, H]. Image paths are relative to
the export folder, with their extension (the sd-scripts 0.10 form, joined with the
config's ``image_dir``), so the folder can be moved or mounted anywhere; ``absolute``
writes absolute paths instead.

The export writes only into an empty folder or one holding its own earlier export
(marked by ``.e6ingest-export.json``, with the sha256 of every file it wrote in
``.e6ingest-export.parquet``). A file is rewritten only when it still holds what e6ingest
wrote; one changed since (a hand-edited caption) is left alone and reported. Nothing is
written through a symlink.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from e6ingest.core import atomic_file, atomic_path, is_our_temp, write_atomic
from e6ingest.readers.reader import iter_samples
from e6ingest.shards.layout import OutputError
from e6ingest.shards.manifest import OutputManifest, read_manifest

SAFE_KEY = re.compile(r"^([a-z0-9][a-z0-9_-]{0,63})/([0-9]{1,20})$")
SITE_DIR = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SAMPLE_FILE = re.compile(r"^[0-9]{1,20}\.(?:webp|txt)$")
# What trainers write beside the images they read, which an export leaves alone: sd-scripts'
# latent caches ({stem}_{W:04d}x{H:04d}_sdxl.npz, and _sd3/_flux...; the legacy {stem}.npz)
# and text-encoder caches ({stem}_te.npz, _sd3_te.npz...).
TRAINER_CACHE = re.compile(r"^[0-9]{1,20}(?:_[0-9]{4}x[0-9]{4})?(?:_[a-z0-9]+)*\.npz$")
MARKER = ".e6ingest-export.json"
RECORD = ".e6ingest-export.parquet"
CONFIG_FILE = "dataset_config.toml"
METADATA_FILES = ("metadata.json", "metadata.jsonl")
TOP_FILES = frozenset({MARKER, RECORD, CONFIG_FILE, *METADATA_FILES})


class ExportError(OutputError):
    """The export folder cannot be written safely; the message names the file."""


@dataclass
class ExportSummary:
    """What an export did."""

    to: Path
    metadata: Path
    exported: int = 0  # images written now
    kept: int = 0  # images already there from an earlier export
    refused: list[str] = field(default_factory=list)  # keys unsafe or samples incomplete
    changed: list[str] = field(default_factory=list)  # files changed by hand: left alone
    removed: int = 0  # files of an earlier export that this one no longer has


def safe_paths(to: Path, key: str) -> tuple[Path, Path] | None:
    """The image and caption paths of ``key`` inside ``to``, or None when the key is not
    a plain ``site/id``."""
    match = SAFE_KEY.match(key)
    if match is None:
        return None
    site, post_id = match.groups()
    image = to / site / f"{post_id}.webp"
    return image, image.with_suffix(".txt")


def metadata_entry(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The sd-scripts metadata of one sample from its ``{key}.json`` record.

    ``caption`` is always there: sd-scripts 0.10 trains on ``caption`` alone with
    ``enable_wildcard`` (an empty one when it is missing). With caption variants, it holds
    every variant a line (the caption first, braces doubled as wildcards need) and no
    ``tags``: sd-scripts picks a line per step with ``enable_wildcard``, else trains the
    first. Without, ``caption`` is the NL text and ``tags`` the tags when the post has an
    NL text, else ``caption`` is the tags."""
    caption = meta.get("caption") or {}
    if meta.get("captions"):
        entry: dict[str, Any] = {"caption": wildcard_lines(meta)}
    elif caption.get("nl"):
        entry = {"caption": caption["nl"][0], "tags": caption.get("tags", "")}
    else:
        entry = {"caption": caption.get("tags", "")}
    entry["image_size"] = list(meta["size"])
    return entry


def wildcard_lines(meta: Mapping[str, Any]) -> str:
    """A record's caption variants a line each, the caption first, with ``{`` and ``}``
    doubled (sd-scripts' wildcards read ``{a|b}`` as a choice)."""
    from e6ingest.captions.variants import variant_lines

    captions = meta["captions"]
    text = variant_lines(captions, ["default", *(n for n in captions if n != "default")])
    return text.replace("{", "{{").replace("}", "}}")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _foreign(to: Path, path: Path) -> ExportError:
    return ExportError(
        f"--to {to} holds files e6ingest did not write ({path}); export kohya writes only "
        "into an empty folder or one of its own exports: choose another folder"
    )


def _scan_target(to: Path) -> dict[str, str]:
    """Check that ``to`` is empty or an earlier export of ours, following no symlink;
    the sha256 e6ingest recorded for each file it wrote there (by relative path)."""
    if not to.exists():
        return {}
    if to.is_symlink():
        raise ExportError(f"--to {to} is a symbolic link; export kohya follows none: give "
                          "the folder itself")  # fmt: skip
    if not to.is_dir():
        raise ExportError(f"--to {to} is not a folder")
    entries = sorted(os.scandir(to), key=lambda e: e.name)
    if not entries:
        return {}
    if not (to / MARKER).is_file() or (to / MARKER).is_symlink():
        raise _foreign(to, Path(entries[0].path))
    for entry in entries:
        if entry.is_symlink():
            raise _foreign(to, Path(entry.path))
        if is_our_temp(entry, TOP_FILES.__contains__):
            os.unlink(entry.path)  # a temporary of an interrupted export of ours
            continue
        if entry.is_file() and entry.name in TOP_FILES:
            continue
        if not (entry.is_dir() and SITE_DIR.match(entry.name)):
            raise _foreign(to, Path(entry.path))
        for item in os.scandir(entry.path):
            if is_our_temp(item, SAMPLE_FILE.match):
                os.unlink(item.path)  # a temporary of an interrupted export of ours
                continue
            if TRAINER_CACHE.match(item.name) and item.is_file(follow_symlinks=False):
                continue  # a trainer's cache of an image of ours: not ours, left alone
            if item.is_symlink() or not item.is_file() or not SAMPLE_FILE.match(item.name):
                raise _foreign(to, Path(item.path))
    return _read_record(to)


def _recordable(rel: object) -> bool:
    """Whether ``rel`` is a path an export writes: a top file, or ``site/NAME`` of a
    sample (nothing outside the folder, no ``..``, no other folder)."""
    if not isinstance(rel, str):
        return False
    if rel in TOP_FILES:
        return True
    parts = rel.split("/")
    return len(parts) == 2 and bool(SITE_DIR.match(parts[0]) and SAMPLE_FILE.match(parts[1]))


def _read_record(to: Path) -> dict[str, str]:
    """The files an earlier export recorded (relative path -> sha256); a record that is
    unreadable or names a path an export never writes is refused, naming it."""
    path = to / RECORD
    if not path.is_file():
        return {}
    try:
        record = pl.read_parquet(path, columns=["path", "sha256"])
        entries = dict(zip(record["path"], record["sha256"], strict=True))
    except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
        raise ExportError(f"{path}: unreadable export record ({exc}); remove it") from None
    for rel in entries:
        if not _recordable(rel):
            raise ExportError(
                f"{path} names {rel!r}, which no export writes (outside {to}, or not a "
                "sample file): the record was changed; e6ingest deletes nothing it names"
            )
    return entries


class _Files:
    """Writes files under ``to``, rewriting one only if it still holds what e6ingest wrote."""

    def __init__(self, to: Path, recorded: dict[str, str], summary: ExportSummary):
        self.to, self.recorded, self.summary = to, recorded, summary
        self.written: dict[str, str] = {}  # relative path -> sha256, this export

    def put(self, path: Path, data: bytes) -> bool:
        """Write ``data`` at ``path`` unless it is there already; True when written."""
        rel = path.relative_to(self.to).as_posix()
        digest = _sha256(data)
        try:
            current = _sha256(path.read_bytes()) if not path.is_symlink() else None
        except FileNotFoundError:
            current = ""
        if current == digest:
            self.written[rel] = digest
            return False
        if current and current != self.recorded.get(rel):
            self.summary.changed.append(rel)  # changed by hand since: not ours to replace
            return False
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, data, durable=False)
        self.written[rel] = digest
        return True

    def check_unchanged(self, rel: str) -> None:
        """Refuse to go on when a top-level file was changed since e6ingest wrote it."""
        path = self.to / rel
        if path.is_file() and _sha256(path.read_bytes()) != self.recorded.get(rel):
            raise ExportError(
                f"{path} was changed since e6ingest wrote it (or was never e6ingest's); "
                "move it away to export here"
            )

    def remove_stale(self) -> None:
        """Delete files an earlier export wrote that this one does not have, when they
        still hold what e6ingest wrote."""
        for rel, digest in self.recorded.items():
            path = self.to / rel
            kept = TOP_FILES - set(METADATA_FILES)  # the other metadata form goes too
            if rel in self.written or rel in kept or path.is_symlink():
                continue
            try:
                if _sha256(path.read_bytes()) == digest:
                    path.unlink()
                    self.summary.removed += 1
            except FileNotFoundError:
                continue

    def save_record(self, finished: bool) -> None:
        """Record what e6ingest wrote: this export's files, and those of the earlier one
        that this export has not reached (when it did not finish), or its top files still
        there."""
        kept = self.recorded if not finished else {
            rel: digest for rel, digest in self.recorded.items()
            if rel in TOP_FILES and (self.to / rel).is_file()
        }  # fmt: skip
        entries = {**kept, **self.written}
        frame = pl.DataFrame(
            {"path": list(entries), "sha256": list(entries.values())},
            schema={"path": pl.String, "sha256": pl.String},
        )
        with atomic_path(self.to / RECORD) as tmp:
            frame.write_parquet(tmp)


class _MetadataWriter:
    """Streams entries to the metadata file (under a temporary name until closed)."""

    def __init__(self, path: Path, jsonl: bool):
        self.jsonl = jsonl
        self._file = atomic_file(path, durable=False)
        self.handle = self._file.__enter__()
        self.digest = hashlib.sha256()
        self.count = 0
        if not jsonl:
            self._write("{")

    def _write(self, text: str) -> None:
        data = text.encode("utf-8")
        self.digest.update(data)
        self.handle.write(data)

    def add(self, image: str, entry: dict[str, Any]) -> None:
        if self.jsonl:
            self._write(json.dumps({"image_path": image, **entry}, ensure_ascii=False) + "\n")
        else:
            self._write(",\n" if self.count else "\n")
            self._write(f"{json.dumps(image)}: {json.dumps(entry, ensure_ascii=False)}")
        self.count += 1

    def close(self) -> None:
        if not self.jsonl:
            self._write("\n}\n" if self.count else "}\n")
        self._file.__exit__(None, None, None)

    def abort(self, exc: BaseException) -> None:
        self._file.__exit__(type(exc), exc, exc.__traceback__)


def _caption_file(meta: Mapping[str, Any], txt: bytes) -> bytes:
    """The ``.txt`` beside an exported image: every variant a line when there are variants
    (OneTrainer picks a line per step), else the caption."""
    if not meta.get("captions"):
        return txt
    from e6ingest.captions.variants import variant_lines

    captions = meta["captions"]
    names = ["default", *(n for n in captions if n != "default")]
    return variant_lines(captions, names).encode("utf-8")


def dataset_config(manifest: OutputManifest, metadata_name: str) -> str:
    """sd-scripts' dataset config for an export: one fine-tuning subset (this folder and
    its metadata file, relative to the folder sd-scripts runs in) and the run's buckets."""
    config = manifest.config
    buckets = config.get("buckets", {})
    caption = config.get("caption", {})
    lines = [
        "# sd-scripts dataset config (library/config_util.py), written by e6ingest export.",
        "# Paths are relative to the folder sd-scripts runs in: run it from this folder,",
        "# or make image_dir and metadata_file absolute.",
        "[general]",
        "enable_bucket = true",
        f"resolution = {int(buckets.get('resolution', 1024))}",
        f"min_bucket_reso = {int(buckets.get('min_side', 512))}",
        f"max_bucket_reso = {int(buckets.get('max_side', 2048))}",
        f"bucket_reso_steps = {int(buckets.get('step', 64))}",
        f"caption_separator = {json.dumps((caption.get('separator') or ',').strip() or ',')}",
    ]
    if caption.get("keep_tokens_separator"):
        lines.append(f"keep_tokens_separator = {json.dumps(caption['keep_tokens_separator'])}")
    lines += ["", "[[datasets]]", "", "[[datasets.subsets]]", 'image_dir = "."',
              f"metadata_file = {json.dumps(metadata_name)}"]  # fmt: skip
    if caption.get("variants"):
        lines += ["# each caption holds the variants a line each: one is picked per step",
                  "enable_wildcard = true"]  # fmt: skip
    return "\n".join([*lines, ""])


def export_kohya(
    out: str | Path,
    to: str | Path,
    jsonl: bool = False,
    absolute: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    """Export the output folder ``out`` to ``to`` for sd-scripts fine-tuning (module doc).

    ``progress(n)`` is called after each sample.
    """
    to = Path(os.path.normpath(Path(to).absolute()))  # no ".." in the paths it writes
    manifest = read_manifest(out)
    if to.resolve().is_relative_to(Path(out).resolve()):
        raise ExportError(f"--to {to} is inside the pull's output {out}, which then holds "
                          "files the pull did not write (its reruns refuse such a folder): "
                          "export to a folder outside it")  # fmt: skip
    recorded = _scan_target(to)
    metadata = to / ("metadata.jsonl" if jsonl else "metadata.json")
    summary = ExportSummary(to, metadata)
    files = _Files(to, recorded, summary)
    for name in (metadata.name, CONFIG_FILE):
        files.check_unchanged(name)
    to.mkdir(parents=True, exist_ok=True)
    if not (to / MARKER).is_file():
        marker = {"e6ingest_export": "kohya", "source": str(Path(out).absolute())}
        write_atomic(to / MARKER, json.dumps(marker).encode())
    writer = _MetadataWriter(metadata, jsonl)
    try:
        for key, members in iter_samples(out):
            paths = safe_paths(to, key)
            if paths is None or not {"webp", "txt", "json"} <= members.keys():
                summary.refused.append(key)
                continue
            image, text = paths
            meta = json.loads(members["json"])
            files.put(text, _caption_file(meta, members["txt"]))
            if files.put(image, members["webp"]):
                summary.exported += 1
            else:
                summary.kept += 1
            name = str(image) if absolute else image.relative_to(to).as_posix()
            writer.add(name, metadata_entry(meta))
            if progress is not None:
                progress(1)
    except BaseException as exc:
        writer.abort(exc)
        files.save_record(finished=False)
        raise
    writer.close()
    files.written[metadata.name] = writer.digest.hexdigest()
    config = dataset_config(manifest, metadata.name).encode()
    files.written[CONFIG_FILE] = _sha256(config)
    write_atomic(to / CONFIG_FILE, config, durable=False)
    files.remove_stale()
    files.save_record(finished=True)
    return summary
