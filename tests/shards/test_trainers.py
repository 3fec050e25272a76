"""The output opens as it is in the readers trainers use (docs/TRAINERS.md): hfutils and
webshart (SimpleTuner) through the indexed-tar JSON, Hugging Face datasets through the card,
webdataset on several ranks, diffusers' webdataset filter, OneTrainer's concept folder, and
e6ingest's own reader for latent caching."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

import e6ingest
from e6ingest.buckets import fit_to_bucket
from e6ingest.readers.reader import iter_samples


def _members(out: Path) -> dict[str, dict[str, bytes]]:
    return dict(iter_samples(out))


# -- the indexed-tar JSON: hfutils and webshart ---------------------------------------------


def test_indexed_tar_json_is_what_hfutils_makes_of_the_tar(small_pull):
    from hfutils.index import tar_file_write_bytes, tar_get_index_info

    for tar in sorted((small_pull / "shards").glob("*.tar")):
        ours = json.loads(tar.with_suffix(".json").read_text())
        theirs = tar_get_index_info(str(tar), silent=True)
        assert (ours["filesize"], ours["hash"], ours["hash_lfs"]) == (
            theirs["filesize"], theirs["hash"], theirs["hash_lfs"],
        )  # fmt: skip
        names = {name.removeprefix("./"): info for name, info in theirs["files"].items()}
        assert names.keys() == ours["files"].keys()
        for name, info in names.items():
            entry = ours["files"][name]
            assert (entry["offset"], entry["size"], entry["sha256"]) == (
                info["offset"], info["size"], info["sha256"],
            )  # fmt: skip
        name = next(n for n in ours["files"] if n.endswith(".webp"))
        buf = io.BytesIO()
        tar_file_write_bytes(str(tar), name, buf, idx_file=str(tar.with_suffix(".json")))
        entry = ours["files"][name]
        with Image.open(io.BytesIO(buf.getvalue())) as image:
            assert image.size == (entry["width"], entry["height"])
        assert entry["aspect"] == pytest.approx(entry["width"] / entry["height"], abs=1e-5)


def test_simpletuner_reads_the_shards_through_webshart(small_pull):
    import webshart

    manifest = json.loads((small_pull / "manifest.json").read_text())
    dataset = webshart.discover_dataset(source=str(small_pull / "shards"))
    assert dataset.num_shards == len(manifest["shards"])
    loader = webshart.TarDataLoader(dataset)
    members = _members(small_pull)
    seen = 0
    for shard in range(dataset.num_shards):
        for position, name in enumerate(dataset.list_samples_in_shard(shard)):
            if not name.endswith(".webp"):
                continue
            entry = loader.load_sample(shard, position)
            key = name.removesuffix(".webp")
            meta = json.loads(members[key]["json"])
            assert entry.data == members[key]["webp"]
            assert (entry.width, entry.height) == tuple(meta["size"])
            assert entry.captions == members[key]["txt"].decode()
            seen += 1
    assert seen == manifest["totals"]["written"]


# -- Hugging Face datasets, through the card ------------------------------------------------


@pytest.fixture(scope="module")
def pull_with_late_nl(small_demo, tmp_path_factory):
    """A pull where natural-language text first appears after the 5th sample."""
    from e6ingest.config import make_config
    from e6ingest.pipeline import pull

    root = tmp_path_factory.mktemp("late-nl")
    plan = pull(make_config({"ratings": "e,q,s", "shard_size": 100}), root / "probe",
                small_demo, workers=1)  # fmt: skip
    keys = list(_members(plan.out))
    late = int(keys[7].split("/")[1])
    nl = root / "nl.jsonl"
    nl.write_text(
        json.dumps(
            {
                "id": late,
                "regular_summary": "A fox, sitting.",
                "tags": [],
                "brief_summary": "Fox.",
                "response_finish_reason": "STOP",
            }
        )
        + "\n"
    )
    config = make_config({"ratings": "e,q,s", "shard_size": 20,
                          "caption": {"nl_captions": [str(nl)], "merge": "tags+nl"}})  # fmt: skip
    return pull(config, root / "out", small_demo, workers=1).out, keys[7]


@pytest.mark.slow
def test_datasets_load_every_sample_with_every_field(pull_with_late_nl, tmp_path):
    out, late_key = pull_with_late_nl
    script = """
import json, sys
from datasets import load_dataset
ds = load_dataset(sys.argv[1], split="train", cache_dir=sys.argv[2])
rows = [{"key": r["__key__"], "size": list(r["webp"].size), "txt": r["txt"],
         "json": r["json"]} for r in ds]
print(json.dumps(rows))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf")}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script, str(out), str(tmp_path / "cache")],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {row["key"]: row for row in json.loads(done.stdout.splitlines()[-1])}
    members = _members(out)
    assert rows.keys() == members.keys()
    for key, row in rows.items():
        meta = json.loads(members[key]["json"])
        assert row["size"] == meta["size"] and row["txt"] == members[key]["txt"].decode()
        assert set(row["json"]["tags"]) == set(meta["tags"])  # every category, empty or not
        assert row["json"]["tags"] == meta["tags"]
        assert row["json"]["original_width"] == meta["original_size"][0]
    assert rows[late_key]["json"]["caption"]["nl"] == ["A fox, sitting.", "Fox."]


