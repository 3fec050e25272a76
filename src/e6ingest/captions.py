"""Captions: one post's tags by category merged into the caption a trainer reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_ORDER = {
    "danbooru": ("artist", "character", "copyright", "general", "meta"),
    "e621": ("artist", "copyright", "character", "species", "general", "lore", "meta"),
}
# Tags this short are emoticons whose underscores are part of the tag: ^_^, >_<, o_o.
EMOTICON_MAX_LEN = 3


@dataclass(frozen=True)
class CaptionSpec:
    """How tags become a caption. ``order=None`` takes the site's default order."""

    order: tuple[str, ...] | None = None
    underscores_to_spaces: bool = True
    separator: str = ", "

    def categories(self, site: str) -> tuple[str, ...]:
        """The categories included, in caption order, for ``site``."""
        if self.order is not None:
            return self.order
        return DEFAULT_ORDER.get(site, DEFAULT_ORDER["danbooru"])


def rewrite_tag(tag: str, spec: CaptionSpec) -> str:
    """One tag as it appears in a caption (``long_hair`` -> ``long hair``, ``^_^`` kept)."""
    if spec.underscores_to_spaces and len(tag) > EMOTICON_MAX_LEN:
        return tag.replace("_", " ")
    return tag


def build_tags(site: str, tags: Mapping[str, Sequence[str]], spec: CaptionSpec) -> str:
    """The tag part of a caption: categories in order, tags rewritten, no repeats."""
    seen: set[str] = set()
    out: list[str] = []
    for category in spec.categories(site):
        for tag in tags.get(category, ()):
            text = rewrite_tag(tag, spec)
            if text not in seen:
                seen.add(text)
                out.append(text)
    return spec.separator.join(out)
