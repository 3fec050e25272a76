"""Caption variants end to end: the spec (presets, tables, refusals), a pull writing them
(json by name, .txt unchanged or a line each), Hugging Face datasets reading them as
declared features, the kohya export (a line per variant, wildcards on), and open_shards
drawing them by weight, the same for the same seed and epoch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import e6ingest
from e6ingest.captions import CaptionSpec
from e6ingest.captions.tokens import count_tokens
from e6ingest.config import ConfigError, make_config
from e6ingest.pipeline import pull
from e6ingest.pipeline.driver import caption_window_notes
from e6ingest.readers.kohya import export_kohya
from e6ingest.readers.reader import iter_samples
from e6ingest.readers.verify import verify_output
from tests.shards.test_kohya import _trained_text


def test_presets_tables_and_refusals():
    spec = CaptionSpec(variants="standard")
    assert spec.variant_names == ("default", "short", "medium", "full")
    with_nl = CaptionSpec(variants="standard", nl_captions=("x.jsonl",))
    assert with_nl.variant_names[-2:] == ("brief", "tags+nl")
    assert spec.variant("short").max_tokens == 20 and spec.variant("short").merge == "tags"
    assert spec.variant("default") is spec
    tiny = {"max_tokens": 8, "people_first": True}
    custom = CaptionSpec(separator=" ", variants={"short": {"max_tokens": 30}, "tiny": tiny})
    assert custom.variant("short").max_tokens == 30 and custom.variant("short").separator == " "
    assert custom.variant("tiny").people_first
    for bad, says in [
        ("nosuch", "no preset"), ({"x": {"aliases": "a.csv"}}, "cannot set"),
        ({"short": {"max_tokens": 3}}, "within 8..1,000,000"),
        ({"default": {}}, "not a variant name"),
        ({"x": {"nope": 1}}, "cannot set"),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match=says):
            CaptionSpec(variants=bad)
    with pytest.raises(ConfigError, match="variant_lines"):
        make_config({"caption": {"variant_lines": True}})


@pytest.mark.parametrize(
    ("caption", "says"),
    [
        ({"variants": 5}, "variants must be preset names"),
        ({"variants": [5]}, "variants: 5 is not a variant name"),
        ({"variants": {"short": {"max_tokens": "x"}}},
         "[caption] variants.short: max_tokens must be a whole number, not 'x'"),
        ({"variants": {"tiny": {"max_tokens": 20, "people_first": "yes"}}},
         "[caption] variants.tiny: people_first must be true or false, not 'yes'"),
    ],
)  # fmt: skip
def test_a_variant_option_of_the_wrong_type_is_named_as_the_spec_s_own(caption, says):
    """A variant's options are checked as the caption's own: "yes" is no boolean (it was
    taken as true), and a text budget is named, not a comparison error."""
    with pytest.raises(ConfigError) as refused:
        make_config({"caption": caption}, where="c.toml")
    assert says in str(refused.value)


@pytest.mark.parametrize(
    ("caption", "says"),
    [
        ({"merge": "nl"}, "[caption]: merge 'nl' merges natural-language captions, and none"),
        ({"merge": "alternatives"}, "merge 'alternatives' merges natural-language"),
        ({"variants": "short,brief"}, "[caption]: variant brief: merge 'nl' merges"),
    ],
)
def test_merging_natural_language_captions_without_any_is_refused(caption, says):
    """Every such caption would be the tags; with the file given, the same options pass."""
    with pytest.raises(ConfigError) as refused:
        make_config({"caption": caption}, where="c.toml")
    assert says in str(refused.value) and "--nl-captions FILE" in str(refused.value)
    make_config({"caption": {**caption, "nl_captions": ["nl.jsonl"]}})
    make_config({"caption": {"variants": "standard"}})  # brief and tags+nl only with NL files


@pytest.mark.parametrize("ratings", [5, ["e", 5], {"e": 1}])
def test_ratings_of_the_wrong_type_are_named(ratings):
    with pytest.raises(ConfigError, match=r"c\.toml: rating must be text such as"):
        make_config({"rating": ratings}, where="c.toml")
    assert make_config({"rating": ["e", "q"]}).ratings == ("e", "q")


def test_toml_and_flags_name_the_same_variants(tmp_path):
    from e6ingest.cli.parsers import build_parser, flag_values

    toml = tmp_path / "c.toml"
    toml.write_text("[caption.variants]\nshort = true\nmedium = { max_tokens = 60 }\n")
    args = build_parser().parse_args(["pull", "--out", "x", "--config", str(toml)])
    spec = make_config(flag_values(args)).caption
    assert spec.variant_names == ("default", "short", "medium")
    assert spec.variant("medium").max_tokens == 60
    args = build_parser().parse_args(["pull", "--out", "x", "--variants", "short,full"])
    assert make_config(flag_values(args)).caption.variant_names == ("default", "short", "full")


@pytest.fixture(scope="module")
def variant_pull(small_demo, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("variants")
    config = make_config({"ratings": "e,q,s", "shard_size": 25, "variants": "standard",
                          "variant_lines": True})  # fmt: skip
    return pull(config, root / "out", small_demo, workers=1).out


@pytest.fixture(scope="module")
def plain_pull(small_demo, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plain")
    config = make_config({"ratings": "e,q,s", "shard_size": 25})
    return pull(config, root / "out", small_demo, workers=1).out


def test_a_pull_writes_every_variant_by_name_and_the_caption_first(variant_pull, plain_pull):
    plain = dict(iter_samples(plain_pull))
    samples = dict(iter_samples(variant_pull))
    assert samples.keys() == plain.keys() and len(samples) > 20
    for key, members in samples.items():
        meta = json.loads(members["json"])
        captions = meta["captions"]
        assert list(captions) == sorted(["default", "short", "medium", "full"])
        assert captions["default"] == meta["caption"]["text"]
        assert captions["default"] == plain[key]["txt"].decode()  # the caption is unchanged
        lines = members["txt"].decode().split("\n")
        assert lines[0] == captions["default"] and set(lines) == set(captions.values())
        counts = dict(zip(["short", "medium", "full"],
                          count_tokens([captions[n] for n in ("short", "medium", "full")]),
                          strict=True))  # fmt: skip
        assert counts["short"] <= 20 and counts["medium"] <= 75 and counts["full"] <= 225
        assert counts["short"] <= counts["medium"] <= counts["full"]
    assert verify_output(variant_pull, deep=True).ok


def test_without_variants_the_output_has_none(plain_pull):
    meta = json.loads(next(iter(iter_samples(plain_pull)))[1]["json"])
    assert "captions" not in meta
    assert "captions" not in (plain_pull / "README.md").read_text().split("---")[1]


@pytest.mark.slow
def test_datasets_reads_the_variants_as_declared_features(variant_pull, tmp_path):
    script = """