def test_the_card_declares_the_tars_and_features(small_pull):
    card = (small_pull / "README.md").read_text()
    front = card.split("---")[1]
    assert "path: shards/*.tar" in front and "dtype: image" in front
    for category in ("general", "artist", "character", "copyright", "species", "meta"):
        assert f"- name: {category}\n" in front
    manifest = json.loads((small_pull / "manifest.json").read_text())
    assert f"{manifest['totals']['written']:,} samples" in card
    for repo, commit in manifest["dataset"]["repos"].items():
        assert f"`{repo}` at `{commit}`" in card
    import yaml

    meta = yaml.safe_load(front)  # the Hub reads these: adult content said, a licence line
    assert "not-for-all-audiences" in meta["tags"] and meta["license"] == "other"
    assert "**Licence**" in card


# -- webdataset on several ranks, and diffusers' filter ------------------------------------


def test_webdataset_pipeline_under_torchrun_splits_by_node(small_pull, monkeypatch):
    seen = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen.append([s["__key__"] for s in e6ingest.open_shards(small_pull).dataset])
    assert seen[0] and seen[1] and not set(seen[0]) & set(seen[1])


def test_diffusers_wds_reading_finds_sizes_and_captions(small_pull):
    import webdataset as wds

    urls = sorted(str(p) for p in (small_pull / "shards").glob("*.tar"))
    pipeline = (
        wds.WebDataset(urls, shardshuffle=False, empty_check=False)
        .decode("pil")
        .rename(image="jpg;png;jpeg;webp", text="text;txt;caption", orig_size="json")
    )
    kept = [
        s for s in pipeline
        if (s["orig_size"].get("original_width") or 0) >= 64
        and (s["orig_size"].get("original_height") or 0) >= 64
        and (s["orig_size"].get("pwatermark") or 0.0) <= 0.5
    ]  # fmt: skip
    assert len(kept) == len(e6ingest.open_shards(small_pull))
    for sample in kept:
        assert sample["image"].size == (sample["orig_size"]["width"], sample["orig_size"]["height"])
        assert sample["text"] == sample["orig_size"]["caption"]["text"]


def test_onetrainer_concept_folder_from_the_kohya_export(small_pull, tmp_path):
    from e6ingest.readers.kohya import export_kohya

    concept = tmp_path / "concept"
    export_kohya(small_pull, concept)
    images = sorted(concept.rglob("*.webp"))  # include subdirectories
    assert len(images) == len(e6ingest.open_shards(small_pull))
    for image in images:
        caption = image.with_suffix(".txt").read_text()
        assert caption and "\n" not in caption


# -- e6ingest's reader: ranks x workers, buckets, sd-scripts crops --------------------------


@pytest.mark.slow
@pytest.mark.parametrize("shard_size", [20, 10, 4])  # fewer shards than parts, 6, more
def test_ranks_and_workers_read_every_sample_once(small_demo, tmp_path, shard_size):
    from e6ingest.config import make_config
    from e6ingest.pipeline import pull

    out = pull(make_config({"ratings": "e,q,s", "shard_size": shard_size}), tmp_path / "o",
               small_demo, workers=1).out  # fmt: skip
    shards = e6ingest.open_shards(out)
    every, shares, steps = Counter(), [], Counter()
    for rank in range(2):
        for worker in range(2):
            keys = [s["__key__"] for s in shards.samples(rank, 2, worker, 2)]
            batches = list(shards.batches(3, rank, 2, worker, 2))
            assert set(k for b in batches for k in b["keys"]) == set(keys)
            every.update(keys)
            shares.append(len(keys))
            steps[rank] += len(batches)
    assert sorted(set(every)) == sorted(shards.index["key"])  # each at least once
    assert len(set(shares)) == 1 and sum(every.values()) - len(every) < 4  # one repeat at most
    assert len(set(steps.values())) == 1  # the ranks stay in step to the epoch's end
    assert shards.steps(3, num_workers=2, world_size=2) == steps[0]  # without reading images
    alone = Counter(s["__key__"] for w in range(2) for s in shards.samples(0, 1, w, 2))
    assert sorted(alone) == sorted(shards.index["key"]) and set(alone.values()) == {1}
    shuffled = [s["__key__"] for s in shards.samples(0, 1, 0, 1, shuffle=True, seed=3)]
    again = [s["__key__"] for s in shards.samples(0, 1, 0, 1, shuffle=True, seed=3)]
    assert shuffled == again and sorted(shuffled) == sorted(every)
    assert shuffled != shards.index["key"].to_list()


