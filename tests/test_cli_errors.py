"""Ordinary mistakes get one clear line and an exit code that means something; nothing
succeeds at nothing; a subset for CI is one flag; progress and summaries read well."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e6ingest.cli import main
from e6ingest.cli.parsers import build_parser
from e6ingest.pipeline.events import Planned, PlanningStarted, PostsDone


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line.startswith("using the demo")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def mirror_args(small_demo):
    return ["--mirror", str(small_demo)]


def test_out_is_a_file(mirror_args, tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    code, _, err = _run(capsys, "pull", *mirror_args, "--out", str(target), "--quiet")
    assert code == 2 and "is a file" in _one_line(err)
    code, _, err = _run(capsys, "pull", *mirror_args, "--out", str(target / "sub"), "--quiet")
    assert code == 2 and "cannot create" in _one_line(err)


def test_mirror_that_does_not_exist(tmp_path, capsys):
    code, _, err = _run(capsys, "pull", "--mirror", str(tmp_path / "nope"), "--out",
                        str(tmp_path / "out"))  # fmt: skip
    assert code == 2 and "does not exist" in _one_line(err) and "nope" in err
    code, _, err = _run(capsys, "inspect", "--mirror", str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in _one_line(err)


@pytest.mark.parametrize("command", ["pull", "inspect", "captions"])
def test_an_empty_rating_is_refused_not_read_as_every_rating(command, mirror_args, tmp_path,
                                                             capsys):  # fmt: skip
    out = tmp_path / "out"
    where = {"pull": ["--out", str(out)], "captions": ["--out", str(tmp_path / "c.jsonl")]}
    for empty in ("", " , "):
        code, _, err = _run(capsys, command, *mirror_args, "--rating", empty,
                            *where.get(command, []))  # fmt: skip
        assert code == 2 and "names no rating" in _one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_rating_is_refused_by_the_api_too(small_demo):
    from e6ingest import dataset
    from e6ingest.config import ConfigError

    posts = dataset.load_metadata("e621", mirror=small_demo)
    with pytest.raises(ConfigError, match="names no rating"):
        dataset.count(posts, "solo", ratings="")
    assert dataset.count(posts, "solo") == dataset.count(posts, "solo", ratings=())


def test_max_tokens_0_turns_off_a_config_files_budget(tmp_path):
    from e6ingest.cli.parsers import flag_values
    from e6ingest.config import make_config

    toml = tmp_path / "run.toml"
    toml.write_text("[caption]\nmax_tokens = 75\n")
    for flags, budget in (([], 75), (["--max-tokens", "0"], 0), (["--max-tokens", "150"], 150)):
        args = build_parser().parse_args(["captions", "--config", str(toml), *flags])
        assert make_config(flag_values(args)).caption.max_tokens == budget


def test_captions_out_is_a_folder(mirror_args, tmp_path, capsys):
    code, _, err = _run(capsys, "captions", *mirror_args, "--out", str(tmp_path))
    assert code == 2 and "is a folder" in _one_line(err)


def test_captions_never_overwrite_a_file_they_did_not_write(mirror_args, tmp_path, capsys):
    mine = tmp_path / "notes.jsonl"
    mine.write_text('{"my": "notes"}\n')
    code, _, err = _run(capsys, "captions", *mirror_args, "--out", str(mine))
    assert code == 2 and "not a captions file" in _one_line(err)
    assert mine.read_text() == '{"my": "notes"}\n'
    ours = tmp_path / "captions.jsonl"
    assert _run(capsys, "captions", *mirror_args, "--out", str(ours))[0] == 0
    assert _run(capsys, "captions", *mirror_args, "--out", str(ours), "--rating", "e")[0] == 0


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["demo", "--posts", "0", "--out", "x"], "--posts: must be at least 1"),
        (["pull", "--workers", "0", "--out", "x"], "--workers: must be at least 1"),
        (["pull", "--workers", "-2", "--out", "x"], "--workers: must be at least 1"),
        (["pull", "--attempts", "0", "--out", "x"], "--attempts: must be at least 1"),
        (["pull", "--bucket-resolution", "0", "--out", "x"], "--bucket-resolution: must be"),
        (["pull", "--shard-size", "1.5", "--out", "x"], "'1.5' is not a whole number"),
        # numbers too large for what holds them ended in OverflowError, TypeError or a hang
        (["inspect", "MIRROR", "--limit", "99999999999999999999999"], "--limit: must be at most"),
        (["inspect", "MIRROR", "--limit", "9223372036854775807"],
         "--limit must be at most 4,294,967,295"),
        (["pull", "--out", "x", "MIRROR", "--shard-size", "99999999999999999999999"],
         "--shard-size: must be at most"),
        (["pull", "--out", "x", "MIRROR", "--max-tokens", "9223372036854775807"],
         "max_tokens must be 0 (no budget) or within 8..1,000,000"),
        (["pull", "--out", "x", "MIRROR", "--bucket-max", "9223372036854775807"],
         "bucket sides are at most 16,384 pixels"),
        (["pull", "--out", "x", "MIRROR", "--memory-budget", "9223372036854775807"],
         "--memory-budget: must be at most 8,796,093,022,207"),
        (["pull", "--out", "x", "MIRROR", "--workers", "9223372036854775807"],
         "--workers must be within 1..65,536"),
        (["pull", "--sample", "10", "--limit", "5", "MIRROR", "--out", "x"], "one of them"),
        (["pull", "--out", "x", "MIRROR", "--rating", "g"], "its ratings are s (safe)"),
        (["inspect", "--dataset", "danbooru2024", "MIRROR", "--query", "rating:safe"],
         "g (general) and s (sensitive)"),
        (["inspect", "MIRROR", "--query", "order:score order:id"], "stands alone"),
        (["inspect", "MIRROR", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["pull", "--out", "x", "--revision", "deepghs/e621_newest=../../x"],
         "is not a branch, tag or commit"),
        (["pull", "--out", "x", "--revision", "../x=main"], "is not a repository"),
        (["pull", "--out", "x", "--ratings", "e"], "did you mean --rating?"),
        (["pull", "--out", "x", "MIRROR", "--bucket-min", "3000"],
         "--bucket-min 3000 is over --bucket-max 2048"),
        (["inspect", "MIRROR", "--tags", "solo,long hair"],
         "--tags 'long hair': a tag holds no space; write 'long_hair' for one tag, or"),
        (["inspect", "MIRROR", "--tags", "solo,-comic"],
         "--tags '-comic': --tags counts tags, and no tag starts with '-'; for a search, "
         "--query '-comic' --count"),
        (["inspect", "MIRROR", "--tags", "~solo"], "no tag starts with '~'"),
        (["inspect", "MIRROR", "--rating", ""], "rating '' names no rating"),
        (["pull", "--out", "x", "MIRROR", "--ray-address", "10.0.0.1:6379"],
         "--ray-address is the cluster of --executor ray; add --executor ray"),
        (["pull", "--out", "x", "MIRROR", "--bucket-resolution", "10"],
         "--bucket-resolution 10 is under --bucket-step 64: its square bucket would have no"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line(argv, says, small_demo, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [
        a for arg in argv for a in (["--mirror", str(small_demo)] if arg == "MIRROR" else [arg])
    ]
    with pytest.raises(SystemExit) as exit_info:  # argparse's own checks
        code = main(argv)
        raise SystemExit(code)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    line = _one_line(err) if "\n" not in err.strip() else err
    assert says in line, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ('include_deleted = "false"', "include_deleted must be true or false"),
        ("shard_size = 1.5", "shard_size must be a whole number"),
        ("[image]\nquality = true", "quality must be a whole number"),
        ("shard-size = -1", "--shard-size must be at least 1"),
        ("unknown_option = 1", "unknown option"),
        ("sampel = 10", "did you mean 'sample'?"),
        ('workers = "many"', "workers: 'many' is not a whole number"),
        ('overwrite = "yes"', "overwrite must be true or false"),
        ("this is not toml", "cannot read config"),
        # a ValueError, AttributeError and TypeError traceback before
        ('caption = "x"', "caption must be a table ([caption] with its options), not 'x'"),
        ("image = 5", "image must be a table"),
        ("[caption]\nblacklist = [1, 2]", "blacklist must be text or a list of text"),
        ("[caption.variants]\nshort = { meta_filter = [3] }", "meta_filter must be text or"),
        ("sample = 99999999999999999999", "sample must be a whole number that fits 64 bits"),
    ],
)
def test_config_file_types_are_checked(toml, says, mirror_args, tmp_path, capsys):
    config = tmp_path / "pull.toml"
    config.write_text(toml)
    code, _, err = _run(capsys, "pull", *mirror_args, "--config", str(config), "--out",
                        str(tmp_path / "out"))  # fmt: skip
    assert code == 2 and says in err and "pull.toml" in err
    assert "Traceback" not in err


def test_small_messages_a_new_user_meets(mirror_args, tmp_path, capsys):
    code, _, err = _run(capsys, "verify", str(tmp_path / "nowhere"))
    assert code == 2 and "is not a folder" in _one_line(err)
    code, _, err = _run(capsys, "inspect", *mirror_args, "--query", "score>=50", "--count")
    assert code == 0 and "did you mean score:>=50?" in err
    code, out, _ = _run(capsys, "index", *mirror_args)
    code, out, _ = _run(capsys, "index", *mirror_args)
    assert code == 0 and "already built" in out and "built in" not in out
    code, _, err = _run(capsys, "captions", *mirror_args, "--limit", "1", "--out",
                        str(tmp_path / "one.jsonl"))  # fmt: skip
    assert code == 0 and "1 caption written" in err


def test_every_flag_is_a_config_key(mirror_args, tmp_path, capsys, monkeypatch):
    """Flags that are not caption, image or bucket options (workers, memory-budget...) are
    keys too; a key of another command's flags is left alone; the command line wins."""
    from e6ingest.cli import parsers

    seen = {}
    real = parsers._run_options_from

    def spy(values, args, where):
        real(values, args, where)
        seen.update(
            workers=getattr(args, "workers", None),
            memory_budget=getattr(args, "memory_budget", None),
        )

    monkeypatch.setattr(parsers, "_run_options_from", spy)
    config = tmp_path / "pull.toml"
    config.write_text('workers = 1\nmemory-budget = 700\nsample = 5\nrating = "e"\n')
    code, _, _ = _run(capsys, "pull", *mirror_args, "--config", str(config), "--out",
                      str(tmp_path / "out"), "--quiet", "--workers", "2")  # fmt: skip
    assert code == 0 and seen == {"workers": 2, "memory_budget": 700}
    code, out, _ = _run(capsys, "inspect", *mirror_args, "--config", str(config), "--count")
    assert code == 0 and out.strip() == "5"  # workers: a pull flag, ignored here


