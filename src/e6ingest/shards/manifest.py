"""``OUT/manifest.json``, typed: written once per run by the driver, read by every consumer
(verify, the readers, the kohya export, the dataset card) through :func:`read_manifest`,
which checks its format version and the types of its fields."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from e6ingest.shards.layout import MANIFEST_FILE, OutputError

# 3: indexed-tar JSON per shard, dataset card, LAION size keys; 4: caption variants, the
# latent cache's crop in each record, the plan id in the manifest and in every shard's stats.
FORMAT_VERSION = 4


@dataclass(frozen=True)
class ShardEntry:
    """One complete shard of the output."""

    name: str  # "shards/00042.tar"
    samples: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class OutputDataset:
    """The dataset an output was made from."""

    name: str
    site: str
    repos: dict[str, str] = field(default_factory=dict)  # repository -> commit (or "local")


@dataclass(frozen=True)
class OutputTotals:
    """What the run made of its selection."""

    selected: int = 0  # posts planned
    written: int = 0  # samples in the shards
    failed: dict[str, int] = field(default_factory=dict)  # posts not written, by kind
    bytes: int = 0  # of the shards

    @property
    def failures(self) -> int:
        """Posts not written, of every kind."""
        return sum(self.failed.values())


@dataclass(frozen=True)
class OutputManifest:
    """What ``manifest.json`` holds (docs/FORMAT.md)."""

    format_version: int
    e6ingest_version: str
    dataset: OutputDataset
    config: dict[str, Any]  # everything that decides the output (the config's fields)
    totals: OutputTotals
    shards: tuple[ShardEntry, ...] = ()
    plan: str = ""  # the plan's id (``planfile.plan_id``)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # keys of later versions

    @property
    def written(self) -> int:
        """Samples in the output, as the totals say."""
        return self.totals.written

    def to_json(self) -> bytes:
        """The file's bytes."""
        data = asdict(self)
        data.pop("extra")
        return json.dumps(data, indent=1).encode()

    @classmethod
    def from_dict(cls, data: Any, where: str) -> OutputManifest:
        """A manifest from its JSON document; OutputError naming ``where`` and the field
        when it is malformed or of a newer format than this e6ingest reads."""
        if not isinstance(data, dict):
            raise OutputError(f"{where}: not a manifest (a JSON {type(data).__name__})")
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise OutputError(f"{where}: format_version {version!r} is not a version number")
        if version > FORMAT_VERSION:
            raise OutputError(
                f"{where}: output format {version} is newer than this e6ingest reads (up to "
                f"{FORMAT_VERSION}); upgrade e6ingest to read it"
            )
        expected = {"e6ingest_version": str, "dataset": dict, "config": dict, "totals": dict,
                    "shards": list, "plan": str}  # fmt: skip
        for key, kind in expected.items():
            if key in data and not isinstance(data[key], kind):
                raise OutputError(f"{where}: {key} is a {type(data[key]).__name__}, not a "
                                  f"{kind.__name__}")  # fmt: skip
        shards = tuple(_entry(e, where) for e in data.get("shards", []))
        known = {*expected, "format_version"}
        dataset = _dataset(data.get("dataset", {}), f"{where}: dataset")
        totals = _totals(data.get("totals", {}), f"{where}: totals")
        return cls(version, data.get("e6ingest_version", ""), dataset, data.get("config", {}),
                   totals, shards, data.get("plan", ""),
                   {k: v for k, v in data.items() if k not in known})  # fmt: skip


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _dataset(value: dict[str, Any], where: str) -> OutputDataset:
    name, site, repos = value.get("name", ""), value.get("site", ""), value.get("repos", {})
    texts = isinstance(repos, dict) and all(isinstance(x, str) for x in (*repos, *repos.values()))
    if not (isinstance(name, str) and isinstance(site, str) and texts):
        raise OutputError(f"{where} {value!r} is not name, site, repos (repository -> commit)")
    return OutputDataset(name, site, dict(repos))


def _totals(value: dict[str, Any], where: str) -> OutputTotals:
    counts = {k: value.get(k, 0) for k in ("selected", "written", "bytes")}
    failed = value.get("failed", {})
    by_kind = isinstance(failed, dict) and all(_whole(n) for n in failed.values())
    if not (all(_whole(n) for n in counts.values()) and by_kind):
        raise OutputError(f"{where} {value!r} are not counts: selected, written, failed by "
                          "kind, bytes")  # fmt: skip
    return OutputTotals(failed=dict(failed), **counts)


def _entry(value: Any, where: str) -> ShardEntry:
    ok = isinstance(value, dict) and isinstance(value.get("name"), str) and all(
        isinstance(value.get(k), int) and not isinstance(value.get(k), bool)
        for k in ("samples", "bytes")
    ) and isinstance(value.get("sha256"), str)  # fmt: skip
    if not ok:
        raise OutputError(f"{where}: shard entry {value!r} is not name, samples, bytes, sha256")
    return ShardEntry(value["name"], value["samples"], value["bytes"], value["sha256"])


def read_manifest(out: str | Path) -> OutputManifest:
    """The manifest of the output folder ``out`` (checked: :meth:`OutputManifest.from_dict`)."""
    path = Path(out) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OutputError(f"{path}: no manifest; is {out} the --out of a finished pull?") from None
    except (OSError, ValueError) as exc:
        raise OutputError(f"{path}: unreadable manifest: {exc}") from exc
    return OutputManifest.from_dict(data, str(path))
