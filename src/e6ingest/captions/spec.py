"""The caption spec: one declarative description of how a post's tags and texts become the
caption a trainer reads, the same for every dataset, with per-site defaults."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar, cast

from e6ingest.core import check_plain_fields

DEFAULT_ORDER = {
    "danbooru": ("artist", "character", "copyright", "general", "meta"),
    "e621": ("artist", "copyright", "character", "species", "general", "lore", "meta"),
}
CATEGORIES = frozenset(
    {"artist", "character", "copyright", "general", "meta", "species", "lore", "invalid"}
)
DEFAULT_RATING_NAMES = {
    "danbooru": {"g": "safe", "s": "sensitive", "q": "nsfw", "e": "explicit"},
    "e621": {"s": "safe", "q": "nsfw", "e": "explicit"},
}
# Tags that only describe the upload, never the picture (glob patterns on the raw tag).
DEFAULT_META_FILTER = (
    "*commentary*", "bad_id", "bad_*_id", "bad_link", "*_request", "tagme", "check_*",
    "md5_mismatch", "duplicate", "translated", "partially_translated", "hard_translated",
    "*_sample", "resized", "reupload", "image_sample", "third-party_edit",
)  # fmt: skip
# Score percentile (within the post's rating, over the selection) each quality tag starts at.
DEFAULT_QUALITY_TIERS = (
    ("masterpiece", 0.95), ("best quality", 0.85), ("good quality", 0.60),
    ("normal quality", 0.30), ("worst quality", 0.0),
)  # fmt: skip
# First year of each period tag.
DEFAULT_PERIODS = (
    ("oldest", 0),
    ("early", 2011),
    ("mid", 2015),
    ("recent", 2019),
    ("newest", 2022),
)
MERGE_MODES = ("tags", "nl", "tags+nl", "alternatives")
DATE_TAGS = ("none", "year", "period")
TOKEN_PRIORITIES = ("rare", "common", "order")  # which general tags a token budget keeps first
# Tags that say what the subject is (sex, body type): on most posts, so a budget keeping the
# rarest tags first would drop them first, yet nearly every prompt names them. A budget keeps
# them with the head, as it keeps the species category's tags.
DEFAULT_SUBJECT_TAGS = (
    "male", "female", "intersex", "ambiguous_gender", "andromorph", "gynomorph", "herm",
    "maleherm", "anthro", "feral", "humanoid", "human", "taur", "semi-anthro",
)  # fmt: skip
NL_POSITIONS = ("end", "head")
# Caption variants: named overrides of the spec, written beside the caption (docs/CAPTIONS.md).
VARIANT_PRESETS: dict[str, dict[str, object]] = {
    "short": {"max_tokens": 20, "merge": "tags", "people_first": True},  # people count first
    "medium": {"max_tokens": 75, "merge": "tags"},
    "full": {"max_tokens": 225, "merge": "tags"},
    "brief": {"merge": "nl", "nl_fields": ("brief_summary",), "max_tokens": 75},
    "nl": {"merge": "nl", "nl_fields": ("regular_summary",), "max_tokens": 225},
    "tags+nl": {"merge": "tags+nl", "max_tokens": 225},
}
# --variants standard; with NL captions also brief and tags+nl.
STANDARD_VARIANTS = ("short", "medium", "full")
VARIANT_NAME = re.compile(r"^[a-z][a-z0-9_+-]{0,31}$")
MOST_TOKENS = 1_000_000  # a budget far past any text encoder's window
DEFAULT_VARIANT = "default"  # the spec's own caption ({key}.txt), among the variants by name
T = TypeVar("T")
# Options a variant cannot change: they read files or shape the variants themselves.
NOT_PER_VARIANT = frozenset({"variants", "variant_lines", "nl_captions", "aliases",
                             "implications", "prune_implied", "nl_finished"})  # fmt: skip


def _frozen(value: object) -> object:
    """TOML values (lists) as hashable ones (tuples)."""
    return tuple(value) if isinstance(value, list) else value


def _variant_table(value: Any, has_nl: bool) -> list[tuple[str, dict[str, object]]]:
    """``variants`` as written (a comma list of preset names or ``standard``, a list of
    names, or a table of name -> overrides or ``true``) as (name, overrides) pairs."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, Mapping | list | tuple):
        raise ValueError(f"variants must be preset names (\"short,medium\" or a list) or a "
                         f"table of variants, not {value!r}")  # fmt: skip
    if isinstance(value, Mapping):
        items = list(value.items())
    else:
        names = []
        for name in value:
            if not isinstance(name, str):
                raise ValueError(f"variants: {name!r} is not a variant name")
            if name == "standard":
                names += [*STANDARD_VARIANTS, *(("brief", "tags+nl") if has_nl else ())]
            else:
                names.append(name)
        items = [(name, True) for name in dict.fromkeys(names)]
    table = []
    for name, overrides in items:
        if overrides is True and name not in VARIANT_PRESETS:
            raise ValueError(f"variants: {name!r} is no preset ({', '.join(VARIANT_PRESETS)}); "
                             "give its options as a table")  # fmt: skip
        if not isinstance(overrides, Mapping) and overrides is not True:
            raise ValueError(f"variants: {name} must be a table of caption options or true")
        base = dict(VARIANT_PRESETS.get(name, {}))
        given = dict(overrides) if isinstance(overrides, Mapping) else {}
        table.append((name, {**base, **{k: _frozen(v) for k, v in given.items()}}))
    return table


