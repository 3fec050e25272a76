"""Captions: tag sets merged by category, natural-language text, trainer conventions.

``CaptionSpec`` says what a caption is; ``caption_frame`` builds the captions of a whole
selection at once (reading the spec's natural-language and aliases files).
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from e6ingest.captions.build import build_captions, caption_rarity
from e6ingest.captions.codes import glob_regex
from e6ingest.captions.extras import score_thresholds
from e6ingest.captions.files import CaptionInputError, read_aliases, read_nl_captions
from e6ingest.captions.implications import read_implications
from e6ingest.captions.session import Captioning
from e6ingest.captions.spec import DEFAULT_ORDER, MERGE_MODES, CaptionSpec
from e6ingest.captions.variants import (
    NLTextsBySpec,
    ranks_by_rarity,
    variant_rarity,
    variant_thresholds,
    with_variants,
)

__all__ = [
    "DEFAULT_ORDER",
    "MERGE_MODES",
    "CaptionInputError",
    "CaptionSelection",
    "CaptionSpec",
    "build_captions",
    "caption_frame",
    "caption_rarity",
    "glob_regex",
    "ranks_by_rarity",
    "read_aliases",
    "read_implications",
    "read_nl_captions",
    "score_thresholds",
    "variant_rarity",
]


def caption_frame(
    frame: pl.DataFrame,
    spec: CaptionSpec,
    rarity: Mapping[str, pl.DataFrame] | None = None,
    implied: pl.DataFrame | None = None,
    selection: CaptionSelection | None = None,
) -> pl.DataFrame:
    """``frame`` (a selection of canonical posts) with its captions, per ``spec`` (and its
    variants, in ``caption_variants``, when the spec has some).

    Reads the spec's natural-language captions (for these posts only), aliases and
    implications files (``implied`` when given instead); quality percentiles are taken over
    ``frame``, or over the whole ``selection`` that ``frame`` is a batch of (whose NL texts
    and rules it then shares). ``rarity`` (per variant, from :func:`variant_rarity`) orders
    what a token budget keeps.
    """
    aliases = read_aliases(spec.aliases) if spec.aliases else None
    if implied is None and spec.prune_implied and spec.implications:
        implied = read_implications(spec.implications)
    if selection is None:
        return with_variants(frame, spec, NLTextsBySpec(frame["id"]),
                             variant_thresholds(frame, spec), aliases=aliases, rarity=rarity,
                             implied=implied)  # fmt: skip
    return with_variants(frame, spec, selection.nl, selection.thresholds, selection.captioning,
                         aliases=aliases, rarity=rarity, implied=implied)  # fmt: skip


class CaptionSelection:
    """What the batches of one selection share when captioned one after the other: the
    quality percentiles over all of it, its NL texts (read once) and the captioning caches
    and threads. A context manager: its threads stop at the end."""

    def __init__(self, posts: pl.LazyFrame, spec: CaptionSpec):
        self.thresholds = variant_thresholds(posts.select("rating", "score"), spec)
        self.nl = NLTextsBySpec(posts.select("id").collect()["id"])
        self.captioning = Captioning()

    def __enter__(self) -> CaptionSelection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.captioning.close()
