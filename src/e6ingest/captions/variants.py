"""Caption variants: several captions of one post, of graded length, from one spec.

A model trained only on long tag captions breaks on the short prompts people type; a
trainer that picks one of several captions per epoch learns both. ``CaptionSpec.variants``
names them (presets ``short``, ``medium``, ``full``, ``brief``, ``nl``, ``tags+nl``, or
overrides of the spec's options); each is built by the same rules as the caption itself,
and the caption is the variant ``default``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import polars as pl

from e6ingest.captions.build import CaptionJob, build_many, caption_rarity
from e6ingest.captions.extras import Thresholds, score_counts, score_thresholds
from e6ingest.captions.files import read_nl_captions
from e6ingest.captions.session import Captioning
from e6ingest.captions.spec import DEFAULT_VARIANT, CaptionSpec

VARIANTS_COLUMN = "caption_variants"
LINES_COLUMN = "caption_lines"  # with variant_lines: what {key}.txt holds


class NLTextsBySpec:
    """The NL texts of some posts for each spec's ``nl_fields``, read once per field list."""

    def __init__(self, ids: pl.Series):
        self.ids = ids
        self._read: dict[tuple[object, ...], pl.DataFrame | None] = {}

    def __call__(self, spec: CaptionSpec) -> pl.DataFrame | None:
        if not spec.nl_captions:
            return None
        key = (spec.nl_captions, spec.nl_fields, spec.nl_finished)
        if key not in self._read:
            self._read[key] = read_nl_captions(spec, self.ids)
        return self._read[key]


def posts_per_batch(captions: int, spec: CaptionSpec) -> int:
    """Posts captioned at once so that a batch holds about ``captions`` captions: with
    variants every post has several, and a batch of as many posts would hold that many
    times the memory."""
    return max(1, captions // len(spec.variant_names or (DEFAULT_VARIANT,)))


def variant_thresholds(
    frame: pl.DataFrame | pl.LazyFrame, spec: CaptionSpec
) -> dict[str, dict[str, list[float | None]]]:
    """Per variant (``default`` too) with quality tags, its score thresholds over ``frame``."""
    specs = {name: spec.variant(name) for name in spec.variant_names or (DEFAULT_VARIANT,)}
    specs = {name: s for name, s in specs.items() if s.quality_tag}
    counts = score_counts(frame) if specs else None
    return {name: score_thresholds(frame, s, counts) for name, s in specs.items()}


def _by_rarity(spec: CaptionSpec) -> bool:
    """Whether ``spec``'s token budget keeps tags by how many posts of the dataset they
    are on (``rare`` or ``common``)."""
    return bool(spec.max_tokens) and spec.token_priority != "order"


def ranks_by_rarity(spec: CaptionSpec) -> bool:
    """Whether ``spec`` or one of its variants keeps tags by rarity under a budget."""
    return any(_by_rarity(spec.variant(n)) for n in spec.variant_names or (DEFAULT_VARIANT,))


def variant_rarity(vocabulary: pl.DataFrame, spec: CaptionSpec) -> dict[str, pl.DataFrame]:
    """Per variant (``default`` too) whose budget keeps tags by rarity: ``tag`` as that
    variant writes it and its ``posts`` (:func:`caption_rarity` of ``vocabulary``, the
    dataset's ``tag``, ``posts``), one table for the variants that write tags alike."""
    tables: dict[tuple[bool, bool], pl.DataFrame] = {}
    out = {}
    for name in spec.variant_names or (DEFAULT_VARIANT,):
        variant = spec.variant(name)
        if _by_rarity(variant):
            writing = (variant.underscores_to_spaces, variant.escape_parentheses)
            if writing not in tables:
                tables[writing] = caption_rarity(vocabulary, variant)
            out[name] = tables[writing]
    return out


def with_variants(
    frame: pl.DataFrame,
    spec: CaptionSpec,
    nl_of: Callable[[CaptionSpec], pl.DataFrame | None],
    thresholds: Mapping[str, Thresholds] | None = None,
    captioning: Captioning | None = None,
    rarity: Mapping[str, pl.DataFrame] | None = None,
    **context: Any,
) -> pl.DataFrame:
    """``frame`` with its captions (``build_captions``) and, when ``spec`` has variants,
    ``caption_variants``: a struct of every variant's caption by name, ``default`` first.
    ``nl_of(spec)`` gives a spec's NL texts; ``thresholds`` and ``rarity``: each variant's
    quality thresholds and tag rarity by name (from :func:`variant_thresholds` and
    :func:`variant_rarity`); ``context``: aliases, implied, as ``build_captions`` takes
    them; ``captioning``: the caches and threads they share (this call's own when None)."""
    if captioning is None:
        with Captioning() as own:
            return with_variants(frame, spec, nl_of, thresholds, own, rarity, **context)
    thresholds, rarity = thresholds or {}, rarity or {}
    names = spec.variant_names or (DEFAULT_VARIANT,)
    specs = [spec.variant(name) for name in names]
    jobs = [CaptionJob(s, nl_of(s), thresholds.get(name), () if i == 0 else ("caption",),
                       rarity.get(name))
            for i, (name, s) in enumerate(zip(names, specs, strict=True))]  # fmt: skip
    built = build_many(frame, jobs, captioning=captioning, **context)
    out = built[0]
    if not spec.variants:
        return out
    columns = [b["caption"].alias(name) for name, b in zip(names, built, strict=True)]
    out = out.with_columns(pl.struct(columns).alias(VARIANTS_COLUMN))
    if spec.variant_lines:
        names = spec.variant_names
        lines = [variant_lines(row, names) for row in out[VARIANTS_COLUMN].to_list()]
        out = out.with_columns(pl.Series(LINES_COLUMN, lines, pl.String))
    return out


def variant_lines(captions: dict[str, str], names: Sequence[str]) -> str:
    """The variants as one text, a line each, the caption (``default``) first (a variant of
    several lines, as ``alternatives`` writes them, gives each); a line equal to an earlier
    one, or empty, is left out."""
    lines = [line for name in names for line in (captions.get(name) or "").split("\n")]
    return "\n".join(dict.fromkeys(line for line in lines if line))