@pytest.mark.slow
def test_config_file_takes_the_flag_names(mirror_args, tmp_path, capsys):
    config = tmp_path / "pull.toml"
    config.write_text('rating = "e"\nshard-size = 7\nquality = 80\n')
    out = tmp_path / "out"
    code, _, _ = _run(capsys, "pull", *mirror_args, "--config", str(config), "--out", str(out),
                      "--quiet", "--workers", "1")  # fmt: skip
    assert code == 0
    saved = json.loads((out / "manifest.json").read_text())["config"]
    assert (saved["ratings"], saved["shard_size"], saved["image"]["quality"]) == (["e"], 7, 80)


def test_manifest_with_wrong_types(mirror_args, tmp_path, capsys):
    manifest = tmp_path / "mine.toml"
    manifest.write_text(
        'name = "x"\nsite = "e621"\ngated = "false"\n[[metadata]]\nrepo = "o/m"\n'
        'path = "m.parquet"\nschema = "e621_newest"\n[[images]]\nrepo = "o/i"\n'
        'tar = "{shard}.tar"\nindex = "{shard}.json"\n'
    )
    code, _, err = _run(capsys, "pull", *mirror_args, "--dataset", str(manifest), "--out",
                        str(tmp_path / "out"))  # fmt: skip
    assert code == 2 and "gated must be true or false" in _one_line(err)


