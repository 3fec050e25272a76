"""The config records (caption spec, image policy, buckets, pull config, run options, a
dataset, a caption choice) refuse a value of the wrong type however they are made, from
Python as from a TOML file: a "no" given to a boolean was true, and an image kept its alpha
or a caption led with people without a word."""

from __future__ import annotations

import json

import numpy as np
import pytest

from e6ingest.buckets import BucketSpec
from e6ingest.captions import CaptionSpec
from e6ingest.config import ConfigError, PullConfig, make_config
from e6ingest.dataset import Dataset
from e6ingest.imaging import ImagePolicy
from e6ingest.pipeline.driver import RunOptions
from e6ingest.readers.augment import CaptionChoice


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: CaptionSpec(people_first="no"), "people_first must be true or false, not 'no'"),
        (lambda: CaptionSpec(max_tokens="75"), "max_tokens must be a whole number, not '75'"),
        (lambda: CaptionSpec(max_tokens=True), "max_tokens must be a whole number, not True"),
        (lambda: CaptionSpec(separator=5), "separator must be a string, not 5"),
        (lambda: ImagePolicy(keep_alpha="no"), "keep_alpha must be true or false, not 'no'"),
        (lambda: ImagePolicy(quality=90.5), "quality must be a whole number, not 90.5"),
        (lambda: BucketSpec(resolution="1024"), "resolution must be a whole number"),
        (lambda: PullConfig(include_deleted="no"), "include_deleted must be true or false"),
        (lambda: CaptionSpec(variants={"tiny": {"people_first": "no"}}),
         "variants: tiny: people_first must be true or false, not 'no'"),
        (lambda: CaptionSpec(merge=5), "merge must be a string, not 5"),  # str | None
        (lambda: RunOptions(workers="2"), "workers must be a whole number, not '2'"),
        (lambda: RunOptions(overwrite="no"), "overwrite must be true or false, not 'no'"),
        (lambda: RunOptions(index="yes"), "index must be true or false, not 'yes'"),
        (lambda: CaptionChoice(shuffle_tags="no"), "shuffle_tags must be true or false"),
        (lambda: CaptionChoice(seed="a"), "seed must be a whole number, not 'a'"),
        (lambda: Dataset((), (), include_deleted="no"), "include_deleted must be true or"),
    ],
)  # fmt: skip
def test_a_value_of_the_wrong_type_is_refused_naming_the_field(make, says):
    with pytest.raises(ValueError) as refused:
        make()
    assert says in str(refused.value)


def test_numpy_numbers_are_numbers_and_the_record_holds_python_ones():
    spec = CaptionSpec(max_tokens=np.int64(75))
    policy = ImagePolicy(quality=np.int32(80))
    assert spec.max_tokens == 75 and type(spec.max_tokens) is int
    assert type(policy.quality) is int
    assert RunOptions(workers=np.int64(2)).workers == 2 and RunOptions().workers is None
    json.dumps({"max_tokens": spec.max_tokens, "quality": policy.quality})  # a fingerprint


def test_a_toml_value_of_the_wrong_type_names_its_file_and_table():
    with pytest.raises(ConfigError, match=r"c\.toml \[image\]: keep_alpha must be true or"):
        make_config({"keep_alpha": "no"}, where="c.toml")
