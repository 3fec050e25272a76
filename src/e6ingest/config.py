"""One configuration model for a pull, shared by the CLI flags and a TOML file.

A TOML file holds the same names as the flags (with underscores), the image, caption and
bucket options in their own tables::

    dataset = "e621"
    ratings = ["e", "q", "s"]
    shard_size = 1000
    [image]
    quality = 90
    [caption]
    separator = ", "
    [buckets]
    resolution = 1024

Flags given on the command line win over the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from e6ingest import tomlfile
from e6ingest.buckets import BucketSpec
from e6ingest.captions import CaptionSpec
from e6ingest.core import (
    RatingError,
    check_plain_fields,
    parse_ratings as core_parse_ratings,
    type_error,
)
from e6ingest.imaging import DEFAULT_MAX_PIXELS, ImagePolicy
from e6ingest.manifests import REPO_NAME, is_revision
from e6ingest.query import Subset

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

C = TypeVar("C", bound="DataclassInstance")


class ConfigError(ValueError):
    """A configuration value or flag is invalid; the message names it."""


def parse_ratings(text: str | Iterable[str] | None, site: str | None = None) -> tuple[str, ...]:
    """``--rating`` as rating letters (see :func:`e6ingest.core.parse_ratings`)."""
    try:
        ratings = core_parse_ratings(text, site)
    except RatingError as exc:
        raise ConfigError(f"--rating: {exc}") from None
    if isinstance(text, str) and not ratings:  # "$RATINGS" left unset: never every rating
        raise ConfigError(f"--rating {text!r} names no rating: give ratings such as e,q,s, "
                          "or leave it out for every rating")  # fmt: skip
    return ratings


MIN_MAX_PIXELS = 64 * 64  # a smaller pixel budget is a typo (megapixels for pixels)


@dataclass(frozen=True)
class PullConfig:
    """Everything that decides what a pull writes."""

    dataset: str = "e621"
    ratings: tuple[str, ...] = ()
    query: str = ""
    include_deleted: bool = False
    tag_table: str = ""  # e621 tags table restoring tag categories
    shard_size: int = 0  # samples per output shard; 0: 1000, fewer for small pulls
    image: ImagePolicy = field(default_factory=ImagePolicy)
    caption: CaptionSpec = field(default_factory=CaptionSpec)
    buckets: BucketSpec = field(default_factory=BucketSpec)
    revisions: tuple[tuple[str, str], ...] | Mapping[str, str] = ()  # repo -> pinned revision
    sample: int = 0  # keep a deterministic random N posts of the selection (0: all)
    limit: int = 0  # keep the first N posts in the query's order: (0: all)
    seed: int = 0  # the seed of sample and order:random
    drop_duplicates: bool = False  # posts whose file (md5) another selected post has: failed

    def __post_init__(self) -> None:
        try:
            check_plain_fields(self)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        for name in ("max_pixels", "max_source_pixels"):
            pixels = getattr(self.image, name)
            if pixels < MIN_MAX_PIXELS:
                raise ConfigError(
                    f"{name} counts pixels (width x height; {DEFAULT_MAX_PIXELS} is 2048x2048): "
                    f"{pixels} is less than a 64x64 image, too small to train on"
                )
        if self.shard_size < 0:
            raise ConfigError(
                f"--shard-size must be at least 1 (0: the default), not {self.shard_size}"
            )
        object.__setattr__(self, "revisions", _pins(self.revisions))
        try:
            Subset(self.sample, self.limit, self.seed)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def subset(self) -> Subset:
        """The part of the selection kept (``--sample`` or ``--limit``)."""
        return Subset(self.sample, self.limit, self.seed)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain JSON-ready data."""
        return dataclasses.asdict(self)


def _pins(value: Any) -> tuple[tuple[str, str], ...]:
    """``--revision REPO=REV`` flags, a TOML table or pairs, as sorted (repo, rev) pairs."""
    if isinstance(value, Mapping):
        value = value.items()
    pairs = []
    for item in value:
        if isinstance(item, str):
            repo, sep, revision = item.partition("=")
            if not sep or not repo or not revision:
                raise ConfigError(f"--revision: {item!r} is not REPO=REVISION")
            item = (repo, revision)
        repo, revision = item
        if not isinstance(repo, str) or not isinstance(revision, str):
            raise ConfigError(f"revisions: {item!r} is not a repository and a revision")
        repo, revision = repo.strip(), revision.strip()
        if not REPO_NAME.match(repo) or ".." in repo:
            raise ConfigError(f"--revision: {repo!r} is not a repository (owner/name)")
        if not is_revision(revision):
            raise ConfigError(f"--revision {repo}: {revision!r} is not a branch, tag or commit")
        pairs.append((repo, revision))
    return tuple(sorted(pairs))