def test_a_hub_500_on_the_metadata_file_is_exit_3(small_demo, tmp_path, capsys, monkeypatch):
    from tests.hubserver import Faults, HubServer

    monkeypatch.setenv("E6INGEST_CACHE", str(tmp_path / "cache"))
    with HubServer(small_demo, Faults(always_fail=(r"\.parquet$",))) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        code, _, err = _run(capsys, "pull", "--out", str(tmp_path / "out"), "--attempts", "2",
                            "--quiet")  # fmt: skip
    assert code == 3 and "metadata file" in _one_line(err) and "HTTP 500" in err


@pytest.mark.slow
def test_a_metadata_download_that_would_fill_the_disk_is_exit_4(
    small_demo, tmp_path, capsys, monkeypatch
):
    import shutil

    from e6ingest.sources import hubhttp
    from tests.hubserver import HubServer

    real = shutil.disk_usage
    left = {"free": 300 << 20}

    def usage(path):  # the disk fills as the download writes
        found = real(path)
        left["free"] -= 40 << 20
        return found._replace(free=max(0, left["free"]))

    monkeypatch.setattr(hubhttp, "DISK_CHECK_EVERY", 1)
    monkeypatch.setattr(hubhttp.shutil, "disk_usage", usage)
    monkeypatch.setenv("E6INGEST_CACHE", str(tmp_path / "cache"))
    with HubServer(small_demo) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        code, _, err = _run(capsys, "pull", "--out", str(tmp_path / "out"), "--quiet")
    assert code == 4 and "disk full" in _one_line(err)
    assert not list((tmp_path / "cache").rglob("*.parquet"))  # nothing half-written kept


