"""The captions of a selection of posts: built (:func:`captions`), written as JSON lines a
batch at a time (:func:`write_captions_of`), and their CLIP-token statistics. Reached through
:mod:`e6ingest.dataset` as well."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import polars as pl

from e6ingest.captions import CaptionSpec, caption_frame, ranks_by_rarity
from e6ingest.captions.variants import VARIANTS_COLUMN, posts_per_batch
from e6ingest.config import ConfigError
from e6ingest.core import atomic_path, read_ahead, temp_path
from e6ingest.metadata import row_ranges
from e6ingest.pipeline.sourcing import CaptionTables
from e6ingest.query import Subset
from e6ingest.query.parse import SINK_COMPRESSION
from e6ingest.shards import sample_key_expr
from e6ingest.shards.layout import OutputError

CAPTION_INPUTS = ("id", "site", "rating", "score", "created_at")
STDOUT = "-"  # the path that means standard output


def captions(
    posts: pl.LazyFrame, spec: CaptionSpec | None = None, tables: CaptionTables | None = None
) -> pl.DataFrame:
    """The captions of ``posts`` per ``spec``: ``id``, ``key``, ``caption``, ``tags`` (the
    tag part), ``nl`` (the natural-language texts) and, with variants, ``captions`` (each
    variant's caption by name, ``default`` first), built for all posts at once, with
    ``tables`` (a dataset's implications and tag rarity) where the spec needs them."""
    spec = spec or CaptionSpec()
    rarity, implied = tables_for(spec, tables)
    frame = caption_frame(posts.select(caption_inputs(posts)).collect(), spec, rarity, implied)
    return _caption_columns(frame, spec)


def tables_for(
    spec: CaptionSpec, tables: CaptionTables | None
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame | None]:
    """What ``spec`` takes from ``tables`` (a dataset's, ``Dataset.tables``): each variant's
    tag rarity and the implications. Without tables, a spec whose token budget keeps the
    rarest tags first, or that prunes implied tags without its own ``implications`` file,
    is refused: it would keep tags in caption order or prune none, silently."""
    if tables is not None:
        return tables.rarity(spec), tables.implied(spec)
    if ranks_by_rarity(spec):
        raise ConfigError(
            "this caption spec's token budget keeps the rarest tags first, by the dataset's "
            "tag counts: pass tables=data.tables (a Dataset from open_dataset), or "
            "token_priority='order'"
        )
    if spec.prune_implied and not spec.implications:
        raise ConfigError(
            "prune_implied needs the implications table: pass tables=data.tables (a "
            "Dataset opened with caption=CaptionSpec(prune_implied=True)) or give "
            "implications=FILE"
        )
    return {}, None  # caption_frame reads the spec's own implications file


def preview_captions(
    posts: pl.LazyFrame,
    rows: int,
    spec: CaptionSpec | None = None,
    tables: CaptionTables | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """The captions of the first ``rows`` posts of ``posts``, those of every n-th post (a
    sample of at most ``STATS_SAMPLE`` for token statistics) and how many posts there are:
    as :func:`captions` of all of them gives them (quality percentiles over the whole
    selection), but only these posts' rows are read and captioned."""
    from e6ingest.captions import CaptionSelection
    from e6ingest.captions.tokens import STATS_SAMPLE

    spec = spec or CaptionSpec()
    ids = posts.select("id").collect(engine="streaming")["id"]
    head, sampled = ids.head(rows), ids.gather_every(max(1, len(ids) // STATS_SAMPLE))
    wanted = pl.concat([head, sampled]).unique()
    chosen = posts.filter(pl.col("id").is_in(wanted.implode())).select(caption_inputs(posts))
    rarity, implied = tables_for(spec, tables)
    with CaptionSelection(posts, spec) as shared:
        frame = caption_frame(chosen.collect(), spec, rarity, implied, shared)
    built = _caption_columns(frame, spec)
    pick = [built.filter(pl.col("id").is_in(some.implode())) for some in (head, sampled)]
    return pick[0], pick[1], len(ids)


def caption_inputs(posts: pl.LazyFrame) -> list[str]:
    """The columns of ``posts`` captions are made of."""
    tags = [c for c in posts.collect_schema().names() if c.startswith("tags_")]
    return [*CAPTION_INPUTS, *tags]


def _caption_columns(frame: pl.DataFrame, spec: CaptionSpec) -> pl.DataFrame:
    """A captioned frame as :func:`captions` returns it."""
    variants = [pl.col(VARIANTS_COLUMN).alias("captions")] if spec.variants else []
    return frame.select(
        "id",
        sample_key_expr().alias("key"),
        "caption",
        pl.col("caption_tags").alias("tags"),
        pl.col("caption_nl").alias("nl"),
        *variants,
    )


_SYNC_DATA = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync
_ADVISE = getattr(os, "posix_fadvise", None)  # not on macOS or Windows
CAPTION_BATCH_ROWS = 250_000  # captions made and written at a time by write_captions_of
WRITTEN_AT_ONCE = 64 << 20  # bytes of captions written, synced and let go of at a time


@dataclass
class CaptionPreview:
    """What ``captions --out FILE --preview N`` prints of the captions written: the first
    ``rows`` and every n-th caption of all (at most ``STATS_SAMPLE``, for the token
    statistics), kept from each batch as :func:`write_captions_of` writes it."""

    rows: int
    head: list[pl.DataFrame] = field(default_factory=list)
    sampled: list[pl.DataFrame] = field(default_factory=list)

    def keep(self, frame: pl.DataFrame, start: int, total: int) -> None:
        """Keep this preview's rows of ``frame``: the captions ``start`` onwards of
        ``total``."""
        from e6ingest.captions.tokens import STATS_SAMPLE

        if start < self.rows:
            self.head.append(frame.head(self.rows - start))
        every = max(1, total // STATS_SAMPLE)
        self.sampled.append(frame.gather_every(every, offset=-start % every))

    def frames(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The first captions and the statistics' sample, each one frame."""
        return _concat(self.head), _concat(self.sampled)


def _concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(frames) if frames else pl.DataFrame()


def _pieces(frame: pl.DataFrame, size: int) -> list[pl.DataFrame]:
    """``frame`` in row slices of about ``size`` bytes each (by its estimated size)."""
    pieces = max(1, -(-int(frame.estimated_size()) // size))
    rows = max(1, -(-frame.height // pieces))
    return [frame.slice(start, end - start) for start, end in row_ranges(frame.height, rows)]


class _BatchWriter:
    """Writes caption batches as JSON lines to ``out`` in a thread of its own, one batch
    at a time: the next batch is captioned while this one is written, and memory holds
    at most the batch being written and the one being made. A failed write is raised
    at the next :meth:`write` or when the writer closes."""

    def __init__(self, out: BinaryIO, durable: bool = False) -> None:
        self._out, self._durable = out, durable
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="captions-writer")
        self._pending: Future[None] | None = None

    def write(self, frame: pl.DataFrame) -> None:
        """Write ``frame`` once the batch before it is written."""
        self._wait()
        self._pending = self._pool.submit(self._written, frame)

    def _written(self, frame: pl.DataFrame) -> None:
        """``frame`` written, and with ``durable`` on disk: its pages go while the next
        batch is captioned, not all in the file's final fsync. It is written in pieces of
        about ``WRITTEN_AT_ONCE`` bytes, and once on disk each piece's pages leave the
        page cache, where the next piece's take their memory again: a file of gigabytes
        written into ever new page cache costs more system time than making its JSON, and
        would push out the metadata being read (writing 1.33 GB took 0.5 to 0.6 s of
        system time in pieces of 64 MB, 1.3 to 2.6 s in batches of 330 MB)."""
        if not self._durable:
            frame.write_ndjson(self._out)
            return
        for piece in _pieces(frame, WRITTEN_AT_ONCE):
            piece.write_ndjson(self._out)
            self._out.flush()
            _SYNC_DATA(self._out.fileno())
            if _ADVISE is not None:  # a hint: where it is not taken, nothing is lost
                with contextlib.suppress(OSError):
                    _ADVISE(self._out.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> _BatchWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        try:
            self._wait()
        except Exception:
            if kind is None:  # else the error already raised is the one to report
                raise
        finally:
            self._pool.shutdown(wait=True)


def write_captions_of(
    posts: pl.LazyFrame,
    path: str | Path,
    spec: CaptionSpec | None = None,
    tables: CaptionTables | None = None,
    allow_empty: bool = True,
    batch_rows: int = CAPTION_BATCH_ROWS,
    preview: CaptionPreview | None = None,
    batches: Iterable[pl.DataFrame] | None = None,
) -> int:
    """The captions of ``posts`` (as :func:`captions` makes them) written to ``path`` as
    JSON lines, atomically (``"-"``: to standard output, as they are made), ``batch_rows``
    captions at a time (fewer posts when each has variants,
    :func:`~e6ingest.captions.variants.posts_per_batch`): memory holds one batch, however
    large the selection. The posts are read from ``batches`` (their caption inputs, in
    order: ``Dataset.select_in_batches``) when given, else from a copy of the selection
    streamed to a temporary file beside ``path`` first. Returns how many were written; an
    empty selection raises :class:`EmptySelection` (writing nothing) unless
    ``allow_empty``. ``preview`` keeps its rows of each batch as it is written (the file
    is not read again for them)."""
    from e6ingest.captions import CaptionSelection
    from e6ingest.pipeline.plan import EmptySelection

    check_captions_out(path)
    spec = spec or CaptionSpec()
    rarity, implied = tables_for(spec, tables)
    at_once = batch_posts(spec, batch_rows)
    short = end_batch_rows(spec, batch_rows)
    with contextlib.ExitStack() as stack:
        if batches is None:
            posts = stack.enter_context(_selection_copy(posts, path))
            batches = _slices(posts, at_once, short)
        total: int = posts.select(pl.len()).collect().item()
        if not total and not allow_empty:
            raise EmptySelection("the selection is empty (--allow-empty to write an empty file)")
        shared = stack.enter_context(CaptionSelection(posts, spec))
        out = stack.enter_context(_captions_sink(path))
        writer = stack.enter_context(_BatchWriter(out, durable=str(path) != STDOUT))
        written = 0
        for batch in _parts(read_ahead(iter(batches)), at_once, total, short):
            frame = _caption_columns(caption_frame(batch, spec, rarity, implied, shared), spec)
            writer.write(frame)
            if preview is not None:
                preview.keep(frame, written, total)
            written += frame.height
            del batch, frame
    return written


def batch_posts(spec: CaptionSpec | None = None, batch_rows: int = CAPTION_BATCH_ROWS) -> int:
    """The posts :func:`write_captions_of` captions at once, and the rows to read at a time
    for it: ``batch_rows`` captions, fewer posts when each has variants (a batch read of
    as many posts would hold them all until their parts are written)."""
    return posts_per_batch(batch_rows, spec or CaptionSpec())


def end_batch_rows(spec: CaptionSpec | None = None, batch_rows: int = CAPTION_BATCH_ROWS) -> int:
    """The posts of the first batch :func:`write_captions_of` reads and of the last it
    captions: a quarter of a batch, so the captions start sooner and the last write, which
    nothing overlaps, is short."""
    return max(1, batch_posts(spec, batch_rows) // 4)


def _slices(rows: pl.LazyFrame, size: int, first: int) -> Iterator[pl.DataFrame]:
    """``rows`` (a file's), read ``size`` at a time, ``first`` the first time."""
    total: int = rows.select(pl.len()).collect().item()
    for start, end in row_ranges(total, size, first):
        yield rows.slice(start, end - start).collect()


def _parts(
    batches: Iterable[pl.DataFrame], rows: int, total: int, last: int
) -> Iterator[pl.DataFrame]:
    """``batches`` in order, each cut into parts of at most ``rows`` rows; the ``last``
    rows of all (``total``) a part of their own."""
    seen = 0
    for batch in batches:
        for start in range(0, batch.height, rows):
            part = batch.slice(start, rows)
            cut = total - last - seen  # the part's rows before the last ones
            seen += part.height
            if 0 < cut < part.height:
                yield part.head(cut)
                part = part.slice(cut)
            yield part


@contextlib.contextmanager
def _selection_copy(posts: pl.LazyFrame, path: str | Path) -> Iterator[pl.LazyFrame]:
    """The caption inputs of ``posts`` streamed to a temporary file (beside ``path``) and
    read from it, a batch at a time: the selection is read from the metadata once. The
    file goes at the end."""
    selection = _selection_file(path)
    try:
        inputs = posts.select(caption_inputs(posts))
        inputs.sink_parquet(selection, engine="streaming", compression=SINK_COMPRESSION)
        yield pl.scan_parquet(selection)
    finally:
        selection.unlink(missing_ok=True)


def _selection_file(path: str | Path) -> Path:
    """Where the selection is kept while its captions are written: beside ``path``, or in
    the temporary folder (``TMPDIR``) for standard output."""
    if str(path) != STDOUT:
        return temp_path(Path(path))
    handle, name = tempfile.mkstemp(prefix="e6ingest-captions-", suffix=".parquet")
    os.close(handle)
    return Path(name)


@contextlib.contextmanager
def _captions_sink(path: str | Path) -> Iterator[BinaryIO]:
    """The file the JSON lines go to: a temporary that replaces ``path`` once complete, or
    standard output."""
    if str(path) == STDOUT:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with atomic_path(Path(path)) as tmp, tmp.open("wb") as out:
        yield out


def caption_token_stats(
    posts: pl.LazyFrame, spec: CaptionSpec | None = None, tables: CaptionTables | None = None
) -> dict[str, Any]:
    """CLIP token lengths of the captions of ``posts`` (a deterministic sample of at most
    10,000 of them): median, p90, share over 75/150/225 and a histogram; with variants,
    under ``variants`` the same for each variant by name."""
    from e6ingest.captions.tokens import STATS_SAMPLE

    sampled = Subset(sample=STATS_SAMPLE).kept_rows(posts)
    return captions_token_stats(captions(sampled, spec, tables))


def captions_token_stats(frame: pl.DataFrame) -> dict[str, Any]:
    """:func:`caption_token_stats` of captions already built (a :func:`captions` frame)."""
    from e6ingest.captions.tokens import token_stats

    stats = token_stats(frame["caption"].to_list())
    if "captions" in frame.columns:
        stats["variants"] = {name: token_stats(frame["captions"].struct.field(name).to_list())
                             for name in frame["captions"].struct.fields}  # fmt: skip
    return stats


def caption_token_lengths(captions_: pl.DataFrame, variant: str | None = None) -> pl.Series:
    """The CLIP token count of each caption of a :func:`captions` frame (for a histogram),
    or of each caption of one ``variant``."""
    from e6ingest.captions.tokens import count_tokens

    texts = captions_["caption"] if variant is None else captions_["captions"].struct.field(variant)
    return pl.Series("tokens", count_tokens(texts.to_list()))


CAPTION_FIELDS = {"id", "key", "caption", "tags", "nl"}


def _captions_file_is_ours(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as f:
            first = f.readline()
        return not first or set(json.loads(first)) - {"captions"} == CAPTION_FIELDS
    except (OSError, ValueError, TypeError):
        return False


def check_captions_out(path: str | Path) -> None:
    """Fail (``OutputError``) unless :func:`write_captions` may write ``path``: a file in
    an existing folder that is new or a captions file e6ingest wrote."""
    if str(path) == STDOUT:
        return
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"--out {path} is a folder; give a file name, e.g. {path}/captions.jsonl")
    if path.exists() and (path.is_symlink() or not _captions_file_is_ours(path)):
        raise OutputError(f"--out {path} exists and is not a captions file e6ingest wrote; "
                          "choose another file name")  # fmt: skip
    if not path.parent.is_dir():
        raise OutputError(f"--out {path}: the folder {path.parent} does not exist")


def write_captions(frame: pl.DataFrame, path: str | Path) -> None:
    """``frame`` (from :func:`captions`) as JSON lines, written atomically (``"-"``: to
    standard output). An existing file is replaced only when it is a captions file
    e6ingest wrote."""
    check_captions_out(path)
    with _captions_sink(path) as out:
        frame.write_ndjson(out)
