"""An output folder is e6ingest's only where e6ingest can prove it: what it did not write is
never removed, one run holds a folder at a time, and workers never outlive their run."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e6ingest.cli import main
from e6ingest.config import make_config
from e6ingest.outdir.lock import LOCK_FILE, OutputLock, OutputLocked
from e6ingest.pipeline import pull
from e6ingest.readers.verify import verify_output
from e6ingest.shards.layout import OutputError


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _pull_args(mirror: Path, out: Path, *extra: str) -> list[str]:
    return ["pull", "--mirror", str(mirror), "--out", str(out), "--shard-size", "20",
            "--workers", "1", "--quiet", *extra]  # fmt: skip


@pytest.fixture
def output(small_pull, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(small_pull, out)
    return out


@pytest.mark.slow
def test_overwrite_never_deletes_what_e6ingest_did_not_write(output, small_demo, capsys):
    (output / "notes.txt").write_text("my notes")
    (output / "sub").mkdir()
    (output / "sub" / "a.png").write_bytes(b"png")
    before = _files(output)
    for extra in ([], ["--overwrite"], ["--rating", "e", "--overwrite"]):
        assert main(_pull_args(small_demo, output, *extra)) == 2
        err = capsys.readouterr().err
        assert "did not write" in err and "notes.txt" in err
        assert "--overwrite" not in err  # never suggested for a folder that is not ours
        assert len(err.strip().splitlines()) == 1
    assert _files(output) == before


@pytest.mark.slow
def test_overwrite_replaces_only_its_own_run(output, small_demo, capsys):
    assert main(_pull_args(small_demo, output, "--rating", "e")) == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "ratings" in err and "--overwrite" in err
    assert main(_pull_args(small_demo, output, "--rating", "e", "--overwrite")) == 0
    assert verify_output(output).ok
    assert json.loads((output / "manifest.json").read_text())["config"]["ratings"] == ["e"]


@pytest.mark.parametrize(
    "planted",
    ["shards/notes.txt", "shards/00000.tar.bak", "plan.csv",
     ".notes.txt.123-0123456789ab.tmp", "shards/.mine.txt.77-0123456789ab.tmp"],
)  # fmt: skip
def test_a_foreign_file_anywhere_in_the_output_is_refused(output, small_demo, planted):
    (output / planted).write_text("mine")
    with pytest.raises(OutputError, match=planted.split("/")[-1].replace(".", r"\.")):
        pull(make_config({"ratings": "e", "shard_size": 20}), output, small_demo,
             workers=1, overwrite=True)  # fmt: skip
    assert (output / planted).read_text() == "mine"


def test_a_user_file_linked_under_a_temporary_name_is_not_taken_for_ours(output, small_demo):
    precious = output.parent / "precious.txt"
    precious.write_text("mine")
    os.link(precious, output / ".plan.parquet.123-0123456789ab.tmp")
    with pytest.raises(OutputError, match=r"\.plan\.parquet\.123"):
        pull(make_config({"ratings": "e,q,s", "shard_size": 20}), output, small_demo, workers=1)
    assert (output / ".plan.parquet.123-0123456789ab.tmp").read_text() == "mine"


def test_a_symlink_in_the_output_is_never_followed(output, small_demo, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "00000.tar").write_text("precious")
    (output / "shards" / "linked").symlink_to(victim)
    with pytest.raises(OutputError, match="linked"):
        pull(make_config({"ratings": "e", "shard_size": 20}), output, small_demo,
             workers=1, overwrite=True)  # fmt: skip
    assert (victim / "00000.tar").read_text() == "precious"


def test_a_plan_file_without_the_e6ingest_mark_is_not_ours(small_demo, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "plan.parquet").write_bytes(b"PAR1 not ours")
    with pytest.raises(OutputError, match=r"plan\.parquet"):
        pull(make_config({"shard_size": 20}), out, small_demo, workers=1, overwrite=True)
    assert (out / "plan.parquet").read_bytes() == b"PAR1 not ours"


def test_a_second_run_on_the_same_output_is_refused_naming_the_holder(output, small_demo):
    with OutputLock(output), pytest.raises(OutputLocked, match=rf"pid {os.getpid()}"):
        pull(make_config({"ratings": "e,q,s", "shard_size": 20}), output, small_demo,
             workers=1)  # fmt: skip
    assert not (output / LOCK_FILE).exists()  # released


def test_the_lock_of_a_dead_process_is_taken_over(output, small_demo):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from e6ingest.outdir.lock import OutputLock;"
         f"OutputLock({str(output)!r}).acquire(); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(OutputLocked):
        OutputLock(output).acquire()
    holder.kill()
    holder.wait()
    assert (output / LOCK_FILE).exists()  # left behind by kill -9
    summary = pull(make_config({"ratings": "e,q,s", "shard_size": 20}), output, small_demo,
                   workers=1)  # fmt: skip
    assert summary.shards_skipped == summary.shards


def test_a_damaged_complete_shard_is_rewritten_not_skipped(output, small_demo):
    tar = output / "shards" / "00001.tar"
    good = tar.read_bytes()
    middle = len(good) // 2
    tar.write_bytes(good[:middle] + bytes(1024) + good[middle + 1024 :])  # same size
    summary = pull(make_config({"ratings": "e,q,s", "shard_size": 20}), output, small_demo,
                   workers=1)  # fmt: skip
    assert summary.shards_skipped == summary.shards - 1
    assert tar.read_bytes() == good
    assert verify_output(output).ok


def test_temporaries_are_unique_per_writer(small_demo, tmp_path):
    from e6ingest.shards import ShardWriter

    first, second = ShardWriter(tmp_path, 0), ShardWriter(tmp_path, 0)
    assert first._tmp_tar != second._tmp_tar
    first.abort()
    second.abort()
    assert not list(tmp_path.iterdir())


def _worker_pids(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (the pool workers, the resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent:
                found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
def test_workers_exit_soon_after_their_parent_is_killed(demo_root, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "e6ingest", "pull", "--mirror", str(demo_root), "--out", str(out),
         "--workers", "2", "--quiet", "--shard-size", "50"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and len(workers) < 3:  # 2 workers, 1 resource tracker
        workers = _worker_pids(proc.pid)
        time.sleep(0.05)
    assert len(workers) >= 3, "the pull never started its workers"
    proc.kill()  # kill -9 of the parent alone: the workers are not signalled
    proc.wait()
    deadline = time.monotonic() + 10
    alive = list(workers)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _alive(pid)]
        time.sleep(0.1)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not alive, "workers outlived their parent by 10 seconds"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "step"), [("pillow", "pillow._to_rgb"), ("vips", "vips._to_srgb")]
)
def test_a_coding_error_in_image_work_stops_the_run(
    backend, step, small_demo, tmp_path, monkeypatch
):
    if backend == "vips":
        pytest.importorskip("pyvips")

    def broken(*args):  # a bug in e6ingest's own code, not bad image data
        raise AttributeError("'NoneType' object has no attribute 'convert'")

    monkeypatch.setattr(f"e6ingest.imaging.{step}", broken)
    config = make_config({"ratings": "e,q,s", "shard_size": 20, "image_backend": backend})
    with pytest.raises(AttributeError, match="convert"):
        pull(config, tmp_path / "out", small_demo, workers=1)
    assert not list((tmp_path / "out").glob("shards/*.stats.json"))
    monkeypatch.undo()
    summary = pull(config, tmp_path / "out", small_demo, workers=1)  # resumable
    assert summary.written > 0 and verify_output(tmp_path / "out").ok


def test_bad_image_data_raised_inside_pillow_is_a_failure():
    from e6ingest.core import FailureKind, PostFailure
    from e6ingest.imaging import ImagePolicy, normalize_or_failure

    png_header = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\xff" * 30
    result = normalize_or_failure(png_header, ImagePolicy())
    assert isinstance(result, PostFailure) and result.kind is FailureKind.UNDECODABLE


def test_post_failure_pickles():
    import pickle

    from e6ingest.core import FailureKind, PostFailure

    failure = pickle.loads(pickle.dumps(PostFailure(FailureKind.CORRUPT, "bad bytes", "fetch")))
    assert (failure.kind, failure.message, failure.stage) == (
        FailureKind.CORRUPT, "bad bytes", "fetch",
    )  # fmt: skip


def test_a_run_from_before_the_backend_choice_resumes_with_pillow(output, small_demo, capsys):
    """Runs written before the image backend and pass-through were options used Pillow and
    passed through: such a run goes on with ``--image-backend pillow``, and another backend
    is named as the difference."""
    import pyarrow.parquet as pq

    from e6ingest.shards.layout import PLAN_FILE

    table = pq.read_table(output / PLAN_FILE)
    metadata = dict(table.schema.metadata)
    fingerprint = json.loads(metadata[b"e6ingest.fingerprint"])
    del fingerprint["config"]["image"]["backend"]
    del fingerprint["config"]["image"]["pass_through"]
    metadata[b"e6ingest.fingerprint"] = json.dumps(fingerprint).encode()
    pq.write_table(table.replace_schema_metadata(metadata), output / PLAN_FILE)
    tars = {p.name: p.stat().st_mtime_ns for p in (output / "shards").glob("*.tar")}
    args = _pull_args(small_demo, output, "--rating", "e,q,s")
    assert main([*args, "--image-backend", "pillow"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (output / "shards").glob("*.tar")} == tars
    pytest.importorskip("pyvips")
    assert main([*args, "--image-backend", "vips"]) == 2
    assert "image.backend ('pillow' -> 'vips')" in capsys.readouterr().err


def test_a_card_edited_after_the_run_is_never_overwritten(output, small_demo, capsys):
    """People edit the dataset card before they upload: a rerun keeps their edits (and says
    so), --overwrite refuses naming the card, and the untouched card is still rewritten."""
    card = output / "README.md"
    card.write_text(card.read_text() + "\nMy notes for the Hub.\n")
    edited = card.read_bytes()
    assert main(_pull_args(small_demo, output, "--rating", "e,q,s", "--retry-failed")) == 0
    assert card.read_bytes() == edited
    assert "README.md was edited after e6ingest wrote it" in capsys.readouterr().out
    assert main(_pull_args(small_demo, output, "--rating", "e", "--overwrite")) == 2
    err = capsys.readouterr().err
    assert "README.md" in err and "edited" in err and len(err.strip().splitlines()) == 1
    assert card.read_bytes() == edited and verify_output(output).ok
    card.rename(output.parent / "my-card.md")
    assert main(_pull_args(small_demo, output, "--rating", "e", "--overwrite")) == 0
    assert "My notes" not in card.read_text() and "sha256:" in card.read_text()
    assert (output.parent / "my-card.md").read_bytes() == edited


def test_a_card_of_an_older_version_is_still_ours(output, small_demo):
    card = output / "README.md"
    text = card.read_text()
    older = re.sub(
        r"<!-- e6ingest dataset card sha256:[0-9a-f]{64} -->",
        "<!-- e6ingest dataset card -->",
        text,
    )
    assert older != text
    card.write_text(older)
    pull(
        make_config({"ratings": "e", "shard_size": 20}),
        output,
        small_demo,
        workers=1,
        overwrite=True,
    )
    assert "sha256:" in card.read_text()


def test_card_states(tmp_path):
    from e6ingest.shards.layout import CardState, card_state, mark_card

    card = tmp_path / "README.md"
    text = mark_card("---\nconfigs: []\n---\n", "# out\n\nmade by e6ingest\n")
    for written, state in [
        (text, CardState.OURS),
        (text.replace("\n", "\r\n"), CardState.EDITED),  # an editor's line ends
        (text + "my notes\n", CardState.EDITED),
        (text.replace("made by", "made with"), CardState.EDITED),
        ("# my own dataset\n", CardState.FOREIGN),
        ("x" * 5000 + text, CardState.FOREIGN),  # the mark is looked for at the top only
    ]:
        card.write_bytes(written.encode())
        assert card_state(card) is state, written[:40]
    card.write_bytes(b"\xff\xfe not text")
    assert card_state(card) is CardState.FOREIGN


def test_a_damaged_shard_index_or_tar_json_is_named_and_a_rerun_repairs_it(output, small_demo):
    """An index parquet or indexed-tar JSON damaged beside an intact tar: verify names it
    (it crashed on the index), open_shards refuses it naming it (a bare polars or JSON
    error before), and rerunning the pull writes the shard again, byte for byte (the tar's
    hash alone passed it as complete)."""
    import e6ingest

    index, tar_json = output / "shards" / "00000.parquet", output / "shards" / "00001.json"
    before = {p: p.read_bytes() for p in (index, tar_json)}
    index.write_bytes(before[index][:100])
    tar_json.write_text("{")
    problems = verify_output(output).problems
    assert any("00000.parquet is unreadable" in p for p in problems)
    assert any("00001.json is unreadable" in p for p in problems)
    with pytest.raises(OutputError, match=r"00000\.parquet: an unreadable shard index"):
        list(e6ingest.open_shards(output).samples())
    index.write_bytes(before[index])
    with pytest.raises(OutputError, match=r"00001\.json: an unreadable indexed-tar JSON"):
        list(e6ingest.open_shards(output).batches(4))
    index.write_bytes(before[index][:100])
    pull(make_config({"ratings": "e,q,s", "shard_size": 20}), output, small_demo, workers=1)
    assert {p: p.read_bytes() for p in before} == before
    assert verify_output(output).ok


def test_verify_names_an_unreadable_plan(output):
    plan = output / "plan.parquet"
    plan.write_bytes(plan.read_bytes()[:50])
    assert "plan.parquet is unreadable: not a parquet file" in verify_output(output).problems


def test_a_tar_cut_short_is_named_when_read(output):
    """A partial copy of a tar gave PIL's 'could not create decoder object' mid-epoch."""
    import e6ingest

    tar = output / "shards" / "00000.tar"
    tar.write_bytes(tar.read_bytes()[:2000])
    for read in (lambda s: list(s.samples()), lambda s: list(s.batches(4))):
        with pytest.raises(OutputError, match=r"00000\.tar: ends [\d,]+ bytes short"):
            read(e6ingest.open_shards(output))
    code = main(["export", "kohya", str(output), "--to", str(output.parent / "kohya"), "--quiet"])
    assert code == 2  # one line naming the tar (a tarfile traceback before)
