"""``e6ingest export kohya``: a pull's output as the folder layout kohya-ss/sd-scripts
fine-tuning reads: ``{site}/{id}.webp`` and ``{site}/{id}.txt``, with its metadata file.

The metadata is a JSON object keyed by image path (``metadata.json``) or, with ``jsonl``,
one object per line (``metadata.jsonl``) with ``image_path``. Each entry holds ``tags``
(the caption's tag part), ``caption`` (the first natural-language caption; absent when
there is none, so sd-scripts trains on the tags alone) and ``image_size`` [W, H].
sd-scripts trains on ``caption + caption_separator + tags``.

Files are written to a temporary name and renamed, so an image that exists is whole; a
rerun skips them and rewrites only the metadata file. Sample keys come from the tars, so
they are checked (``site/digits``) before any path is made from them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from e6ingest.shards.reader import iter_samples

SAFE_KEY = re.compile(r"^([a-z0-9][a-z0-9_-]{0,63})/([0-9]{1,20})$")


@dataclass
class ExportSummary:
    """What an export did."""

    to: Path
    metadata: Path
    exported: int = 0  # images written now
    kept: int = 0  # images already there from an earlier export
    refused: list[str] = field(default_factory=list)  # keys unsafe or samples incomplete


def safe_paths(to: Path, key: str) -> tuple[Path, Path] | None:
    """The image and caption paths of ``key`` inside ``to``, or None when the key is not
    a plain ``site/id`` or would land outside ``to``."""
    match = SAFE_KEY.match(key)
    if match is None:
        return None
    site, post_id = match.groups()
    image = to / site / f"{post_id}.webp"
    if not image.resolve().is_relative_to(to.resolve()):
        return None
    return image, image.with_suffix(".txt")


def _write_new(path: Path, data: bytes) -> bool:
    """Write ``path`` through a temporary name unless it already holds ``len(data)`` bytes;
    True when written."""
    if path.is_file() and path.stat().st_size == len(data):
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def metadata_entry(meta: dict) -> dict:
    """The sd-scripts metadata of one sample from its ``{key}.json`` record."""
    caption = meta.get("caption") or {}
    entry: dict = {"tags": caption.get("tags", "")}
    if caption.get("nl"):
        entry["caption"] = caption["nl"][0]
    entry["image_size"] = list(meta["size"])
    return entry


class _MetadataWriter:
    """Streams entries to the metadata file (under a temporary name until closed)."""

    def __init__(self, path: Path, jsonl: bool):
        self.path, self.jsonl = path, jsonl
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.file = self.tmp.open("w", encoding="utf-8")
        self.count = 0
        if not jsonl:
            self.file.write("{")

    def add(self, image: Path, entry: dict) -> None:
        if self.jsonl:
            self.file.write(json.dumps({"image_path": str(image), **entry}, ensure_ascii=False))
            self.file.write("\n")
        else:
            self.file.write(",\n" if self.count else "\n")
            self.file.write(f"{json.dumps(str(image))}: {json.dumps(entry, ensure_ascii=False)}")
        self.count += 1

    def close(self) -> None:
        if not self.jsonl:
            self.file.write("\n}\n" if self.count else "}\n")
        self.file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def export_kohya(
    out: str | Path,
    to: str | Path,
    jsonl: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    """Export the output folder ``out`` to ``to`` for sd-scripts fine-tuning (module doc).

    ``progress(n)`` is called after each sample. Image paths in the metadata are absolute.
    """
    to = Path(to).absolute()
    to.mkdir(parents=True, exist_ok=True)
    metadata = to / ("metadata.jsonl" if jsonl else "metadata.json")
    summary = ExportSummary(to, metadata)
    writer = _MetadataWriter(metadata, jsonl)
    try:
        for key, members in iter_samples(out):
            paths = safe_paths(to, key)
            if paths is None or not {"webp", "txt", "json"} <= members.keys():
                summary.refused.append(key)
                continue
            image, text = paths
            image.parent.mkdir(exist_ok=True)
            _write_new(text, members["txt"])
            if _write_new(image, members["webp"]):
                summary.exported += 1
            else:
                summary.kept += 1
            writer.add(image, metadata_entry(json.loads(members["json"])))
            if progress is not None:
                progress(1)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return summary
