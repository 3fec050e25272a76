"""`e6ingest verify`: a whole output passes; each kind of damage is found and named."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile

import polars as pl
import pytest

from e6ingest.cli import main
from e6ingest.readers.verify import verify_output


@pytest.fixture
def output(small_pull, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(small_pull, out)
    return out


def _verify(out, capsys, *flags):
    code = main(["verify", str(out), *flags])
    return code, capsys.readouterr().out


def test_whole_output_passes_deep(output, capsys):
    code, text = _verify(output, capsys, "--deep")
    assert code == 0, text
    report = verify_output(output)
    assert report.ok and report.shards >= 2 and report.samples > 20
    assert f"ok: {report.shards} shards, {report.samples} samples" in text


def test_truncated_shard(output, capsys):
    tar = output / "shards" / "00001.tar"
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 2])
    code, text = _verify(output, capsys)
    assert code == 1
    assert "shards/00001.tar: unreadable tar" in text
    assert "shards/00001.tar: sha256 differs" in text
    assert "00000.tar" not in text


def test_flipped_byte_names_the_sample(output, capsys):
    tar = output / "shards" / "00000.tar"
    data = bytearray(tar.read_bytes())
    data[2048] ^= 0x40  # inside the first sample's image
    tar.write_bytes(bytes(data))
    code, text = _verify(output, capsys)
    assert code == 1
    assert "shards/00000.tar: sha256 differs from the manifest" in text
    assert ".webp differs from its index row" in text


def test_missing_index(output, capsys):
    (output / "shards" / "00001.parquet").unlink()
    code, text = _verify(output, capsys)
    assert code == 1
    assert text.splitlines()[0] == "shards/00001.parquet is missing"


def test_shard_not_in_manifest(output, capsys):
    shutil.copy(output / "shards" / "00000.tar", output / "shards" / "00042.tar")
    code, text = _verify(output, capsys)
    assert code == 1
    assert "shards/00042.tar is not in the manifest" in text


def test_deep_finds_an_image_that_does_not_decode(output, capsys):
    # Damage the first image's pixels and make index and manifest agree with the damage:
    # only decoding can notice.
    tar = output / "shards" / "00000.tar"
    index = pl.read_parquet(output / "shards" / "00000.parquet")
    first = index.row(0, named=True)
    data = bytearray(tar.read_bytes())
    start = first["offset"] + 40
    data[start : start + 200] = bytes(200)
    tar.write_bytes(bytes(data))
    webp = bytes(data[first["offset"] : first["offset"] + first["bytes"]])
    index = index.with_columns(
        pl.when(pl.col("key") == first["key"])
        .then(pl.lit(hashlib.sha256(webp).hexdigest()))
        .otherwise(pl.col("sha256"))
        .alias("sha256")
    )
    index.write_parquet(output / "shards" / "00000.parquet")
    manifest = json.loads((output / "manifest.json").read_text())
    manifest["shards"][0]["sha256"] = hashlib.sha256(data).hexdigest()
    (output / "manifest.json").write_text(json.dumps(manifest))
    tar_index = json.loads((output / "shards" / "00000.json").read_text())
    tar_index["hash_lfs"] = hashlib.sha256(data).hexdigest()
    tar_index["files"][f"{first['key']}.webp"]["sha256"] = hashlib.sha256(webp).hexdigest()
    (output / "shards" / "00000.json").write_text(json.dumps(tar_index))
    assert tarfile.is_tarfile(tar)

    assert _verify(output, capsys)[0] == 0
    code, text = _verify(output, capsys, "--deep")
    assert code == 1
    assert f"{first['key']}.webp" in text


def test_unfinished_run_and_missing_manifest(output, capsys):
    manifest = json.loads((output / "manifest.json").read_text())
    dropped = manifest["shards"].pop()
    manifest["totals"]["written"] -= dropped["samples"]
    (output / "manifest.json").write_text(json.dumps(manifest))
    (output / dropped["name"]).unlink()
    code, text = _verify(output, capsys)
    assert code == 1
    assert "planned shards are not in the manifest" in text and "rerun" in text

    (output / "manifest.json").unlink()
    code, text = _verify(output, capsys)
    assert code == 1 and "no manifest" in text


def test_repeated_keys_are_refused(output, capsys):
    import polars as pl

    index = output / "shards" / "00001.parquet"
    first = pl.read_parquet(output / "shards" / "00000.parquet")["key"][0]
    frame = pl.read_parquet(index)
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit(first))
                               .otherwise(pl.col("key")).alias("key"))  # fmt: skip
    frame.write_parquet(index)
    code, text = _verify(output, capsys)
    assert code == 1
    assert f"key {first} is in the output 2 times" in text


def test_the_indexed_tar_json_is_checked(output, capsys):
    path = output / "shards" / "00001.json"
    document = json.loads(path.read_text())
    name = next(iter(document["files"]))
    document["files"][name]["offset"] += 512
    path.write_text(json.dumps(document))
    code, text = _verify(output, capsys)
    assert code == 1 and f"shards/00001.tar: {name} differs from its indexed-tar JSON" in text
    path.unlink()
    code, text = _verify(output, capsys)
    assert code == 1 and "shards/00001.json is missing" in text


def test_verify_finds_planned_posts_that_are_nowhere(small_pull, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(small_pull, out)
    assert verify_output(out).ok
    stats_path = next(iter(sorted((out / "shards").glob("*.stats.json"))))
    stats = json.loads(stats_path.read_text())
    assert stats["failures"]
    stats["failures"] = stats["failures"][1:]  # a failure forgotten: the post is nowhere
    stats_path.write_text(json.dumps(stats))
    problems = verify_output(out).problems
    assert any("neither in the output nor recorded as failed" in p for p in problems)
    assert pl.read_parquet(out / "plan.parquet").height > 0


def test_verify_finds_a_shard_written_for_another_plan(small_pull, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(small_pull, out)
    stats_path = next(iter(sorted((out / "shards").glob("*.stats.json"))))
    stats = json.loads(stats_path.read_text())
    assert stats["plan"] == json.loads((out / "manifest.json").read_text())["plan"] != ""
    stats["plan"] = "0123456789abcdef"  # as a second run with another config writes it
    stats_path.write_text(json.dumps(stats))
    assert any("written for another plan" in p for p in verify_output(out).problems)


def test_a_task_refuses_a_plan_replaced_under_its_run(small_pull, tmp_path):
    from e6ingest.config import make_config
    from e6ingest.pipeline.planfile import plan_id
    from e6ingest.pipeline.task import ShardTask, run_task
    from e6ingest.shards.layout import OutputError
    from e6ingest.sources import SourceSpec

    out = tmp_path / "out"
    shutil.copytree(small_pull, out)
    config = make_config({})
    assert plan_id(out / "plan.parquet")
    task = ShardTask(0, str(out), SourceSpec(None), config.image, config.buckets, "fedcba98")
    with pytest.raises(OutputError, match="not the plan this run made"):
        run_task(task)
