"""Which samples and batches each process reads in one epoch, from an output's index alone
(no file is opened here): ranks (``RANK``/``WORLD_SIZE``) and DataLoader workers each take
a run of consecutive samples, optionally shuffled with a seed, grouped into batches of one
aspect bucket each.

With more than one rank, every part reads the same number of samples and of batches, as
torch's ``DistributedSampler`` does: a DDP step waits for every rank, so a rank with one
batch more would wait for the others forever at the end of the epoch. The shorter parts
repeat some of their own samples or batches (``drop_last``: the longer parts stop early)."""

from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass
from itertools import cycle, islice

import numpy as np
import polars as pl

BUCKET = ("bucket_width", "bucket_height")
Batch = tuple[tuple[int, int], pl.DataFrame]  # a bucket and the index rows of its samples


@dataclass(frozen=True)
class Part:
    """Which share of an epoch one process reads: its rank among ``world_size`` processes
    and its DataLoader worker among ``num_workers``."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    def __post_init__(self) -> None:
        if not (0 <= self.rank < self.world_size and 0 <= self.worker < self.num_workers):
            raise ValueError(f"no such part: {self}")

    @property
    def index(self) -> int:
        """This part's number among all of them."""
        return self.rank * self.num_workers + self.worker

    @property
    def total(self) -> int:
        """How many parts an epoch is split into."""
        return self.world_size * self.num_workers

    @property
    def in_step(self) -> bool:
        """Whether the parts must read as many samples and batches each: with several
        ranks, which wait for each other at every step."""
        return self.world_size > 1


WHOLE = Part()  # the whole epoch, one process


def current_part(
    rank: int | None = None,
    world_size: int | None = None,
    worker: int | None = None,
    num_workers: int | None = None,
) -> Part:
    """The part of the calling process: arguments, else ``RANK``/``WORLD_SIZE`` (as set by
    torchrun and accelerate) and the torch DataLoader worker when torch is in use.
    ``num_workers=0`` is a DataLoader's own process: one part, as 1."""
    if rank is None:
        rank = _environ_number("RANK", 0)
    if world_size is None:
        world_size = _environ_number("WORLD_SIZE", 1)
    if worker is None or num_workers is None:
        info = None
        if "torch" in sys.modules:  # torch users only; never imported here
            info = sys.modules["torch"].utils.data.get_worker_info()
        worker = worker if worker is not None else (info.id if info else 0)
        num_workers = num_workers if num_workers is not None else (info.num_workers if info else 1)
    return Part(rank, world_size, worker, num_workers or 1)


def _environ_number(name: str, default: int) -> int:
    """The whole number in the environment variable ``name`` (``default`` when unset)."""
    text = os.environ.get(name, "").strip()
    try:
        return int(text) if text else default
    except ValueError:
        raise ValueError(f"${name} is {text!r}, not a whole number") from None


def assign(index: pl.DataFrame, part: Part) -> pl.DataFrame:
    """The rows of ``index`` (every sample, in shard order) that ``part`` reads: one of
    ``part.total`` consecutive runs of samples, their sizes within one of each other (every
    part gets its share whatever the shards' sizes, and reads few shards, by offset)."""
    n = index.height
    start, end = part.index * n // part.total, (part.index + 1) * n // part.total
    return index.slice(start, end - start)


def _order(rows: pl.DataFrame, shuffle: bool, seed: int, epoch: int) -> pl.DataFrame:
    if not shuffle:
        return rows
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(rows.height))
    rng.shuffle(order)
    return rows[order]


