"""The command line's flags: parsers of every command (each flag with its help and
default, each command with examples), and flags mapped onto the config model."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TypeAlias

from e6ingest import __version__
from e6ingest.cli.flags import (
    add_caption_flags,
    bucket_flags,
    count,
    hub_flags,
    image_flags,
    megabytes,
    report_flags,
    selection_flags,
    source_flags,
    whole,
)
from e6ingest.config import FLAG_OPTIONS, ConfigError, merge, read_toml

EXIT_CODES = """exit codes:
  0    done
  1    done, but some posts failed for a reason a rerun may fix (--retry-failed), or
       verify/export found problems
  2    usage or input error (flags, config, query, manifest, output folder, empty selection)
  3    a source or the cluster is unavailable (the Hub unreachable, no access, a metadata
       file not served, a Ray cluster that cannot be joined)
  4    cannot write (disk full, no permission)
  70   a bug in e6ingest (the traceback is printed)
  130  interrupted (Ctrl-C); rerun the same command to continue
  141  output closed early (e.g. piped into head)"""
# Flags whose argparse name is not their flag name: dest -> flag name (FLAG_OPTIONS key).
_DESTS = {"verify_images": "verify", "revisions": "revision"}
# Flags that set an option to the opposite of their presence.
_INVERTED = {"allow_animation": ("image", "allow_animation"),
             "underscores_to_spaces": ("caption", "underscores_to_spaces")}  # fmt: skip


# Flags whose value may start with "-": argparse takes ``--query -comic`` for two flags.
DASHED_VALUES = ("--query",)


def with_dashed_values(argv: Sequence[str]) -> list[str]:
    """``argv`` with each value of a ``DASHED_VALUES`` flag that starts with one "-"
    (``--query -comic``, a search for posts without ``comic``) joined to its flag
    (``--query=-comic``), so argparse reads it as the value it is."""
    out: list[str] = []
    for word in argv:
        if out and out[-1] in DASHED_VALUES and word.startswith("-") and not word.startswith("--"):
            out[-1] = f"{out[-1]}={word}"
        else:
            out.append(word)
    return out


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the command and its --help."""

    def parse_known_args(  # type: ignore[override]  # typeshed overloads it on namespace
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._argv = with_dashed_values(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self._argv, namespace)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}{self._suggestion(message)} "
                         f"(see {self.prog} --help)\n")  # fmt: skip
        sys.exit(2)

    def _suggestion(self, message: str) -> str:
        """For an unknown flag, the closest flag of the command (``--ratings``: --rating)."""
        if not message.startswith("unrecognized arguments:"):
            return ""
        given = [w.split("=")[0] for w in message.split(":", 1)[1].split() if w.startswith("--")]
        commands = [a for a in self._actions if isinstance(a, argparse._SubParsersAction)]
        parser = self
        for action in commands:  # the command's own flags, not the top level's
            chosen = next((w for w in getattr(self, "_argv", []) if w in action.choices), None)
            parser = action.choices.get(chosen, self) if chosen else self
        flags = [f for a in parser._actions for f in a.option_strings if f.startswith("--")]
        for flag in given:
            near = difflib.get_close_matches(flag, flags, n=1, cutoff=0.7)
            if near:
                return f"; did you mean {near[0]}?"
        return ""


Commands: TypeAlias = "argparse._SubParsersAction[Parser]"  # the subcommands' parsers