def test_disk_full_is_one_line_and_the_rerun_continues(mirror_args, tmp_path, capsys,
                                                       monkeypatch):  # fmt: skip
    from e6ingest.shards import writer

    out = tmp_path / "out"
    real_add = writer.ShardWriter.add
    calls = {"n": 0}

    def full(self, sample):
        calls["n"] += 1
        if calls["n"] == 25:
            raise OSError(errno.ENOSPC, "No space left on device", str(self._tmp_tar))
        return real_add(self, sample)

    monkeypatch.setattr(writer.ShardWriter, "add", full)
    args = ["pull", *mirror_args, "--out", str(out), "--quiet", "--workers", "1",
            "--shard-size", "10"]  # fmt: skip
    code, _, err = _run(capsys, *args)
    line = _one_line(err)
    assert code == 4 and line.startswith("e6ingest pull: error: disk full at ")
    assert "free space and rerun the same command to continue" in line
    monkeypatch.setattr(writer.ShardWriter, "add", real_add)
    code, out_text, _ = _run(capsys, *args)
    assert code == 0 and "already complete" in out_text


def test_a_folder_polars_may_not_write_is_no_bug(mirror_args, tmp_path, capsys, monkeypatch):
    """polars raises PermissionError without an errno, the path in its text (as for a
    read-only folder): one line, exit 4, never "a bug in e6ingest"."""
    import polars as pl

    def refused(self, path, *args, **kwargs):
        where = getattr(path, "name", path)  # a path, or the file opened at it
        raise PermissionError(f"Operation not permitted (os error 1): {where}")

    monkeypatch.setattr(pl.LazyFrame, "sink_parquet", refused)  # a selection copied once
    monkeypatch.setattr(pl.DataFrame, "write_ndjson", refused)  # or read a batch at a time
    out = tmp_path / "captions.jsonl"
    code, _, err = _run(capsys, "captions", *mirror_args, "--out", str(out))
    line = _one_line(err)
    assert code == 4 and "bug" not in line and "Traceback" not in err
    assert line.startswith(f"e6ingest captions: error: cannot write {tmp_path}")
    assert line.endswith(": Operation not permitted") and not out.exists()


def test_os_errors_without_a_number_are_read_from_their_text():
    from e6ingest.cli import failure

    full = OSError("No space left on device (os error 28): /data/out/x.parquet")
    assert failure(full) == (4, "disk full at /data/out/x.parquet; free space and rerun the "
                                "same command to continue")  # fmt: skip
    assert failure(OSError("Read-only file system (os error 30)")) == (
        4, "cannot write: Read-only file system")  # fmt: skip
    assert failure(OSError("Connection reset by peer (os error 104): x")) is None  # not ours
    assert failure(OSError("something else")) is None