def _pairs(value: Any, kind: Callable[[Any], T]) -> tuple[tuple[str, T], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple((str(k), kind(v)) for k, v in items)


# Options that list raw tags (or glob patterns of them), matched against the tags as the
# metadata has them.
RAW_TAG_LISTS = ("blacklist", "meta_filter", "subject_tags")


def raw_tag(text: str) -> str:
    """A tag as a user may write it (as a caption shows it: ``Absurd res``) in its raw form
    (``absurd_res``): the sites' tags are lower case and never hold a space."""
    return "_".join(text.strip().lower().split())


@dataclass(frozen=True)
class CaptionSpec:
    """How one post's tags (by category) and natural-language texts become its caption.

    Fields left at ``None`` or empty take the site's default (``order``, ``rating_names``).
    Mappings in a TOML file (``[caption.rating_names]``) are accepted and kept as pairs.
    """

    order: tuple[str, ...] | None = None  # categories included, in caption order
    underscores_to_spaces: bool = True  # long_hair -> long hair; emoticons such as ^_^ kept
    escape_parentheses: bool = False  # to_heart_(series) -> to heart \(series\)
    blacklist: tuple[str, ...] = ()  # raw tags or glob patterns dropped
    meta_filter: tuple[str, ...] = DEFAULT_META_FILTER  # upload-only tags dropped
    aliases: str = ""  # file of "old,new" lines (CSV/TSV) or a JSON/TOML mapping
    dedupe: bool = True
    max_tags: int = 0  # 0: no limit
    people_first: bool = False  # 1girl, 2boys, solo, duo... at the very front
    rating_tag: bool = False
    rating_names: tuple[tuple[str, str], ...] | Mapping[str, str] = ()
    quality_tag: bool = False
    quality_tiers: tuple[tuple[str, float], ...] | Mapping[str, float] = DEFAULT_QUALITY_TIERS
    date_tag: str = "none"  # none, year ("year 2021") or period ("recent")
    periods: tuple[tuple[str, int], ...] | Mapping[str, int] = DEFAULT_PERIODS
    extras_first: bool = False  # rating/quality/date tags before the category tags
    separator: str = ", "
    keep_tokens_separator: str = ""  # e.g. "|||": fixed head, then the shufflable rest
    fixed_categories: tuple[str, ...] = ("artist", "character", "copyright")
    nl_captions: tuple[str, ...] = ()  # JSONL or parquet files with natural-language captions
    nl_fields: tuple[str, ...] = ("regular_summary", "brief_summary")
    nl_finished: str = "STOP"  # required response_finish_reason; "" takes every row
    merge: str | None = None  # tags, nl, tags+nl, alternatives; None: tags+nl with NL files
    nl_position: str = "end"  # tags+nl: NL after the tags, or "head": before the separator
    max_tokens: int = 0  # 0: no budget; else every caption fits this many CLIP tokens
    token_priority: str = "rare"  # general tags kept first under a budget: rare, common, order
    subject_tags: tuple[str, ...] = DEFAULT_SUBJECT_TAGS  # a budget keeps them with the head
    subject_categories: tuple[str, ...] = ("species",)  # ... and these categories' tags
    prune_implied: bool = False  # drop a tag another tag of the post implies
    implications: str = ""  # tag implications file (default: the dataset's, if it has one)
    # Named variants: overrides of these options, each a caption of its own beside this one
    # (``standard``, preset names, or a table); ``variant_lines``: {key}.txt holds them all.
    variants: (
        tuple[tuple[str, tuple[tuple[str, object], ...]], ...] | Mapping[str, object] | str
    ) = ()
    variant_lines: bool = False

    def __post_init__(self) -> None:
        check_plain_fields(self)
        set_ = object.__setattr__
        set_(self, "rating_names", _pairs(self.rating_names, str))
        set_(self, "quality_tiers", tuple(sorted(_pairs(self.quality_tiers, float),
                                                 key=lambda t: -t[1])))  # fmt: skip
        set_(self, "periods", tuple(sorted(_pairs(self.periods, int), key=lambda t: t[1])))
        for name in ("order", "blacklist", "meta_filter", "fixed_categories", "nl_captions",
                     "nl_fields", "subject_tags", "subject_categories"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, str):
                value = tuple(v.strip() for v in value.split(",") if v.strip())
            set_(self, name, None if value is None else tuple(value))
        for name in RAW_TAG_LISTS:  # as the caption shows a tag, or its raw form
            raw = (raw_tag(t) for t in getattr(self, name))
            set_(self, name, tuple(dict.fromkeys(t for t in raw if t)))
        unknown = sorted((set(self.order or ()) | set(self.subject_categories)) - CATEGORIES)
        if unknown:
            raise ValueError(f"order: unknown categories {unknown} (known: {sorted(CATEGORIES)})")
        if self.merge is not None and self.merge not in MERGE_MODES:
            raise ValueError(f"merge must be one of {MERGE_MODES}, not {self.merge!r}")
        if self.date_tag not in DATE_TAGS:
            raise ValueError(f"date_tag must be one of {DATE_TAGS}, not {self.date_tag!r}")
        if self.max_tags < 0:
            raise ValueError(f"max_tags must be 0 (no limit) or more, not {self.max_tags}")
        if not all(0.0 <= p <= 1.0 for _, p in self.tier_pairs):
            raise ValueError("quality_tiers: each percentile must be within 0..1")
        if not self.nl_fields:
            raise ValueError("nl_fields: name at least one field")
        if self.max_tokens < 0 or 0 < self.max_tokens < 8 or self.max_tokens > MOST_TOKENS:
            raise ValueError(f"max_tokens must be 0 (no budget) or within 8..{MOST_TOKENS:,}, "
                             f"not {self.max_tokens:,}")  # fmt: skip
        if self.token_priority not in TOKEN_PRIORITIES:
            raise ValueError(f"token_priority must be one of {TOKEN_PRIORITIES}")
        if self.nl_position not in NL_POSITIONS:
            raise ValueError(f"nl_position must be one of {NL_POSITIONS}")
        if not self.separator:
            raise ValueError("separator must not be empty: the tags would run together")
        self._check_one_line()
        self._normalise_variants()

    def _check_one_line(self) -> None:
        """Every text the spec writes into a caption is one line of printable text: a line
        break or control character in it would split the caption (a trainer reading a
        random line of ``{key}.txt`` would read a piece of it)."""
        texts = [("separator", self.separator)]
        texts += [("keep_tokens_separator", self.keep_tokens_separator)]
        texts += [(f"rating_names.{k}", v) for k, v in dict(self.rating_names).items()]
        texts += [("quality_tiers", k) for k, _ in self.tier_pairs]
        texts += [("periods", k) for k, _ in self.period_pairs]
        for name, text in texts:
            if any((c.isspace() and c != " ") or unicodedata.category(c) == "Cc" for c in text):
                raise ValueError(f"{name} must be one line of printable text, not {text!r}")

    def _normalise_variants(self) -> None:
        """``variants`` as (name, sorted override pairs), each checked by building its spec."""
        value = self.variants
        if (
            value
            and isinstance(value, tuple)
            and all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], tuple) for v in value)
        ):  # already normalised (a copy of a spec)
            value = {name: dict(pairs) for name, pairs in value}
        table = _variant_table(value or (), bool(self.nl_captions))
        out = []
        for name, overrides in table:
            if not VARIANT_NAME.match(name) or name == DEFAULT_VARIANT:
                raise ValueError(f"variants: {name!r} is not a variant name (lower case letters, "
                                 f"digits, _ + -; not {DEFAULT_VARIANT!r})")  # fmt: skip
            fixed = sorted(set(overrides) & NOT_PER_VARIANT)
            unknown = sorted(set(overrides) - {f.name for f in fields(self)})
            if fixed or unknown:
                raise ValueError(f"variants: {name} cannot set {fixed + unknown} (a variant "
                                 "changes the caption options of the spec)")  # fmt: skip
            out.append((name, tuple(sorted(overrides.items()))))
        object.__setattr__(self, "variants", tuple(out))
        for name, _ in out:
            try:
                self.variant(name)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"variants: {name}: {exc}") from None
        if self.variant_lines and not out:
            raise ValueError("variant_lines writes every variant on its own line: name variants")

    def variant(self, name: str) -> CaptionSpec:
        """The spec of variant ``name`` (this spec for ``default``)."""
        if name == DEFAULT_VARIANT:
            return self
        overrides = dict(self.variant_pairs)[name]
        return replace(self, **dict(overrides), variants=(), variant_lines=False)

    @property
    def tier_pairs(self) -> tuple[tuple[str, float], ...]:
        """``quality_tiers`` as ``__post_init__`` keeps them: (tag, percentile), best first."""
        return cast("tuple[tuple[str, float], ...]", self.quality_tiers)

    @property
    def period_pairs(self) -> tuple[tuple[str, int], ...]:
        """``periods`` as ``__post_init__`` keeps them: (tag, first year), oldest first."""
        return cast("tuple[tuple[str, int], ...]", self.periods)

    @property
    def variant_pairs(self) -> tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]:
        """``variants`` as ``__post_init__`` keeps them: (name, sorted override pairs)."""
        return cast("tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]", self.variants)

    @property
    def variant_names(self) -> tuple[str, ...]:
        """The variants' names, ``default`` first (empty without variants)."""
        return (DEFAULT_VARIANT, *(n for n, _ in self.variant_pairs)) if self.variants else ()

    def categories(self, site: str) -> tuple[str, ...]:
        """The categories included, in caption order, for ``site``."""
        if self.order is not None:
            return self.order
        return DEFAULT_ORDER.get(site, DEFAULT_ORDER["danbooru"])

    def ratings(self, site: str) -> dict[str, str]:
        """Rating letter -> rating tag for ``site``."""
        return dict(self.rating_names) or DEFAULT_RATING_NAMES.get(
            site, DEFAULT_RATING_NAMES["danbooru"]
        )

    @property
    def merge_mode(self) -> str:
        """The merge mode in effect: ``tags+nl`` when NL files are given and none is set."""
        if self.merge is not None:
            return self.merge
        return "tags+nl" if self.nl_captions else "tags"