@pytest.mark.slow
def test_batches_are_one_bucket_cropped_as_sd_scripts_does(small_pull):
    shards = e6ingest.open_shards(small_pull)
    index = {row["key"]: row for row in shards.index.iter_rows(named=True)}
    batches = list(shards.batches(4, 0, 1, 0, 1))
    assert sum(len(b["keys"]) for b in batches) == len(index)
    for batch in batches:
        width, height = batch["bucket"]
        assert batch["images"].shape == (len(batch["keys"]), height, width, 3)
        for key, original, crop in zip(batch["keys"], batch["original_size"],
                                       batch["crop_ltrb"], strict=True):  # fmt: skip
            row = index[key]
            assert (row["bucket_width"], row["bucket_height"]) == (width, height)
            assert original == (row["width"], row["height"])
            assert crop == fit_to_bucket(*original, (width, height)).crop_ltrb
    pil = next(shards.batches(2, 0, 1, 0, 1, as_numpy=False))
    assert all(image.size == pil["bucket"] for image in pil["images"])


def _sd_scripts_rule(width: int, height: int, bucket: tuple[int, int]):
    """The rule as sd-scripts documents it (section 4 of the format notes), restated."""
    bw, bh = bucket
    image_ar, bucket_ar = width / height, bw / bh
    scale = bh / height if image_ar > bucket_ar else bw / width
    resized = (int(width * scale + 0.5), int(height * scale + 0.5))
    if bucket_ar > image_ar:
        rw, rh = bh * image_ar, bh
    else:
        rw, rh = bw, bw / image_ar
    left, top = (bw - rw) // 2, (bh - rh) // 2
    return resized, (left, top, left + rw, top + rh)


def test_fit_to_bucket_matches_the_sd_scripts_rule_on_generated_sizes():
    import random

    from e6ingest.buckets import BucketSpec, choose_bucket

    rng = random.Random(0)
    for _ in range(5000):
        width, height = rng.randint(64, 8000), rng.randint(64, 8000)
        bucket = choose_bucket(width, height, BucketSpec())
        fit = fit_to_bucket(width, height, bucket)
        assert (fit.resized, fit.crop_ltrb) == _sd_scripts_rule(width, height, bucket)
        assert fit.resized[0] >= bucket[0] and fit.resized[1] >= bucket[1]


def test_sample_json_has_the_laion_size_keys(small_pull):
    for _key, members in list(_members(small_pull).items())[:10]:
        meta = json.loads(members["json"])
        assert [meta["width"], meta["height"]] == meta["size"]
        assert [meta["original_width"], meta["original_height"]] == meta["original_size"]
    index = pl.read_parquet(small_pull / "shards" / "00000.parquet")
    assert index.height > 0


def test_sample_json_has_what_the_latent_cache_records(small_pull):
    """The decoded size, the resized size and the crop, as batches() and sd-scripts make them."""
    shards = e6ingest.open_shards(small_pull)
    for batch in shards.batches(4):
        for meta, original, crop in zip(batch["json"], batch["original_size"],
                                        batch["crop_ltrb"], strict=True):  # fmt: skip
            latent = meta["latent"]
            assert latent["original_size"] == list(original) == meta["size"]
            assert latent["crop_ltrb"] == list(crop)
            fit = fit_to_bucket(*meta["size"], tuple(meta["bucket"]))
            assert latent["resized_size"] == list(fit.resized)


@pytest.mark.slow
def test_datasets_reads_the_tars_without_the_card_given_the_features(small_pull, tmp_path):
    """``load_dataset("webdataset", data_files=...)`` infers json types from the first
    samples (e621: categories empty there, filled later); ``open_shards(OUT).features``
    declares them."""
    script = """
import json, sys
import e6ingest
from datasets import load_dataset
shards = e6ingest.open_shards(sys.argv[1])
tars = [str(p) for p in sorted(shards.out.glob("shards/*.tar"))]
ds = load_dataset("webdataset", data_files={"train": tars}, split="train",
                  features=shards.features, cache_dir=sys.argv[2])
print(json.dumps({r["__key__"]: r["json"]["tags"] for r in ds}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf")}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script, str(small_pull), str(tmp_path / "c")],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.splitlines()[-1])
    members = _members(small_pull)
    assert loaded.keys() == members.keys()
    for key, tags in loaded.items():
        assert tags == json.loads(members[key]["json"])["tags"]


@pytest.mark.slow
def test_the_diffusers_sdxl_recipe_gives_image_and_text_columns(small_pull, tmp_path):
    """train_text_to_image_sdxl.py removes columns 'image' and 'text' by name: TRAINERS.md's
    recipe renames them; its copy loads with those columns, images decoding."""
    import re as re_

    recipe = (Path(__file__).resolve().parents[2] / "docs" / "TRAINERS.md").read_text()
    code = re_.search(r"## diffusers.*?```python\n(.*?)```", recipe, re_.S).group(1)
    code = code.replace("/data/out", str(small_pull)).replace("/data/sdxl", str(tmp_path / "sd"))
    check = (
        code
        + f"""
ds = load_dataset({str(tmp_path / "sd")!r}, split="train")
assert set(ds.column_names) == {{"image", "text"}}, ds.column_names
assert ds[0]["image"].size[0] > 0 and isinstance(ds[0]["text"], str)
print(len(ds))
"""
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_CACHE": str(tmp_path / "c")}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[-1]) == len(_members(small_pull))