def _command(sub: Commands, name: str, summary: str, examples: str) -> Parser:
    parser: Parser = sub.add_parser(
        name, help=summary, description=summary,
        epilog=f"examples:\n{examples}\n\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    return parser


def _pull_parser(sub: Commands) -> None:
    p = _command(
        sub,
        "pull",
        "select posts and write training-ready webdataset shards",
        """\
  e6ingest pull --demo --rating e,q,s --out out/
  e6ingest pull --rating e,q,s --query "solo -comic" --out /data/e621/
  e6ingest pull --rating e,q,s --sample 1000 --seed 0 --out smoke/     # a CI subset
  e6ingest pull --dataset danbooru2024 --mirror /mnt/hf --rating g,s --out out/ --workers 16
  e6ingest pull --config pull.toml --out out/                          # same keys as flags""",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (required)")
    p.add_argument("--config", metavar="FILE",
                   help="TOML file with the same options as the flags; flags win "
                   "(default: none)")  # fmt: skip
    source_flags(p)
    selection_flags(p)
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="write an empty output when nothing is selected (default: exit 2)",
    )
    p.add_argument(
        "--shard-size",
        type=count,
        metavar="N",
        help="samples per shard (default: 1000, fewer for pulls under 32,000 posts: at least "
        "32 shards, so that many GPU workers can split them and Ctrl-C redoes little)",
    )
    p.add_argument("--drop-duplicates", action="store_true", default=None,
                   help="keep one post of each file (md5) in the selection, the lowest id; the "
                   "others are recorded as failed, duplicate (default: keep all)")  # fmt: skip
    p.add_argument("--workers", type=count, metavar="N", help="processes (default: every core)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where shard tasks run: processes here, or a Ray cluster "
                   "(default: local)")  # fmt: skip
    p.add_argument("--ray-address", metavar="ADDR",
                   help="with --executor ray: the Ray cluster to use (default: $RAY_ADDRESS, "
                   "else a local Ray started for the run)")  # fmt: skip
    p.add_argument("--memory-budget", type=megabytes, metavar="MB",
                   help="memory images being decoded may take at once, over all workers "
                   "(default: half of this machine's memory)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run of another configuration in --out (only its "
                   "own files) (default: refuse)")  # fmt: skip
    p.add_argument("--retry-failed", action="store_true",
                   help="also rewrite the shards holding posts that failed for a retryable "
                   "reason (default: keep complete shards)")  # fmt: skip
    report_flags(p)
    image_flags(p)
    add_caption_flags(p)
    bucket_flags(p)
    hub_flags(p)


def _inspect_parser(sub: Commands) -> None:
    p = _command(
        sub,
        "inspect",
        "count and describe a selection of the metadata",
        """\
  e6ingest inspect --demo
  e6ingest inspect --rating e --query "solo -comic" --count
  e6ingest inspect --dataset danbooru2024 --metadata metadata.parquet --json
  e6ingest inspect --demo --variants --max-tokens 225   # token lengths of each variant""",
    )
    p.add_argument(
        "--config", metavar="FILE", help="TOML file with the same options as pull (default: none)"
    )
    source_flags(p, metadata=True)
    selection_flags(p)
    p.add_argument(
        "--top", type=whole, default=10, metavar="N", help="top tags per category (default: 10)"
    )
    p.add_argument("--tags", metavar="LIST",
                   help="also count the selected posts having each of these tags or wildcards, "
                   "e.g. solo,comic,canid* (default: none)")  # fmt: skip
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON document (default: text)")
    out.add_argument(
        "--count",
        action="store_true",
        help="print only the number selected (default: the whole description)",
    )
    add_caption_flags(p)


def _captions_parser(sub: Commands) -> None:
    p = _command(
        sub,
        "captions",
        "write the captions of a selection, without images",
        """\
  e6ingest captions --demo --rating e,q,s --query solo --preview 5
  e6ingest captions --rating e,q,s --people-first --out captions.jsonl""",
    )
    p.add_argument(
        "--config", metavar="FILE", help="TOML file with the same options as pull (default: none)"
    )
    source_flags(p, metadata=True)
    selection_flags(p)
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="write an empty file when nothing is selected (default: exit 2)",
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        help="JSONL file: id, key, caption, tags, nl per line; - for standard output "
        "(default: none)",
    )
    p.add_argument(
        "--preview", type=whole, default=0, metavar="N", help="print N examples (default: 0)"
    )
    add_caption_flags(p)


def _index_parser(sub: Commands) -> None:
    p = _command(
        sub,
        "index",
        "build the cached tag index of a dataset's metadata (queries build it when needed)",
        """\
  e6ingest index --demo
  e6ingest index --dataset danbooru2024
  e6ingest index --metadata posts.parquet""",
    )
    source_flags(p, metadata=True)


def _demo_parser(sub: Commands) -> None:
    p = _command(
        sub,
        "demo",
        "write the synthetic demo mirror",
        """\
  e6ingest demo --out demo/
  e6ingest pull --mirror demo/ --rating e,q,s --out out/""",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="an empty or new folder")
    p.add_argument(
        "--posts", type=count, default=1000, metavar="N", help="posts per site (default: 1000)"
    )
    p.add_argument("--seed", type=whole, default=0, metavar="S", help="(default: 0)")


