"""What every stage shares, importing none of them: why a post failed (``FailureKind``,
``PostFailure``), the ratings of each site, and the one way e6ingest writes a file
(``atomic_file``: a temporary name of its own, fsync, rename)."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import numbers
import os
import re
import secrets
import signal
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, get_args, get_type_hints


class FailureKind(str, Enum):
    """Why a post did not make it into the output."""

    MISSING = "missing"  # not in its shard (deleted, video, failed upstream)
    CORRUPT = "corrupt"  # bytes do not match the index's size or sha256, or a bad index entry
    UNAVAILABLE = "unavailable"  # the source could not be read (I/O, network, absent shard)
    UNDECODABLE = "undecodable"  # not a readable image (truncated, empty, not an image)
    TOO_LARGE = "too_large"  # over the source pixel limit or the decode memory budget
    UNSUPPORTED = "unsupported"  # a post with no image (video, flash) or a refused animation
    INVALID = "invalid"  # a metadata row that cannot be used (no id)
    DUPLICATE = "duplicate"  # the same file (md5) as another selected post, which is kept

    @property
    def retryable(self) -> bool:
        """Whether trying the same post again may succeed."""
        return self is FailureKind.UNAVAILABLE


_SECRETS: set[str] = set()  # token values of this process, never stored or printed
_SECRET_SHAPES = re.compile(r"hf_[A-Za-z0-9]{8,}|(?i:\b(?:bearer|token)\s+)[^\s'\",;]+")


def register_secret(value: str | None) -> None:
    """Keep ``value`` (an access token) out of every message :func:`redact` cleans."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def redact(text: str) -> str:
    """``text`` without the tokens of this process, Hub-shaped tokens and what follows
    ``Bearer``/``token``: for every message e6ingest stores or prints."""
    for secret in _SECRETS:
        text = text.replace(secret, "***")
    return _SECRET_SHAPES.sub(lambda m: m.group().split()[0] + " ***" if " " in m.group()
                              else "hf_***", text)  # fmt: skip


class PostFailure(Exception):
    """One post failed at one stage; the run records it and goes on. Picklable, so it
    crosses process (and machine) boundaries as it is. Its message never holds a token
    (:func:`redact`)."""

    def __init__(self, kind: FailureKind | str, message: str, stage: str = "fetch"):
        message = redact(message)
        super().__init__(message)
        self.kind = FailureKind(kind)
        self.message = message
        self.stage = stage

    def __reduce__(self) -> tuple[type[PostFailure], tuple[str, str, str]]:
        return (PostFailure, (self.kind.value, self.message, self.stage))

    def __repr__(self) -> str:
        return f"PostFailure({self.kind.value!r}, {self.message!r}, {self.stage!r})"


# Rating letters of each site, with their names. danbooru's "s" is "sensitive" since 2022.
SITE_RATINGS: dict[str, dict[str, str]] = {
    "danbooru": {"g": "general", "s": "sensitive", "q": "questionable", "e": "explicit"},
    "e621": {"s": "safe", "q": "questionable", "e": "explicit"},
}
RATING_ORDER = ("g", "s", "q", "e")


class RatingError(ValueError):
    """A rating that the site does not have; the message lists the ones it has."""


def parse_ratings(text: str | Iterable[str] | None, site: str | None = None) -> tuple[str, ...]:
    """``"e,q,s"`` (or names such as ``explicit``) as the tuple ``("e", "q", "s")``.

    With ``site``, only that site's ratings are accepted: e621 has no ``g``, and on danbooru
    ``safe`` is refused because its ``s`` means sensitive. Without it, any site's.
    """
    if text is None:
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    sites = [site] if site in SITE_RATINGS else list(SITE_RATINGS)
    names: dict[str, str] = {}
    for name in sites:
        for letter, word in SITE_RATINGS[name].items():
            names.setdefault(letter, letter)
            names.setdefault(word, letter)
    out: list[str] = []
    for item in (str(i).strip().lower() for i in items):
        if not item:
            continue
        if item not in names:
            raise RatingError(_unknown_rating(item, site))
        if names[item] not in out:
            out.append(names[item])
    return tuple(out)


def _unknown_rating(item: str, site: str | None) -> str:
    def listing(name: str) -> str:
        return ", ".join(f"{k} ({v})" for k, v in SITE_RATINGS[name].items())

    if site == "danbooru" and item == "safe":
        return (
            "danbooru has no rating 'safe': since 2022 its ratings are g (general) and "
            "s (sensitive) where 'safe' used to be; use g, or g,s"
        )
    if site in SITE_RATINGS:
        return f"unknown rating {item!r} for {site}; its ratings are {listing(site)}"
    every = "; ".join(f"{name}: {listing(name)}" for name in SITE_RATINGS)
    return f"unknown rating {item!r} (ratings are {every})"


# Temporary files: ``.{name}.{pid}-{random}.tmp`` beside their target. The random part
# makes two writers never share one; the shape, with a target name e6ingest writes there,
# proves a leftover is e6ingest's.
TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.\d+-[0-9a-f]{12}\.tmp$")


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside ``path``, unique to this writer."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(6)}.tmp")


def is_temp_name(name: str, targets: Callable[[str], object] | None = None) -> bool:
    """Whether a file name is one of e6ingest's temporary names: of a target that
    ``targets(target)`` accepts, when given (a file e6ingest writes in that folder)."""
    match = TEMP_NAME.match(name)
    return match is not None and (targets is None or bool(targets(match["target"])))


