"""Dataset manifests: what a dataset is, read from one TOML file per dataset.

A manifest names the Hub repositories that hold a dataset's metadata and images, the
revision, how shards are named and where each shard's index lives. Adding a dataset means
adding a TOML file, not code. The bundled manifests live in the top-level ``manifests/``
folder of the project (packaged as ``e6ingest/manifests`` in the wheel).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from e6ingest import tomlfile
from e6ingest.core import SITE_RATINGS

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
    index_revision: str | None = None  # None: ``revision``

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

    @property
    def index_repo_revision(self) -> str:
        """The revision of :attr:`index_repo_id` to read."""
        return self.index_revision or self.revision


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
    tags: MetadataFile | None = None  # the site's tags table (categories), when posts lack them
    implications: MetadataFile | None = None  # the site's tag implications table

    @property
    def tables(self) -> tuple[MetadataFile, ...]:
        """The tag tables the manifest names."""
        return tuple(t for t in (self.tags, self.implications) if t is not None)

    @property
    def repos(self) -> tuple[str, ...]:
        """Every repository the dataset uses, in a stable order, without repeats."""
        names: list[str] = []
        for repo in (
            *(m.repo for m in self.metadata),
            *(i.repo for i in self.images),
            *(i.index_repo_id for i in self.images),
            *(t.repo for t in self.tables),
        ):
            if repo not in names:
                names.append(repo)
        return tuple(names)

    def revisions(self) -> dict[str, str]:
        """The revision each repository is read at."""
        found: dict[str, str] = {}
        for m in (*self.metadata, *self.tables):
            found.setdefault(m.repo, m.revision)
        for i in self.images:
            found.setdefault(i.repo, i.revision)
            found.setdefault(i.index_repo_id, i.index_repo_revision)
        return found

    def pinned(self, commits: dict[str, str]) -> DatasetManifest:
        """This manifest with each repository read at ``commits[repo]`` (where given)."""

        def pin(entry: MetadataFile) -> MetadataFile:
            return replace(entry, revision=commits.get(entry.repo, entry.revision))

        metadata = tuple(pin(m) for m in self.metadata)
        images = tuple(
            replace(
                i,
                revision=commits.get(i.repo, i.revision),
                index_revision=commits.get(i.index_repo_id, i.index_repo_revision),
            )
            for i in self.images
        )
        tags, implications = self.tags, self.implications
        return replace(self, metadata=metadata, images=images, tags=tags and pin(tags),
                       implications=implications and pin(implications))  # fmt: skip


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


REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_NAME_PART = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
SITES = ("danbooru", "e621")


T = TypeVar("T")
_KINDS: dict[type, str] = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    list: "a list",
    dict: "a table",
}


class _Table:
    """Typed reads of one TOML table; every error names the file, table and key."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: expected a table, not {type(data).__name__}")
        self.data: dict[str, object] = data
        self.where = where

    def only(self, *known: str) -> _Table:
        """This table, refused when it holds a key not in ``known`` (a misspelt key would
        otherwise be ignored, and its default used without a word)."""
        unknown = sorted(set(self.data) - set(known))
        if unknown:
            near = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f" (known: {', '.join(known)})"
            raise ManifestError(f"{self.where}: unknown key {unknown[0]!r}{hint}")
        return self

    def get(self, key: str, kind: type[T], default: T) -> T:
        """``key``'s value, of type ``kind``, or ``default`` when absent."""
        found = self.optional(key, kind)
        return default if found is None else found

    def require(self, key: str, kind: type[T]) -> T:
        """``key``'s value, of type ``kind``; a missing key is an error."""
        found = self.optional(key, kind)
        if found is None:
            raise ManifestError(f"{self.where}: missing required key {key!r}")
        return found

    def optional(self, key: str, kind: type[T]) -> T | None:
        """``key``'s value, of type ``kind``, or None when absent."""
        if key not in self.data:
            return None
        value = self.data[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ManifestError(f"{self.where}: {key} must be {_KINDS[kind]}, not {value!r}")
        return value

    def relative_path(self, key: str) -> str:
        value = self.require(key, str)
        _check_relative(value, f"{self.where}: {key}")
        return value

    def repo(self, key: str) -> str:
        value = self.require(key, str)
        self._check_repo(key, value)
        return value

    def optional_repo(self, key: str) -> str | None:
        value = self.optional(key, str)
        if value is not None:
            self._check_repo(key, value)
        return value

    def _check_repo(self, key: str, value: str) -> None:
        if not REPO_NAME.match(value) or ".." in value:
            raise ManifestError(
                f"{self.where}: {key} {value!r} is not a repository name (owner/name)"
            )

    def revision(self) -> str:
        value = self.get("revision", str, "main")
        if not is_revision(value):
            raise ManifestError(f"{self.where}: revision {value!r} is not a branch, tag or commit")
        return value


def is_revision(value: str) -> bool:
    """Whether ``value`` can name a branch, tag or commit (path parts of plain names: no
    ``..``, no empty part, nothing that leaves a folder)."""
    return all(_NAME_PART.match(p) and ".." not in p for p in value.split("/"))


def _check_relative(value: str, where: str) -> None:
    parts = value.split("/")
    bad = (
        not value
        or "\\" in value
        or "\0" in value
        or value.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
    )
    if bad:
        raise ManifestError(f"{where}: {value!r} must be a relative path without '..'")


def _template(table: _Table, key: str, shards: int) -> str:
    value = table.require(key, str)
    try:
        first, last = value.format(shard=0), value.format(shard=shards - 1)
    except (KeyError, IndexError, ValueError) as exc:
        raise ManifestError(f"{table.where}: {key} {value!r} is not a template of {{shard}}: "
                            f"{exc}") from None  # fmt: skip
    if shards > 1 and first == last:
        raise ManifestError(f"{table.where}: {key} {value!r} names one file for every shard")
    for name in (first, last):
        _check_relative(name, f"{table.where}: {key}")
    return value


def _image_repo(data: object, where: str) -> ImageRepo:
    table = _Table(data, where).only("repo", "revision", "tar", "index", "index_repo", "shards")
    shards = table.get("shards", int, 1000)
    if shards < 1:
        raise ManifestError(f"{where}: shards must be at least 1, not {shards}")
    return ImageRepo(
        repo=table.repo("repo"),
        tar=_template(table, "tar", shards),
        index=_template(table, "index", shards),
        shards=shards,
        revision=table.revision(),
        index_repo=table.optional_repo("index_repo"),
    )


def _metadata_file(data: object, where: str, schema: str | None = None) -> MetadataFile:
    table = _Table(data, where).only("repo", "revision", "path", *([] if schema else ["schema"]))
    return MetadataFile(
        repo=table.repo("repo"),
        path=table.relative_path("path"),
        schema=schema or table.require("schema", str),
        revision=table.revision(),
    )


_TOP_KEYS = ("name", "site", "description", "ratings", "gated", "metadata", "images", "tags",
             "implications")  # fmt: skip


def parse_manifest(data: Mapping[str, object], where: str) -> DatasetManifest:
    """Build a :class:`DatasetManifest` from a parsed TOML table; ``where`` names the source.

    Every value is checked: names of repositories, revisions and path templates that could
    lead outside a mirror or cache (``..``, absolute paths) are refused, as are wrong types.
    """
    top = _Table(data, where).only(*_TOP_KEYS)
    metadata = tuple(
        _metadata_file(m, f"{where} [[metadata]]") for m in top.get("metadata", list, [])
    )
    images = tuple(_image_repo(i, f"{where} [[images]]") for i in top.get("images", list, []))
    if not metadata:
        raise ManifestError(f"{where}: no [[metadata]] entry")
    if not images:
        raise ManifestError(f"{where}: no [[images]] entry")
    if len({i.shards for i in images}) > 1:
        raise ManifestError(f"{where}: every [[images]] entry needs the same number of shards")
    site = top.require("site", str)
    if site not in SITES:
        raise ManifestError(f"{where}: site {site!r} is not one of {list(SITES)}")
    ratings = tuple(top.get("ratings", list, list(SITE_RATINGS[site])))
    unknown = [r for r in ratings if r not in SITE_RATINGS[site]]
    if unknown:
        raise ManifestError(f"{where}: ratings: {unknown[0]!r} is not one of the {site} "
                            f"ratings ({', '.join(SITE_RATINGS[site])})")  # fmt: skip
    tables = {
        name: _metadata_file(top.data[name], f"{where} [{name}]", schema=name)
        for name in ("tags", "implications")
        if top.optional(name, dict) is not None
    }
    return DatasetManifest(
        name=top.require("name", str),
        site=site,
        metadata=metadata,
        images=images,
        ratings=ratings,
        description=top.get("description", str, ""),
        gated=top.get("gated", bool, False),
        source_file=where,
        **tables,
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
        data = tomlfile.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomlfile.TOMLDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc}") from exc
    return parse_manifest(data, str(path))