def _verify_parser(sub: Commands) -> None:
    p = _command(
        sub,
        "verify",
        "check a pull's output against its manifest",
        """\
  e6ingest verify out/
  e6ingest verify out/ --deep""",
    )
    p.add_argument("out", metavar="OUT", help="the --out folder of a pull")
    p.add_argument(
        "--deep",
        action="store_true",
        help="also decode every image (default: sizes, hashes and layout)",
    )


def _export_parser(sub: Commands) -> None:
    p = _command(
        sub,
        "export",
        "extract a pull's output for a trainer",
        """\
  e6ingest export kohya out/ --to train/
  e6ingest export kohya out/ --to train/ --jsonl""",
    )
    p.add_argument("format", choices=("kohya",), help="kohya: sd-scripts fine-tuning layout")
    p.add_argument("out", metavar="OUT", help="the --out folder of a pull")
    p.add_argument(
        "--to",
        required=True,
        metavar="DIR",
        help="an empty folder, or an earlier export of e6ingest's",
    )
    p.add_argument("--jsonl", action="store_true",
                   help="metadata.jsonl (image_path per line; sd-scripts >= 0.10 only) "
                   "(default: metadata.json, read by 0.9 and 0.10)")  # fmt: skip
    p.add_argument("--absolute", action="store_true",
                   help="absolute image paths in the metadata (default: relative to the "
                   "export folder)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: a bar)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``e6ingest`` command."""
    parser = Parser(
        prog="e6ingest",
        description="Public booru datasets (danbooru, e621) to training-ready webdataset shards.",
        epilog=f"Run e6ingest COMMAND --help for a command's flags and examples.\n\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"e6ingest {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=Parser)  # fmt: skip
    _pull_parser(sub)
    _inspect_parser(sub)
    _captions_parser(sub)
    _index_parser(sub)
    _verify_parser(sub)
    _export_parser(sub)
    _demo_parser(sub)
    return parser


def _run_options_from(values: dict[str, Any], args: argparse.Namespace, where: str) -> None:
    """Take the keys of a config file that are flags of the command but not of the config
    model (``workers``, ``memory-budget``, ``overwrite``...) into ``args`` where the command
    line left them unset (flags win); a value is checked as its flag checks it."""
    parser = build_parser()
    command = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    actions = {a.dest: a for a in command.choices[args.command]._actions}
    elsewhere = {a.dest for c in command.choices.values() for a in c._actions} - set(actions)
    for key in [k for k in values if not isinstance(values[k], dict)]:
        dest = str(key).replace("-", "_")
        if dest in FLAG_OPTIONS or dest in _DESTS.values():
            continue
        if dest in elsewhere:  # another command's flag (a file shared by pull and inspect)
            values.pop(key)
            continue
        action = actions.get(dest)
        if action is None or dest in ("command", "help"):
            continue
        value = values.pop(key)
        if getattr(args, dest) not in (None, False, action.default):
            continue  # given on the command line: it wins
        if action.nargs == 0:  # a switch
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: {key} must be true or false, not {value!r}")
        elif action.type is not None:
            try:
                value = action.type(str(value))
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise ConfigError(f"{where}: {key}: {exc}") from None
        setattr(args, dest, value)


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config a command's flags give: ``--config`` file, then ``--caption-config``,
    then the flags themselves, nested like the TOML file. Keys of the file that are flags of
    the command but not config options (``workers``...) go into ``args`` unless given."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values = read_toml(args.config)
        _run_options_from(values, args, args.config)
    if getattr(args, "caption_config", None):
        caption = read_toml(args.caption_config)
        caption = caption.get("caption", caption)
        values = merge(values, {"caption": caption})
    return merge(values, config_values(args))


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config options given as flags, nested like the TOML file."""
    values: dict[str, Any] = {}
    for dest, value in vars(args).items():
        flag = _DESTS.get(dest, dest)
        target = FLAG_OPTIONS.get(flag) or _INVERTED.get(dest)
        if value is None or target is None:
            continue
        table, name = target
        if table is None:
            values[name] = value
        else:
            values.setdefault(table, {})[name] = value
    return values
