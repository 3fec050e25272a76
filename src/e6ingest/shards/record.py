"""The JSON record of one sample (``{key}.json``): what a run writes beside each image.

Typed dictionaries, not classes: the record is written as JSON as it is (keys sorted), and
read back by trainers as plain JSON; these types say which keys a writer must fill."""

from __future__ import annotations

from typing import TypedDict


class CaptionRecord(TypedDict):
    """The caption as ``{key}.txt`` holds it, its tag part and its natural-language texts."""

    text: str
    tags: str
    nl: list[str]


class LatentRecord(TypedDict):
    """What sd-scripts' latent cache records for the image in its bucket: the size it is
    read at, the size it is resized to before the center crop, and that crop."""

    original_size: list[int]
    resized_size: list[int]
    crop_ltrb: list[float]


class _SampleRecord(TypedDict):
    id: int
    site: str
    key: str
    rating: str
    score: int | None
    created_at: str | None  # ISO 8601
    tags: dict[str, list[str]]  # every category, empty ones too
    caption: CaptionRecord
    source_format: str
    original_size: list[int]
    size: list[int]
    # The LAION / img2dataset names, read by diffusers' webdataset scripts.
    width: int
    height: int
    original_width: int
    original_height: int
    reencoded: bool
    bucket: list[int]
    latent: LatentRecord


class SampleRecord(_SampleRecord, total=False):
    """One sample's ``{key}.json``; ``captions``: every variant's caption by name,
    ``default`` first, when the run has variants."""

    captions: dict[str, str]
