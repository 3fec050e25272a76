"""Captions: tag sets merged by category, natural-language text, trainer conventions.

``CaptionSpec`` says what a caption is; ``caption_frame`` builds the captions of a whole
selection at once (reading the spec's natural-language and aliases files).
"""

from __future__ import annotations

import polars as pl

from e6ingest.captions.build import build_captions, glob_regex, score_thresholds
from e6ingest.captions.files import CaptionInputError, read_aliases, read_nl_captions
from e6ingest.captions.spec import DEFAULT_ORDER, MERGE_MODES, CaptionSpec

__all__ = [
    "DEFAULT_ORDER",
    "MERGE_MODES",
    "CaptionInputError",
    "CaptionSpec",
    "build_captions",
    "caption_frame",
    "glob_regex",
    "read_aliases",
    "read_nl_captions",
    "score_thresholds",
]


def caption_frame(frame: pl.DataFrame, spec: CaptionSpec) -> pl.DataFrame:
    """``frame`` (a selection of canonical posts) with its captions, per ``spec``.

    Reads the spec's natural-language captions (for these posts only) and aliases file;
    quality percentiles are taken over ``frame``.
    """
    nl = read_nl_captions(spec, frame["id"]) if spec.nl_captions else None
    aliases = read_aliases(spec.aliases) if spec.aliases else None
    return build_captions(frame, spec, nl=nl, aliases=aliases)