_NESTED = {"image": ImagePolicy, "caption": CaptionSpec, "buckets": BucketSpec}
# Options by their flag names (dashes as underscores): a TOML file may use these names at
# its top level, as on the command line (``rating = "e,q,s"``, ``shard-size = 500``).
FLAG_OPTIONS: dict[str, tuple[str | None, str]] = {
    "dataset": (None, "dataset"), "rating": (None, "ratings"), "query": (None, "query"),
    "include_deleted": (None, "include_deleted"), "shard_size": (None, "shard_size"),
    "tag_table": (None, "tag_table"), "revision": (None, "revisions"),
    "sample": (None, "sample"), "limit": (None, "limit"), "seed": (None, "seed"),
    "drop_duplicates": (None, "drop_duplicates"),
    "max_pixels": ("image", "max_pixels"), "max_source_pixels": ("image", "max_source_pixels"),
    "quality": ("image", "quality"), "method": ("image", "method"),
    "lossless": ("image", "lossless"), "keep_alpha": ("image", "keep_alpha"),
    "verify": ("image", "verify"), "background": ("image", "background"),
    "image_backend": ("image", "backend"), "pass_through": ("image", "pass_through"),
    "separator": ("caption", "separator"), "merge": ("caption", "merge"),
    "nl_captions": ("caption", "nl_captions"), "order": ("caption", "order"),
    "max_tags": ("caption", "max_tags"), "rating_tag": ("caption", "rating_tag"),
    "quality_tag": ("caption", "quality_tag"), "date_tag": ("caption", "date_tag"),
    "people_first": ("caption", "people_first"), "extras_first": ("caption", "extras_first"),
    "keep_tokens_separator": ("caption", "keep_tokens_separator"),
    "escape_parentheses": ("caption", "escape_parentheses"),
    "blacklist": ("caption", "blacklist"), "meta_filter": ("caption", "meta_filter"),
    "aliases": ("caption", "aliases"),
    "max_tokens": ("caption", "max_tokens"), "token_priority": ("caption", "token_priority"),
    "prune_implied": ("caption", "prune_implied"), "implications": ("caption", "implications"),
    "nl_position": ("caption", "nl_position"), "variants": ("caption", "variants"),
    "variant_lines": ("caption", "variant_lines"),
    "bucket_resolution": ("buckets", "resolution"), "bucket_min": ("buckets", "min_side"),
    "bucket_max": ("buckets", "max_side"), "bucket_step": ("buckets", "step"),
}  # fmt: skip


def _check_types(cls: type, values: dict[str, Any], where: str) -> None:
    """Refuse values of the wrong type for the plain fields of ``cls`` (a TOML
    ``include_deleted = "false"`` is a string, not false; ``shard_size = 1.5`` no count)."""
    problem = type_error(cls, values)
    if problem is not None:
        raise ConfigError(f"{where}: {problem}")


def _build(cls: type[C], values: dict[str, Any], where: str) -> C:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        names = known | (set(FLAG_OPTIONS) if cls is PullConfig else set())
        near = difflib.get_close_matches(unknown[0], sorted(names), n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"{where}: unknown option(s) {unknown}{hint} (known: "
                          f"{', '.join(sorted(names))})")  # fmt: skip
    _check_types(cls, values, where)
    variants = values.get("variants") if cls is CaptionSpec else None
    if isinstance(variants, dict):  # each variant's options, as the spec's own are checked
        for name, overrides in variants.items():
            if isinstance(overrides, dict):
                _check_types(cls, overrides, f"{where} variants.{name}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**converted)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _by_option(values: dict[str, Any]) -> dict[str, Any]:
    """Keys as option names: dashes to underscores, flag names to their tables."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name in _NESTED and isinstance(value, dict):
            table = out.setdefault(name, {})
            table.update({str(k).replace("-", "_"): v for k, v in value.items()})
            continue
        table, option = FLAG_OPTIONS.get(name, (None, name))
        if table is None:
            out[option] = value
        else:
            out.setdefault(table, {})[option] = value
    return out


def make_config(values: dict[str, Any], where: str = "config") -> PullConfig:
    """A :class:`PullConfig` from a flat-or-nested mapping (TOML file merged with flags).

    Keys are option names (``ratings``, ``shard_size``, ``[image] quality``) or flag
    names (``rating``, ``shard-size``, ``quality``)."""
    values = _by_option(values)
    for name in _NESTED:
        if not isinstance(values.get(name) or {}, dict):
            raise ConfigError(f"{where}: {name} must be a table ([{name}] with its options), "
                              f"not {values[name]!r}")  # fmt: skip
    nested: dict[str, object] = {
        name: _build(cls, dict(values.pop(name, {}) or {}), f"{where} [{name}]")
        for name, cls in _NESTED.items()
    }
    if "ratings" in values:
        ratings = values["ratings"]
        listed = isinstance(ratings, list | tuple) and all(isinstance(r, str) for r in ratings)
        if not (ratings is None or isinstance(ratings, str) or listed):
            raise ConfigError(f"{where}: rating must be text such as \"e,q,s\" or a list of "
                              f"ratings, not {ratings!r}")  # fmt: skip
        values["ratings"] = parse_ratings(ratings)
    config = _build(PullConfig, {**values, **nested}, where)
    _check_nl_merges(config.caption, where)
    return config


def _check_nl_merges(spec: CaptionSpec, where: str) -> None:
    """Refuse a caption (or variant) that merges natural-language captions when no file of
    them is given: every such caption would be the tags, without a word."""
    if spec.nl_captions:
        return
    for name in spec.variant_names or ("default",):
        merge = spec.variant(name).merge
        if merge not in (None, "tags"):
            whose = "" if name == "default" else f"variant {name}: "
            raise ConfigError(f"{where} [caption]: {whose}merge {merge!r} merges natural-language "
                              "captions, and none are given: add --nl-captions FILE (.jsonl or "
                              ".parquet), or merge 'tags'")  # fmt: skip


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A TOML config file as a mapping; errors name the file."""
    try:
        data: dict[str, Any] = tomlfile.loads(Path(path).read_text(encoding="utf-8"))
        return data
    except (OSError, UnicodeDecodeError, tomlfile.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` on top of ``base``, one level deep for the nested tables."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in overrides.items():
        if isinstance(value, dict):
            out.setdefault(key, {}).update(value)
        else:
            out[key] = value
    return out
