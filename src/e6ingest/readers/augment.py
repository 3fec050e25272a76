"""Which caption a sample trains on in an epoch, for trainers that do not choose themselves:
one of the output's caption variants, drawn by weight, and the augmentations sd-scripts
offers (tags shuffled after a fixed head, tag dropout). Every draw is seeded by the seed,
the epoch and the sample's key, so it is the same on every rank, worker and rerun."""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from e6ingest.core import check_plain_fields


@dataclass(frozen=True)
class CaptionChoice:
    """How a sample's caption is chosen and varied (docs/TRAINERS.md).

    ``weights``: variant name -> weight (``default`` is the caption itself); none: the
    caption of ``{key}.txt``. ``shuffle_tags``: the tags after the fixed head (up to the
    keep-tokens separator, else the first ``keep_tokens`` tags) in a random order;
    ``tag_dropout``: each of those tags left out with this probability."""

    weights: tuple[tuple[str, float], ...] = ()
    shuffle_tags: bool = False
    tag_dropout: float = 0.0
    keep_tokens: int = 0
    separator: str = ", "
    keep_tokens_separator: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        check_plain_fields(self)
        if isinstance(self.weights, Mapping):
            object.__setattr__(self, "weights", tuple(self.weights.items()))
        for name, weight in self.weights:
            if not isinstance(weight, numbers.Real) or isinstance(weight, bool):
                raise ValueError(f"variant_weights[{name!r}] must be a number, not {weight!r}")
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"variant_weights[{name!r}] must be 0 or more, not {weight}")
        if self.weights and not self.total:
            raise ValueError("variant_weights must not all be 0")
        if not 0.0 <= self.tag_dropout < 1.0:
            raise ValueError(f"tag_dropout must be within 0..1, not {self.tag_dropout}")
        if self.keep_tokens < 0:
            raise ValueError(f"keep_tokens must be 0 or more, not {self.keep_tokens}")

    @property
    def total(self) -> float:
        """The sum of the weights."""
        return sum(w for _, w in self.weights)

    @property
    def active(self) -> bool:
        """Whether it changes anything."""
        return bool(self.weights) or self.shuffle_tags or self.tag_dropout > 0

    def check(self, variants: list[str]) -> None:
        """Refuse weights naming variants an output does not have."""
        missing = [n for n, _ in self.weights if n not in variants and n != "default"]
        if missing:
            have = ", ".join(variants) or "none but default"
            raise ValueError(f"variant_weights names {missing}, which this output does not have "
                             f"(its variants: {have})")  # fmt: skip

    def caption(
        self, key: str, epoch: int, meta: Mapping[str, Any], text: str
    ) -> tuple[str, str | None]:
        """The caption sample ``key`` trains on in ``epoch`` and the variant it is (None
        without weights); ``text``: its ``{key}.txt``, ``meta``: its ``{key}.json``."""
        rng = random.Random(f"{self.seed}:{epoch}:{key}")
        name = None
        if self.weights:
            captions = dict(meta.get("captions") or {})
            captions.setdefault("default", (meta.get("caption") or {}).get("text", text))
            names = [n for n, _ in self.weights]
            name = rng.choices(names, weights=[w for _, w in self.weights])[0]
            text = captions.get(name, text)
        if self.shuffle_tags or self.tag_dropout:
            text = "\n".join(self._varied(line, rng) for line in text.split("\n"))
        return text, name

    def _varied(self, text: str, rng: random.Random) -> str:
        """One line with its tags after the head shuffled and dropped out."""
        sep, mark = self.separator, self.keep_tokens_separator
        fixed = ""
        if mark and f" {mark} " in f" {text} ":
            fixed, _, text = text.partition(mark)
            fixed = fixed.strip()
        tags = [t for t in text.split(sep.strip() or sep) if t.strip()]
        tags = [t.strip() for t in tags]
        head, rest = ([], tags) if fixed else (tags[: self.keep_tokens], tags[self.keep_tokens :])
        if self.tag_dropout:
            rest = [t for t in rest if rng.random() >= self.tag_dropout]
        if self.shuffle_tags:
            rng.shuffle(rest)
        body = sep.join(head + rest)
        return f"{fixed} {mark} {body}".strip() if fixed else body