def sample_rows(
    index: pl.DataFrame, part: Part, shuffle: bool = False, seed: int = 0, epoch: int = 0
) -> pl.DataFrame:
    """The index rows of the samples ``part`` reads this epoch, in the order it reads them.
    Across the parts every sample comes once; with several ranks, a part one sample short
    of the others reads one more: its first again, or (a part with none) one of the
    index's."""
    rows = _order(assign(index, part), shuffle, seed, epoch)
    share = -(-index.height // part.total)
    if not part.in_step or rows.height >= share:
        return rows
    extra = rows.head(1) if rows.height else index.slice(part.index % index.height, 1)
    return pl.concat([rows, extra])


def _batches_of(rows: pl.DataFrame, batch_size: int, drop_last: bool) -> list[Batch]:
    """``rows`` in batches of one bucket each, in the order each bucket first comes; a
    bucket's last batch may be short (``drop_last``: left out)."""
    batches = []
    for (width, height), group in rows.group_by(*BUCKET, maintain_order=True):
        for start in range(0, group.height, batch_size):
            chunk = group.slice(start, batch_size)
            if chunk.height == batch_size or not drop_last:
                batches.append(((width, height), chunk))
    return batches


def _shuffled_batches(
    rows: pl.DataFrame, batch_size: int, shuffle: bool, seed: int, epoch: int, drop_last: bool
) -> list[Batch]:
    batches = _batches_of(rows, batch_size, drop_last)
    if shuffle:
        random.Random(f"{seed}:{epoch}:batches").shuffle(batches)
    return batches


def _check_batch_size(batch_size: object) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number, at least 1, not {batch_size!r}")


def batch_counts(index: pl.DataFrame, parts: int, batch_size: int, drop_last: bool) -> list[int]:
    """How many batches each of ``parts`` parts makes of its share of ``index``."""
    n = index.height
    starts = np.arange(parts) * n // parts
    part_of_row = np.searchsorted(starts, np.arange(n), side="right") - 1
    sizes = (
        index.select(*BUCKET)
        .with_columns(pl.Series("part", part_of_row))
        .group_by("part", *BUCKET)
        .len()
    )
    rounding = 0 if drop_last else batch_size - 1  # a short last batch counts, or not
    batches = (pl.col("len") + rounding) // batch_size
    per_part = sizes.group_by("part").agg(batches.sum())
    counts = [0] * parts
    for part, count in per_part.iter_rows():
        counts[part] = count
    return counts


def epoch_steps(
    index: pl.DataFrame, world_size: int, num_workers: int, batch_size: int, drop_last: bool
) -> int:
    """How many batches one rank's DataLoader workers make together in an epoch
    (:func:`batch_plan`'s, summed): the same on every rank when there are several."""
    _check_batch_size(batch_size)
    counts = batch_counts(index, world_size * num_workers, batch_size, drop_last)
    if world_size == 1:
        return sum(counts)
    return _in_step(counts, drop_last) * num_workers


def _in_step(counts: list[int], drop_last: bool) -> int:
    """How many batches every part makes when the parts keep in step: as many as the part
    with the most, or with ``drop_last`` as the part with the fewest."""
    return min(counts) if drop_last else max(counts)


def batch_plan(
    index: pl.DataFrame, part: Part, batch_size: int, shuffle: bool = False, seed: int = 0,
    epoch: int = 0, drop_last: bool = False,
) -> list[Batch]:  # fmt: skip
    """The batches ``part`` reads this epoch, each of one aspect bucket, in order: its
    share's samples grouped by bucket, in batches shuffled with ``seed`` and ``epoch``.
    With several ranks every part makes as many as the part with the most (the others
    repeat their own from the first; a part with no samples repeats the whole epoch's),
    or with ``drop_last`` as many as the part with the fewest."""
    _check_batch_size(batch_size)
    rows = _order(assign(index, part), shuffle, seed, epoch)
    batches = _shuffled_batches(rows, batch_size, shuffle, seed, epoch, drop_last)
    if not part.in_step:
        return batches
    wanted = _in_step(batch_counts(index, part.total, batch_size, drop_last), drop_last)
    if len(batches) >= wanted:
        return batches[:wanted]
    if batches:
        return list(islice(cycle(batches), wanted))
    everyone = _shuffled_batches(_order(index, shuffle, seed, epoch), batch_size, shuffle,
                                 seed, epoch, drop_last)  # fmt: skip
    start = part.index % len(everyone)
    return list(islice(cycle(everyone[start:] + everyone[:start]), wanted))
