"""The dataset card ``OUT/README.md``: what Hugging Face ``datasets`` (and the Hub's viewer,
after an upload) read to open the output as a webdataset with declared features, and what a
person reads to know how it was made.

Without it, ``load_dataset(OUT)`` takes the folder for parquet (the plan, failures and shard
indexes outnumber the tars); with a card that declares no features, it infers the json
member from the first 5 samples and drops keys or fails on types that appear later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e6ingest.core import write_atomic
from e6ingest.metadata import TAG_CATEGORIES
from e6ingest.shards.layout import CARD_FILE, SHARDS_DIR, CardState, card_state, mark_card

if TYPE_CHECKING:
    from e6ingest.shards.manifest import OutputManifest

# The json member of a sample (docs/FORMAT.md), as datasets feature declarations.
JSON_FEATURES: list[tuple[str, object]] = [
    ("id", "int64"),
    ("site", "string"),
    ("key", "string"),
    ("rating", "string"),
    ("score", "int64"),
    ("created_at", "string"),
    ("tags", [(category, "sequence: string") for category in TAG_CATEGORIES]),
    ("caption", [("text", "string"), ("tags", "string"), ("nl", "sequence: string")]),
    ("source_format", "string"),
    ("original_size", "sequence: int64"),
    ("size", "sequence: int64"),
    ("bucket", "sequence: int64"),
    ("reencoded", "bool"),
    ("width", "int64"),
    ("height", "int64"),
    ("original_width", "int64"),
    ("original_height", "int64"),
    (
        "latent",
        [
            ("original_size", "sequence: int64"),
            ("resized_size", "sequence: int64"),
            ("crop_ltrb", "sequence: float64"),
        ],
    ),
]
SAMPLE_FEATURES: list[tuple[str, object]] = [
    ("__key__", "string"),
    ("__url__", "string"),
    ("webp", "image"),
    ("txt", "string"),
    ("json", JSON_FEATURES),
]


def _feature_yaml(features: list[tuple[str, object]], indent: int) -> list[str]:
    pad = " " * indent
    lines = []
    for name, kind in features:
        lines.append(f"{pad}- name: {name}")
        if isinstance(kind, list):
            lines.append(f"{pad}  struct:")
            lines += _feature_yaml(kind, indent + 2)
        elif str(kind).startswith("sequence: "):
            lines.append(f"{pad}  {kind}")
        else:
            lines.append(f"{pad}  dtype: {kind}")
    return lines


def variant_names(config: Mapping[str, Any]) -> list[str]:
    """The caption variants of a run's config (as its manifest holds it), ``default`` first;
    none without variants."""
    variants = (config.get("caption") or {}).get("variants") or []
    return ["default", *(name for name, _ in variants)] if variants else []


def sample_features(variants: Sequence[str] = ()) -> list[tuple[str, object]]:
    """The members of a sample as ``datasets`` features; ``captions`` (one string per
    variant) in the json when the run has caption variants."""
    json_features = list(JSON_FEATURES)
    if variants:
        json_features.insert(8, ("captions", [(name, "string") for name in variants]))
    return [(n, json_features if n == "json" else kind) for n, kind in SAMPLE_FEATURES]


def datasets_features(variants: Sequence[str] = ()) -> Any:
    """The members of a sample as a ``datasets.Features``, for
    ``load_dataset("webdataset", data_files=..., features=...)`` without the card."""
    import datasets

    def feature(kind: Any) -> Any:  # a datasets feature, or a dict of them
        if isinstance(kind, list):
            return {name: feature(k) for name, k in kind}
        if kind == "image":
            return datasets.Image()
        if kind.startswith("sequence: "):
            return datasets.Sequence(datasets.Value(kind.removeprefix("sequence: ")))
        return datasets.Value(kind)

    return datasets.Features(feature(sample_features(variants)))


def card_front_matter(variants: Sequence[str] = ()) -> str:
    """The YAML front matter: the tars as the one config, and the declared features."""
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        f"    path: {SHARDS_DIR}/*.tar",
        "dataset_info:",
        "  features:",
        *_feature_yaml(sample_features(variants), 2),
        "license: other",
        "tags:",
        "- webdataset",
        "- e6ingest",
        "- not-for-all-audiences",  # booru posts: the Hub asks adult content to say so
        "---",
    ]
    return "\n".join(lines) + "\n"


def _describe(manifest: OutputManifest) -> list[str]:
    config, totals, dataset = manifest.config, manifest.totals, manifest.dataset
    repos = "\n".join(f"  - `{repo}` at `{commit}`" for repo, commit in dataset.repos.items())
    query = " ".join(filter(None, [config.get("query", ""), "rating:" + ",".join(
        config["ratings"]) if config.get("ratings") else ""])) or "(everything)"  # fmt: skip
    image, caption, buckets = config["image"], config["caption"], config["buckets"]
    subset = (f"a sample of {config['sample']} (seed {config['seed']})" if config.get("sample")
              else f"the first {config['limit']}" if config.get("limit") else "all")  # fmt: skip
    lossless = ", lossless sources kept lossless" if image["lossless"] else ""
    order = ",".join(caption["order"]) if caption.get("order") else "the site's"
    return [
        f"# {dataset.name}: {totals.written:,} samples",
        "",
        f"Made with e6ingest {manifest.e6ingest_version} (output format "
        f"{manifest.format_version}) from the {dataset.name} dataset ({dataset.site}):",
        repos,
        "",
        f"- **Selection**: `{query}`, {subset} of the selected posts; "
        f"{totals.selected:,} posts planned, {totals.written:,} written, {totals.failures:,} "
        "failed (one row each, with why, in `failures.parquet`).",
        f"- **Images**: WebP of at most {image['max_pixels']:,} pixels (quality "
        f"{image['quality']}, method {image['method']}{lossless}), EXIF orientation applied, "
        "colour in sRGB.",
        f"- **Captions** (`{{key}}.txt`, and `caption` in `{{key}}.json`): merge "
        f"`{caption.get('merge') or 'tags'}`, separator `{caption['separator']!r}`, "
        f"category order {order}.{_variants_line(caption)}",
        f"- **Buckets** (sd-scripts rule): resolution {buckets['resolution']}, sides "
        f"{buckets['min_side']}..{buckets['max_side']} in steps of {buckets['step']}.",
        f"- **Shards**: {len(manifest.shards):,} webdataset tars in `shards/`, each with "
        "its sample index (`.parquet`) and indexed-tar JSON (`.json`, the hfutils format).",
        "",
        'Open it with `datasets.load_dataset("<this folder or repo>", split="train")`, '
        "webdataset, webshart, or `e6ingest.open_shards`; each sample is `webp`, `txt` and "
        "`json` under the key `{site}/{id}`.",
        "",
        f"**Licence**: the images and tags are those of {dataset.site} posts, as the source "
        "repositories above publish them; their authors' rights, the site's terms and those "
        "repositories' licences apply, and this output adds no licence of its own. Booru "
        "posts include adult content (hence `not-for-all-audiences`): check both before "
        "you publish or train on it.",
        "",
    ]


def _variants_line(caption: Mapping[str, Any]) -> str:
    names = variant_names({"caption": caption})[1:]
    if not names:
        return ""
    where = "every one a line of `{key}.txt`, the caption first, and " if caption.get(
        "variant_lines") else ""  # fmt: skip
    return (f" Caption variants, {where}`captions` in `{{key}}.json` by name: "
            f"{', '.join(f'`{n}`' for n in names)} (and `default`, the caption).")  # fmt: skip


def write_card(out: Path, manifest: OutputManifest) -> bool:
    """Write ``OUT/README.md`` for a finished run (marked as e6ingest's); False, writing
    nothing, when the card there was edited after e6ingest wrote it (a person's edits are
    never overwritten)."""
    card = out / CARD_FILE
    if card.is_file() and card_state(card) is not CardState.OURS:
        return False
    front = card_front_matter(variant_names(manifest.config))
    text = mark_card(front, "\n".join(_describe(manifest)))
    write_atomic(card, text.encode("utf-8"))
    return True
