"""Captions as text: the tag part (with the keep-tokens separator) and the merge of tags and
natural-language text, from a frame's ``_fixed`` and ``_rest`` (the tags before and after
the keep-tokens separator, joined; ``_fixed`` holds them all without one) and
``caption_nl`` columns."""

from __future__ import annotations

import polars as pl

from e6ingest.captions.spec import CaptionSpec


def tags_text(spec: CaptionSpec, fixed: pl.Expr, rest: pl.Expr | None,
              nl: pl.Expr | None = None) -> pl.Expr:  # fmt: skip
    """The tag part as text; with ``nl`` (``nl_position = "head"``), the NL text goes at the
    end of the fixed head (before the keep-tokens separator), else first."""
    if not spec.keep_tokens_separator or rest is None:
        if nl is None:
            return fixed
        return pl.concat_str(nl, pl.lit(spec.separator), fixed).str.strip_chars(" ,")
    if nl is not None:
        fixed = pl.when(nl != "").then(
            pl.concat_str(fixed, pl.lit(spec.separator), nl).str.strip_chars(" ,")
        ).otherwise(fixed)  # fmt: skip
    line = pl.concat_str(fixed, pl.lit(f" {spec.keep_tokens_separator} "), rest)
    return (
        pl.when((fixed != "") | (rest != "")).then(line.str.strip_chars(" ")).otherwise(pl.lit(""))
    )


def merged(spec: CaptionSpec, tags: pl.Expr, nl: pl.Expr) -> pl.Expr:
    has_nl = nl.list.len() > 0
    mode = spec.merge_mode
    if mode == "tags":
        return tags
    if mode == "nl":
        return pl.when(has_nl).then(nl.list.join(" ")).otherwise(tags)
    if mode == "tags+nl":  # either alone when the other is empty
        text = nl.list.join(" ")
        return pl.concat_str(pl.when(tags != "").then(tags), pl.when(text != "").then(text),
                             separator=spec.separator, ignore_nulls=True)  # fmt: skip
    lines = pl.concat_list([tags, nl]).list.filter(pl.element() != "")
    return lines.list.join("\n")  # alternatives: one line each, empty ones left out


def nl_in_head(spec: CaptionSpec) -> bool:
    """Whether the NL text goes into the fixed head of the line (``nl_position = "head"``)."""
    return spec.merge_mode == "tags+nl" and spec.nl_position == "head"


def render(frame: pl.DataFrame, spec: CaptionSpec) -> pl.DataFrame:
    """``frame`` with ``caption_tags`` (the tag part) and ``caption`` (what a trainer reads)."""
    fixed, nl = pl.col("_fixed"), pl.col("caption_nl")
    rest = pl.col("_rest") if spec.keep_tokens_separator else None
    frame = frame.with_columns(tags_text(spec, fixed, rest).alias("caption_tags"))
    if nl_in_head(spec):
        with_nl = tags_text(spec, fixed, rest, nl.list.join(" "))
        caption = pl.when(nl.list.len() > 0).then(with_nl).otherwise(pl.col("caption_tags"))
    else:
        caption = merged(spec, pl.col("caption_tags"), nl)
    return frame.with_columns(caption.alias("caption"))
