"""The output folder of a run: made ready (only e6ingest's own files ever removed), the
shards still to write found, and a continued run told when its metadata changed since it was
planned."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from e6ingest.core import is_temp_name
from e6ingest.manifests import DatasetManifest
from e6ingest.metadata.identity import footer_sha256
from e6ingest.outdir.folder import OutputContents, foreign_error, remove_ours, scan_output
from e6ingest.pipeline.planfile import plan_fingerprint, plan_metadata_files
from e6ingest.shards import PLAN_FILE, shard_complete
from e6ingest.shards.layout import OutputError
from e6ingest.shards.writer import read_stats


class OutputConflict(OutputError):
    """The output folder holds a run made with a different configuration."""


def make_output_folder(out: Path) -> None:
    """Create ``out`` (and its parents) or say why it cannot be an output folder."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"--out {out}: cannot create the folder: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"--out {out} is not writable")


def differences(saved: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The option names whose values differ between two configs (nested with dots)."""
    names = []
    for key in sorted(set(saved) | set(new)):
        a, b = saved.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            names += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            names.append(f"{prefix}{key} ({a!r} -> {b!r})")
    return names


def prepare_output(out: Path, fingerprint: Mapping[str, Any], overwrite: bool) -> bool:
    """Make ``out`` ready for a run (its lock held); True when a saved plan of the same
    config is to be continued. Only files e6ingest wrote are ever removed: a folder
    holding anything else is refused, naming one such file."""
    contents = scan_output(out)
    if contents.foreign:
        raise foreign_error(contents)
    saved = _with_defaults_of_its_time(plan_fingerprint(out / PLAN_FILE))
    if saved == fingerprint:
        remove_ours(OutputContents(out, [p for p in contents.ours if is_temp_name(p.name)]))
        return True
    if contents.has_run and not overwrite:
        if saved is None:
            raise OutputConflict(
                f"{out} holds an earlier run whose plan is missing; "
                "use another --out, or --overwrite to replace that run"
            )
        changed = differences(saved.get("config", {}), fingerprint["config"])
        for key in ("format_version", "dataset"):
            if saved.get(key) != fingerprint[key]:
                changed.insert(0, f"{key} ({saved.get(key)!r} -> {fingerprint[key]!r})")
        raise OutputConflict(
            f"{out} holds a run with a different configuration ({'; '.join(changed[:5])}"
            f"{' ...' if len(changed) > 5 else ''}); to continue it, give the options it "
            "was started with; else use another --out, or --overwrite to replace that run"
        )  # fmt: skip
    if contents.edited:
        raise OutputError(
            f"{contents.edited[0]} was edited after e6ingest wrote it, and e6ingest never "
            "overwrites a person's edits: move it out of the folder to replace this run"
        )
    remove_ours(contents)
    return False


def _with_defaults_of_its_time(saved: dict[str, Any] | None) -> dict[str, Any] | None:
    """A saved fingerprint with the options added since it was written set to what its
    run used: before the image backend was a choice every run used Pillow, and before
    pass-through was a choice every run passed compliant WebP through."""
    image = (saved or {}).get("config", {}).get("image")
    if isinstance(image, dict):
        image.setdefault("backend", "pillow")
        image.setdefault("pass_through", True)
    return saved


def shards_to_run(shards_dir: Path, numbers: list[int], retry_failed: bool) -> list[int]:
    """The shards a run still has to write: those not complete (files missing, or a tar
    whose size or sha256 is not what its stats say), and with ``retry_failed`` the complete
    ones holding retryable failures. Nothing is changed here: a shard being rewritten
    loses its stats only when its new tar is about to replace the old one."""

    def redo(number: int) -> bool:
        if not shard_complete(shards_dir, number, check_bytes=True):
            return True
        stats = read_stats(shards_dir, number)
        return retry_failed and (stats is None or stats.retryable > 0)

    return [n for n in numbers if redo(n)]


def metadata_footprint(manifest: DatasetManifest, files: Sequence[Path]) -> dict[str, str]:
    """Each metadata file of a plan by name (repository/path): its size and the sha256 of
    its parquet footer (a file replaced by other data almost always has another)."""
    marks = (footer_sha256(path) for path in files)
    return {f"{m.repo}/{m.path}": f"{size}:{footer}"
            for m, (size, footer) in zip(manifest.metadata, marks, strict=True)}  # fmt: skip


def changed_metadata(
    plan_path: Path, manifest: DatasetManifest, files: Sequence[Path]
) -> list[str]:
    """A warning when the metadata a continued run's plan was made from has changed since
    (a mirror updated in place): the run goes on with the posts planned then."""
    saved = plan_metadata_files(plan_path)
    if saved is None:
        return []
    now = metadata_footprint(manifest, files)
    changed = [name for name, mark in now.items() if saved.get(name) != mark]
    if not changed:
        return []
    more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
    return [
        f"{changed[0]}{more} changed since this output was planned; this run goes on with "
        "the posts planned then (for the metadata as it is now, write to another --out)"
    ]