def test_a_cache_that_is_a_file_is_named(mirror_args, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    cache.write_text("mine")
    monkeypatch.setenv("E6INGEST_CACHE", str(cache))
    code, _, err = _run(capsys, "inspect", *mirror_args, "--query", "solo", "--count")
    assert code == 2 and "Traceback" not in err
    assert _one_line(err) == (
        f"e6ingest inspect: error: $E6INGEST_CACHE {cache} is a file, "
        "not a folder; set E6INGEST_CACHE to a folder e6ingest may fill"
    )
    assert cache.read_text() == "mine"


def test_log_json_reports_errors(mirror_args, tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    code, out, err = _run(capsys, "pull", *mirror_args, "--out", str(target), "--log-json")
    assert code == 2 and err == ""
    event = json.loads(out.strip().splitlines()[-1])
    assert event["event"] == "error" and event["exit_code"] == 2 and "is a file" in event["message"]


def _e6ingest(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "e6ingest", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)  # fmt: skip


def test_output_piped_to_head(demo_root):
    proc = _e6ingest("captions", "--mirror", str(demo_root), "--preview", "1000")
    proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does
    err = proc.stderr.read()
    assert proc.wait(60) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err


@pytest.mark.slow
def test_ctrl_c_is_one_line_exit_130_and_the_rerun_finishes(demo_root, tmp_path):
    out = tmp_path / "out"
    args = ["pull", "--mirror", str(demo_root), "--out", str(out), "--quiet", "--workers", "2",
            "--shard-size", "50"]  # fmt: skip
    proc = _e6ingest(*args, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("shards/*.stats.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the pull ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    line = _one_line(err)
    assert re.fullmatch(r"e6ingest pull: error: interrupted; \d+ of \d+ shards complete; the next "
                        r"run writes the other [\d,]+ posts; rerun the same command to "
                        r"continue", line), line  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "e6ingest", *args], capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "already complete" in done.stdout


# -- --sample and --limit: the CI smoke test on a subset ----------------------------------


@pytest.mark.slow
def test_sample_is_the_same_posts_for_the_same_seed(mirror_args, tmp_path, capsys):
    def keys(out: Path, *extra: str) -> list[str]:
        code, _, _ = _run(capsys, "pull", *mirror_args, "--rating", "e,q,s", "--sample", "20",
                          "--out", str(out), "--quiet", "--workers", "1", *extra)  # fmt: skip
        assert code == 0
        import polars as pl

        return sorted(pl.read_parquet(out / "plan.parquet")["id"].to_list())

    first, again = keys(tmp_path / "a"), keys(tmp_path / "b")
    other = keys(tmp_path / "c", "--seed", "1")
    assert len(first) == 20 and first == again and first != other
    code, out, _ = _run(capsys, "inspect", *mirror_args, "--rating", "e,q,s", "--sample", "20",
                        "--count")  # fmt: skip
    assert code == 0 and out.strip() == "20"


def test_limit_follows_the_query_order(mirror_args, capsys):
    code, out, _ = _run(capsys, "captions", *mirror_args, "--query", "order:id_desc",
                        "--limit", "3", "--preview", "3")  # fmt: skip
    keys = [line.rstrip(":") for line in out.splitlines() if line.startswith("e621/")]
    ids = [int(key.split("/")[1]) for key in keys]
    assert code == 0 and len(ids) == 3 and ids == sorted(ids, reverse=True)


# -- progress and summaries ----------------------------------------------------------------


@pytest.mark.slow
def test_progress_moves_per_post_before_the_shard_ends(small_demo, tmp_path):
    from e6ingest.config import make_config
    from e6ingest.pipeline import progress, pull

    events = []
    slow = progress.SEND_EVERY_SECONDS
    progress.SEND_EVERY_SECONDS = 0.0  # every post sent: what the bar's counter shows
    try:
        pull(make_config({"ratings": "e,q,s", "shard_size": 1000}), tmp_path / "out",
             small_demo, workers=1, progress=events.append)  # fmt: skip
    finally:
        progress.SEND_EVERY_SECONDS = slow
    names = [e.name for e in events]
    posts = [e for e in events if isinstance(e, PostsDone)]
    planned = next(e for e in events if isinstance(e, Planned))
    assert len(posts) == planned.posts_todo  # one event per post
    assert names.index("posts") < names.index("shard")


def test_bar_counts_posts(capsys):
    import io

    from e6ingest.cli.progress import BarReporter

    stream = io.StringIO()
    bars = BarReporter(stream)
    bars(PlanningStarted())
    bars(Planned(selected=5, shards=1, todo=1, posts_todo=5))
    bars(PostsDone(written=2, failed=1))
    assert bars.bars["posts"].n == 3 and bars.bars["shards"].n == 0
    bars.close()


@pytest.mark.slow
def test_summary_points_at_failures_and_counts_this_run(mirror_args, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["pull", *mirror_args, "--out", str(out), "--quiet", "--workers", "1",
            "--shard-size", "100"]  # fmt: skip
    code, text, _ = _run(capsys, *args)
    assert code == 0
    assert f"failures: {out / 'failures.parquet'}" in text
    assert "  e.g. " in text and "1 shard (0 already complete)" in text
    assert "over 75: SDXL trainers read 75" in text and "--max-tokens 75" in text
    code, text, _ = _run(capsys, *args)
    assert "this run: 0 samples in" in text and "0.0 samples/s" in text
    code, text, _ = _run(capsys, *args[:4], str(tmp_path / "fits"), *args[5:],
                         "--max-tokens", "75")  # fmt: skip
    assert code == 0 and "over 75" not in text  # a budget fits them: nothing to say


def test_demo_says_where_it_is_and_that_it_breaks_posts(tmp_path, capsys):
    code, out, _ = _run(capsys, "demo", "--out", str(tmp_path / "demo"), "--posts", "5")
    assert code == 0 and str(tmp_path / "demo") in out and "broken on purpose" in out


# -- help and the public API ----------------------------------------------------------------


def test_every_flag_has_help_with_its_default_and_every_command_examples():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(commands) == {"pull", "inspect", "captions", "index", "verify", "export", "demo"}
    for name, sub in commands.items():
        assert "examples:" in sub.epilog and "exit codes:" in sub.epilog, name
        for action in sub._actions:
            if action.dest == "help" or not action.option_strings:
                continue
            text = action.help or ""
            assert (
                "default" in text or "required" in text or action.required or ("an empty" in text)
            ), f"{name} {action.option_strings}: {text!r}"


def test_readme_lists_every_command_and_the_exit_codes():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for command in ("pull", "inspect", "captions", "verify", "export kohya", "demo"):
        assert f"e6ingest {command}" in readme
    for code in ("130", "141", "| 3 |"):
        assert code in readme
    assert 'rating = "e,q,s"' in readme and "shard-size" in readme


def test_the_public_api_is_listed_and_documented():
    import e6ingest

    for name in ("pull", "dataset", "open_shards", "make_config", "verify_output"):
        assert name in dir(e6ingest) and name in e6ingest.__doc__
        assert getattr(e6ingest, name).__doc__


@pytest.mark.parametrize("name", ["max_pixels", "max_source_pixels"])
@pytest.mark.parametrize("where", ["flag", "toml"])
def test_a_pixel_budget_given_in_megapixels_is_refused(name, where, mirror_args, tmp_path,
                                                       capsys):  # fmt: skip
    """``--max-pixels 4`` meant 4 MP: it would scale every image to 2x2 pixels."""
    if where == "flag":
        given = [f"--{name.replace('_', '-')}", "4"]
    else:
        config = tmp_path / "pull.toml"
        config.write_text(f"[image]\n{name} = 4\n")
        given = ["--config", str(config)]
    out = tmp_path / "out"
    code, _, err = _run(capsys, "pull", *mirror_args, *given, "--out", str(out))
    line = _one_line(err)
    assert code == 2 and f"{name} counts pixels" in line and "4 is less than a 64x64" in line
    assert not out.exists()


def test_captions_out_dash_writes_standard_output(demo_root, tmp_path):
    """``--out -`` is standard output (it wrote a file named ``-``): the same lines as the
    file, nothing left behind, and a reader that leaves early ends it as ``| head`` does."""
    file = tmp_path / "captions.jsonl"
    common = ["captions", "--mirror", str(demo_root), "--rating", "s"]
    assert _e6ingest(*common, "--out", str(file)).wait(60) == 0
    proc = _e6ingest(*common, "--out", "-", cwd=tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "written to standard output" in err
    assert out == file.read_text() and out.count("\n") > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["captions.jsonl"]
    proc = _e6ingest("captions", "--mirror", str(demo_root), "--out", "-", cwd=tmp_path)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(60) == 141 and "Traceback" not in err
    code = main(["captions", "--mirror", str(demo_root), "--out", "-", "--preview", "2"])
    assert code == 2


def test_a_config_file_that_is_no_text_is_one_line(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_bytes(b"\xff\xfe rating = 'e'")
    for flag in ("--config", "--caption-config"):
        code, _, err = _run(capsys, "captions", "--demo", flag, str(config), "--preview", "1")
        assert code == 2 and "run.toml: cannot read config" in _one_line(err)