import json, sys
from datasets import load_dataset
ds = load_dataset(sys.argv[1], split="train", cache_dir=sys.argv[2])
print(json.dumps({"features": str(ds.features["json"]["captions"]),
                  "rows": {r["__key__"]: r["json"]["captions"] for r in ds}}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf")}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script, str(variant_pull), str(tmp_path / "c")],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    for name in ("default", "short", "medium", "full"):
        assert f"'{name}'" in loaded["features"]
    for key, members in iter_samples(variant_pull):
        assert loaded["rows"][key] == json.loads(members["json"])["captions"]


def test_the_kohya_export_writes_a_line_per_variant_with_wildcards(variant_pull, tmp_path):
    from e6ingest import tomlfile

    to = tmp_path / "kohya"
    export_kohya(variant_pull, to)
    config = tomlfile.loads((to / "dataset_config.toml").read_text())
    assert config["datasets"][0]["subsets"][0]["enable_wildcard"] is True
    metadata = json.loads((to / "metadata.json").read_text())
    for key, members in iter_samples(variant_pull):
        captions = json.loads(members["json"])["captions"]
        entry = metadata[f"{key}.webp"]
        lines = entry["caption"].split("\n")
        assert "tags" not in entry and lines[0] == captions["default"]
        assert set(lines) == set(captions.values())
        assert (to / f"{key}.txt").read_text().split("\n") == lines
        for version in ("0.9", "0.10"):  # sd-scripts with enable_wildcard picks any line
            assert set(_trained_text(entry, version, wildcard=True)) == set(captions.values())
            assert _trained_text(entry, version, wildcard=False) == [captions["default"]]


def test_open_shards_draws_variants_by_weight_the_same_for_a_seed(variant_pull):
    shards = e6ingest.open_shards(variant_pull, decode=None)
    weights = {"short": 0.5, "medium": 0.3, "default": 0.2}
    drawn = Counter()
    picks = []
    epochs = -(-10_000 // len(shards))
    for epoch in range(epochs):
        for sample in shards.samples(epoch=epoch, seed=7, variant_weights=weights):
            meta = json.loads(sample["json"])
            assert sample["txt"].decode() == meta["captions"][sample["variant"]]
            drawn[sample["variant"]] += 1
            picks.append(sample["txt"])
    assert sum(drawn.values()) >= 10_000
    for name, weight in weights.items():
        assert abs(drawn[name] / sum(drawn.values()) - weight) < 0.02, drawn
    again = [s["txt"] for e in range(epochs)
             for s in shards.samples(epoch=e, seed=7, variant_weights=weights)]  # fmt: skip
    assert again == picks
    other = [s["txt"] for s in shards.samples(epoch=0, seed=8, variant_weights=weights)]
    assert other != picks[: len(other)]
    with pytest.raises(ValueError, match="does not have"):
        next(iter(shards.samples(variant_weights={"nope": 1})))
    with pytest.raises(TypeError, match="maps variant names to weights"):
        next(iter(shards.samples(variant_weights="short")))  # type: ignore[arg-type]


def test_shuffle_and_dropout_keep_the_fixed_head(variant_pull):
    shards = e6ingest.open_shards(variant_pull, decode=None)
    varied_lines = {"shuffle_tags": True, "tag_dropout": 0.3, "keep_tokens": 2}
    for sample in shards.samples(seed=1, variant_weights={"default": 1}, **varied_lines):
        original = json.loads(sample["json"])["caption"]["text"].split(", ")
        varied = sample["txt"].decode().split(", ")
        assert varied[:2] == original[:2]
        assert set(varied) <= set(original)
    batch = next(iter(shards.batches(4, variant_weights={"short": 1}, seed=3)))
    assert all(count_tokens([c])[0] <= 20 for c in batch["captions"])
    assert batch["variants"] == ["short"] * len(batch["captions"])
    raw = shards.samples(seed=1)
    for sample, plain in zip(shards.samples(seed=1, **varied_lines), raw, strict=True):
        lines, originals = sample["txt"].decode().split("\n"), plain["txt"].decode().split("\n")
        assert len(lines) == len(originals) > 1  # every line of {key}.txt varied on its own
        assert all(
            set(a.split(", ")) <= set(b.split(", ")) for a, b in zip(lines, originals, strict=True)
        )


@pytest.mark.parametrize(
    ("weights", "says"),
    [
        ({"short": -1, "full": 2}, r"variant_weights\['short'\] must be 0 or more, not -1"),
        ({"short": float("nan")}, r"variant_weights\['short'\] must be 0 or more, not nan"),
        ({"full": float("inf")}, r"variant_weights\['full'\] must be 0 or more, not inf"),
        ({"short": "1"}, r"variant_weights\['short'\] must be a number, not '1'"),
        ({"short": True}, r"variant_weights\['short'\] must be a number, not True"),
        ({"short": 0, "full": 0.0}, "variant_weights must not all be 0"),
    ],
)
def test_variant_weights_that_cannot_be_drawn_are_refused_by_name(weights, says):
    from e6ingest.readers.augment import CaptionChoice

    with pytest.raises(ValueError, match=says):
        CaptionChoice(weights=weights)
    numpy_weights = {"short": np.float32(0.5), "full": np.int64(1)}  # as a notebook makes them
    assert CaptionChoice(weights=numpy_weights).total == 1.5


def test_the_window_note_names_the_fix_a_run_with_variants_lacks(tmp_path):
    plan = tmp_path / "plan.parquet"
    long = ", ".join(f"tag number {i}" for i in range(60))
    pl.DataFrame({"caption": [long] * 20}).write_parquet(plan)
    (plain,) = caption_window_notes(plan, CaptionSpec())
    assert "100% over 75" in plain and "--variants adds shorter ones" in plain
    (json_only,) = caption_window_notes(plan, CaptionSpec(variants="standard"))
    assert "--variants adds" not in json_only  # asked for already
    assert "(short, medium, full) are in {key}.json only; --variant-lines" in json_only
    (lines,) = caption_window_notes(plan, CaptionSpec(variants="standard", variant_lines=True))
    assert "{key}.txt holds the variants (short, medium, full) one per line" in lines
    assert "--variant-lines" not in lines
    assert caption_window_notes(plan, CaptionSpec(variants="standard", max_tokens=75)) == []


def test_the_short_variant_leads_with_the_people_count(danbooru_sample):
    """What people type first is how many are pictured: a post with seven characters keeps
    its 2boys, 2girls in ``short`` (the head's last tags, they went first under the budget)."""
    from e6ingest import dataset

    data = dataset.open_dataset(files=[danbooru_sample])
    out = dataset.captions(data.select(""), CaptionSpec(variants="standard"), data.tables)
    short = dict(zip(out["id"], out["captions"].struct.field("short"), strict=True))
    assert short[2].startswith("2boys, 2girls, ") and "nakamura hisashi" in short[2]
    assert short[1].startswith("1girl, solo, kyogoku shin")
    assert max(count_tokens(list(short.values()))) <= 20


def _captions_file(small_demo: Path, out: Path, *flags: str) -> dict[int, dict]:
    from e6ingest.cli import main

    selection = ["--mirror", str(small_demo), "--dataset", "e621", "--rating", "e,q,s"]
    assert main(["captions", *selection, *flags, "--out", str(out)]) == 0
    return {row["id"]: row for row in map(json.loads, out.read_text().splitlines())}


def test_each_variant_is_the_caption_its_options_give_alone(small_demo, tmp_path):
    """A variant's budget keeps the dataset's rarest tags first, as the same budget asked
    for the caption does, also when no caption option asks for a budget (the variants once
    kept tags in caption order then, silently) and for a variant that writes tags otherwise
    (its own tag rarity, keyed as it writes them)."""
    config = tmp_path / "caption.toml"
    config.write_text("[variants]\nshort = true\nmedium = true\nfull = true\n"
                      "raw = { max_tokens = 30, underscores_to_spaces = false }\n")  # fmt: skip
    both = _captions_file(small_demo, tmp_path / "v.jsonl", "--caption-config", str(config))
    alone = {
        "short": ["--max-tokens", "20", "--people-first"],
        "medium": ["--max-tokens", "75"],
        "full": ["--max-tokens", "225"],
        "raw": ["--max-tokens", "30", "--keep-underscores"],
    }
    for name, flags in alone.items():
        single = _captions_file(small_demo, tmp_path / f"{name}.jsonl", *flags)
        assert single.keys() == both.keys() and len(both) > 50
        differ = [i for i in both if both[i]["captions"][name] != single[i]["caption"]]
        assert not differ, (name, both[differ[0]]["captions"][name], single[differ[0]]["caption"])
    assert any("_" in row["captions"]["raw"] for row in both.values())