def is_our_temp(entry: os.DirEntry[str], targets: Callable[[str], object]) -> bool:
    """Whether a folder entry is a temporary e6ingest left: a plain file with one link
    (a user's file named alike, a link or a folder is not), named as e6ingest names the
    temporaries of a file ``targets`` accepts."""
    return (
        entry.is_file(follow_symlinks=False)
        and is_temp_name(entry.name, targets)
        and entry.stat(follow_symlinks=False).st_nlink == 1
    )


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_new(path: Path) -> BinaryIO:
    """Open ``path`` for writing only if nothing (not even a symlink) is there."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return os.fdopen(os.open(path, flags, 0o644), "wb")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], durable: bool = True) -> Iterator[BinaryIO]:
    """Write ``path`` through a temporary file that appears under its name only when the
    block ends without error (flushed, fsynced and renamed; the folder fsynced too with
    ``durable``). The temporary is created exclusively and never through a symlink, and
    the rename replaces a symlink at ``path`` instead of following it."""
    path = Path(path)
    tmp = temp_path(path)
    handle = create_new(tmp)
    try:
        with handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def write_atomic(path: str | os.PathLike[str], data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path, durable) as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path for a writer that wants a file name (polars, pyarrow), renamed to
    ``path`` when the block ends without error, removed otherwise."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


# Kill points: where a run may be killed to check that the next run finishes its work
# (``E6INGEST_KILL_POINT=name`` or ``name:N``, the N-th time this process reaches it). The
# whole process group is killed at once, as a power cut or the OOM killer would.
KILL_POINT_VARIABLE = "E6INGEST_KILL_POINT"
_kill_counts: dict[str, int] = {}


def kill_point(name: str) -> None:
    """Kill this run here when :data:`KILL_POINT_VARIABLE` names this point (a test of
    what a rerun does with what the killed run left); nothing otherwise."""
    wanted = os.environ.get(KILL_POINT_VARIABLE)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _kill_counts[name] = _kill_counts.get(name, 0) + 1
    if _kill_counts[name] >= int(nth or 1):
        os.killpg(os.getpgid(0), signal.SIGKILL)


PLAIN_TYPES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _fits(expected: type, value: Any) -> bool:
    if expected is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):  # True is an int to Python, not a count to a user
        return False
    kind = {int: numbers.Integral, float: numbers.Real}.get(expected, expected)
    return isinstance(value, kind)


def _plain(annotation: Any) -> tuple[type | None, bool]:
    """The plain type (bool, int, float, str) of a field's annotation, and whether None is
    allowed (``int | None``); (None, False) for any other annotation."""
    if annotation in PLAIN_TYPES:
        return annotation, False
    args = get_args(annotation)
    if len(args) == 2 and type(None) in args:
        other = args[0] if args[1] is type(None) else args[1]
        if other in PLAIN_TYPES:
            return other, True
    return None, False


def _texts(value: Any) -> bool:
    """Whether ``value`` is what a field of texts takes: text, or a list of texts."""
    return isinstance(value, str) or (
        isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
    )


def type_error(cls: type, values: dict[str, Any]) -> str | None:
    """What is wrong with the first of ``values`` whose type is not its field's in the
    dataclass ``cls``, for its plain fields (bool, int, float, str, or one of them or None):
    ``"name must be true or false, not 'no'"``; None when every value fits (numpy numbers
    count as numbers)."""
    types = _field_types(cls)
    for name, value in values.items():
        if types.get(name) == tuple[str, ...] and not _texts(value):
            return f"{name} must be text or a list of text, not {value!r}"
        expected, optional = _plain(types.get(name))
        if expected is None or (optional and value is None):
            continue
        if not _fits(expected, value):
            return f"{name} must be {PLAIN_TYPES[expected]}, not {value!r}"
        if expected is int and not -(2**63) <= value < 2**63:
            return f"{name} must be a whole number that fits 64 bits, not {value}"
    return None


def check_plain_fields(record: Any) -> None:
    """Refuse (``ValueError``) a dataclass record whose plain field holds a value of another
    type (``"no"`` is not false, ``"75"`` is no count); a numpy number becomes a Python one."""
    cls: type = type(record)
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    problem = type_error(cls, fields)
    if problem is not None:
        raise ValueError(problem)
    types = _field_types(cls)
    for name, value in fields.items():
        expected, _ = _plain(types.get(name))
        if expected in (int, float) and value is not None and type(value) not in (int, float):
            object.__setattr__(record, name, expected(value))


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (polars appends hints and the query plan)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def available_cores() -> int:
    """The cores this process may run on (its affinity, as a container or an executor sets
    it), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


Item = TypeVar("Item")
Result = TypeVar("Result")


def read_ahead(items: Iterator[Item]) -> Iterator[Item]:
    """``items`` in order, the next one made in a thread of its own while the caller works
    on this one (for work that leaves the interpreter, as reading a file with polars)."""
    done = object()  # what the thread gives once ``items`` has no more
    with ThreadPoolExecutor(1, "e6ingest-read-ahead") as reader:
        ahead = reader.submit(next, items, done)
        while (item := ahead.result()) is not done:
            ahead = reader.submit(next, items, done)
            yield item  # type: ignore[misc]


def map_ahead(
    work: Callable[[Item], Result], items: Iterable[Item], threads: int
) -> Iterator[Result]:
    """``work(item)`` for each of ``items``, in order, on ``threads`` threads (for work
    that leaves the interpreter, as numpy's sorts): besides the result the caller holds,
    at most ``threads`` are made or kept at a time."""
    threads = max(1, threads)
    with ThreadPoolExecutor(threads, "e6ingest-map-ahead") as pool:
        pending: collections.deque[Future[Result]] = collections.deque()
        for item in items:
            if len(pending) >= threads:
                yield pending.popleft().result()
            pending.append(pool.submit(work, item))
        while pending:
            yield pending.popleft().result()
