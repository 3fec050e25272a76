"""Dataset manifests: what a dataset is, read from one TOML file per dataset.

A manifest names the Hub repositories that hold a dataset's metadata and images, the
revision, how shards are named and where each shard's index lives. Adding a dataset means
adding a TOML file, not code. The bundled manifests live in the top-level ``manifests/``
folder of the project (packaged as ``e6ingest/manifests`` in the wheel).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

REPO_TYPE = "dataset"


class ManifestError(ValueError):
    """A dataset manifest is missing, unreadable or malformed."""


@dataclass(frozen=True)
class MetadataFile:
    """One metadata parquet file of a dataset, and the schema adapter that reads it."""

    repo: str
    path: str
    schema: str
    revision: str = "main"


@dataclass(frozen=True)
class ImageRepo:
    """One repository of indexed tar shards; a post lives in shard ``id % shards``."""

    repo: str
    tar: str
    index: str
    shards: int = 1000
    revision: str = "main"
    index_repo: str | None = None

    def shard_of(self, post_id: int) -> int:
        """The shard number that holds ``post_id``."""
        return post_id % self.shards

    def tar_path(self, shard: int) -> str:
        """Path of the tar of ``shard`` inside the repository."""
        return self.tar.format(shard=shard)

    def index_path(self, shard: int) -> str:
        """Path of the index JSON of ``shard`` inside :attr:`index_repo_id`."""
        return self.index.format(shard=shard)

    @property
    def index_repo_id(self) -> str:
        """The repository holding the index JSON files (the image repo unless set)."""
        return self.index_repo or self.repo


@dataclass(frozen=True)
class DatasetManifest:
    """Everything e6ingest needs to know about one dataset."""

    name: str
    site: str
    metadata: tuple[MetadataFile, ...]
    images: tuple[ImageRepo, ...]
    ratings: tuple[str, ...] = ("g", "s", "q", "e")
    description: str = ""
    gated: bool = False
    source_file: str = ""

    @property
    def repos(self) -> tuple[str, ...]:
        """Every repository the dataset uses, in a stable order, without repeats."""
        names: list[str] = []
        for repo in (
            *(m.repo for m in self.metadata),
            *(i.repo for i in self.images),
            *(i.index_repo_id for i in self.images),
        ):
            if repo not in names:
                names.append(repo)
        return tuple(names)


def bundled_manifest_dir() -> Path:
    """The folder holding the manifests shipped with e6ingest."""
    packaged = Path(__file__).parent / "manifests"
    if packaged.is_dir():
        return packaged
    # Source checkout or editable install: the top-level manifests/ folder.
    return Path(__file__).resolve().parents[2] / "manifests"


def available_datasets() -> list[str]:
    """Names of the bundled datasets."""
    return sorted(p.stem for p in bundled_manifest_dir().glob("*.toml"))


def _require(table: dict, key: str, where: str) -> object:
    if key not in table:
        raise ManifestError(f"{where}: missing required key {key!r}")
    return table[key]


def parse_manifest(data: dict, where: str) -> DatasetManifest:
    """Build a :class:`DatasetManifest` from a parsed TOML table; ``where`` names the source."""
    metadata = tuple(
        MetadataFile(
            repo=str(_require(m, "repo", f"{where} [[metadata]]")),
            path=str(_require(m, "path", f"{where} [[metadata]]")),
            schema=str(_require(m, "schema", f"{where} [[metadata]]")),
            revision=str(m.get("revision", "main")),
        )
        for m in data.get("metadata", [])
    )
    images = tuple(
        ImageRepo(
            repo=str(_require(i, "repo", f"{where} [[images]]")),
            tar=str(_require(i, "tar", f"{where} [[images]]")),
            index=str(_require(i, "index", f"{where} [[images]]")),
            shards=int(i.get("shards", 1000)),
            revision=str(i.get("revision", "main")),
            index_repo=i.get("index_repo"),
        )
        for i in data.get("images", [])
    )
    if not metadata:
        raise ManifestError(f"{where}: no [[metadata]] entry")
    if not images:
        raise ManifestError(f"{where}: no [[images]] entry")
    return DatasetManifest(
        name=str(_require(data, "name", where)),
        site=str(_require(data, "site", where)),
        metadata=metadata,
        images=images,
        ratings=tuple(data.get("ratings", ("g", "s", "q", "e"))),
        description=str(data.get("description", "")),
        gated=bool(data.get("gated", False)),
        source_file=where,
    )


def load_manifest(name_or_path: str | Path) -> DatasetManifest:
    """Load a bundled dataset by name (``e621``) or any manifest TOML file by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = bundled_manifest_dir() / f"{name_or_path}.toml"
        if not path.is_file():
            known = ", ".join(available_datasets()) or "none"
            raise ManifestError(f"unknown dataset {str(name_or_path)!r} (known: {known})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc}") from exc
    return parse_manifest(data, str(path))
