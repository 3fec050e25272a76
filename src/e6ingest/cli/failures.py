"""How a command ends when it fails: the exit code and the one line said for each kind of
error (``e6ingest --help`` lists the codes); a bug's traceback is printed, never hidden."""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import traceback

from e6ingest.cache import CacheError
from e6ingest.captions import CaptionInputError
from e6ingest.config import ConfigError
from e6ingest.core import RatingError, redact
from e6ingest.manifests import ManifestError
from e6ingest.metadata import SchemaError
from e6ingest.pipeline import ClusterUnavailable, EmptySelection
from e6ingest.query import QueryError
from e6ingest.query.index import TagIndexError
from e6ingest.shards.layout import OutputError
from e6ingest.sources import HubError, MirrorError

USAGE_ERRORS = (
    ConfigError, ManifestError, SchemaError, QueryError, MirrorError, OutputError,
    CaptionInputError, EmptySelection, CacheError, RatingError, TagIndexError,
)  # fmt: skip


def failure(exc: BaseException) -> tuple[int, str] | None:
    """The exit code and one-line message of an error that is not a bug, else None."""
    if isinstance(exc, USAGE_ERRORS):
        return 2, str(exc)
    if isinstance(exc, HubError | ClusterUnavailable):
        return 3, str(exc)
    if not isinstance(exc, OSError):
        return None
    number, where, reason = os_error(exc)
    if number == errno.ENOSPC:
        rerun = "free space and rerun the same command to continue"
        return 4, f"disk full at {where or 'the output folder'}; {rerun}"
    if number in (errno.EACCES, errno.EPERM, errno.EROFS):
        return 4, f"cannot write {where}: {reason}" if where else f"cannot write: {reason}"
    return None


def os_error(exc: OSError) -> tuple[int | None, str, str]:
    """An OSError's number, file and reason; polars' carry none of them but say them in
    their text: "Operation not permitted (os error 1): PATH"."""
    if exc.errno is not None:
        return exc.errno, str(exc.filename or ""), str(exc.strerror)
    said = re.fullmatch(r"(.*?) \(os error (\d+)\)(?:: (.*))?", str(exc), re.S)
    if said is None:
        return None, "", str(exc)
    return int(said.group(2)), said.group(3) or "", said.group(1)


def report(command: str, code: int, message: str, log_json: bool) -> None:
    """Say why ``command`` failed: one line on stderr, or a JSON error event on stdout."""
    message = redact(message)
    if log_json:
        record = {"event": "error", "command": command, "exit_code": code, "message": message}
        print(json.dumps(record), flush=True)
        return
    sep = "\n" if "\n" in message else " "  # keep a multi-line message's columns aligned
    print(f"e6ingest {command}: error:{sep}{message}", file=sys.stderr)


def reader_left() -> int:
    """Exit code 141, with standard output sent nowhere (nothing more to be said to it)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141


def exit_code(command: str, exc: Exception, log_json: bool) -> int:
    """Report ``exc`` (a traceback too when it is a bug) and return the exit code."""
    if isinstance(exc, OSError) and os_error(exc)[0] == errno.EPIPE:
        return reader_left()  # the reader left, said by polars writing to standard output
    known = failure(exc)
    if known is None:
        traceback.print_exc()
        report(command, 70, f"this is a bug in e6ingest ({type(exc).__name__}); "
               "please report it with the traceback above", log_json)  # fmt: skip
        return 70
    report(command, *known, log_json)
    return known[0]
