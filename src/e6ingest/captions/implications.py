"""Implied tags: e621 and danbooru add the tags a tag implies (``fox`` -> ``canine`` ->
``canid`` -> ``mammal``) to every post, which spends a caption's tokens on what the specific
tag already says. With the site's implications table, a tag is dropped from a post when
another tag of the post implies it, directly or through a chain; tags that imply each other
(a cycle in the table) are equivalent and never drop each other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from e6ingest.captions.files import CaptionInputError
from e6ingest.metadata import TAG_COLUMNS
from e6ingest.metadata.tagtable import read_table_file

MAX_IMPLIED_PAIRS = 20_000_000  # e621's whole table closes to well under a million


def read_implications(path: str | Path) -> pl.DataFrame:
    """Active implications as ``antecedent``, ``implied``, closed transitively. Reads the
    e621 ``tag_implications`` export (``antecedent_name``, ``consequent_name``, ``status``),
    CSV (gzip too) or parquet, or a two-column ``antecedent,consequent`` CSV."""
    path = Path(path)
    table = read_table_file(path, "implications", CaptionInputError)
    names = table.columns
    old, new = ("antecedent_name", "consequent_name")
    if old not in names or new not in names:
        if len(names) < 2:
            raise CaptionInputError(f"{path}: implications need antecedent_name and "
                                    f"consequent_name columns (found {names})")  # fmt: skip
        old, new = names[0], names[1]
    if "status" in names:
        table = table.filter(pl.col("status").cast(pl.String) == "active")
    # tag names as text, whatever a CSV's inference made of them (a column of 2024, 2025)
    text = [pl.col(c).cast(pl.String) for c in (old, new)]
    pairs = table.select(text[0].alias("antecedent"), text[1].alias("implied"))
    return close_transitively(pairs.drop_nulls().unique(maintain_order=True), str(path))


def _components(count: int, successors: list[list[int]]) -> list[list[int]]:
    """The strongly connected components of a graph of ``count`` nodes (Tarjan's, without
    recursion), each a list of nodes, in reverse topological order (a component comes
    after every component it reaches)."""
    index = [-1] * count
    low = [0] * count
    on_stack = [False] * count
    stack: list[int] = []
    found: list[list[int]] = []
    counter = 0
    for root in range(count):
        if index[root] != -1:
            continue
        work = [(root, 0)]
        while work:
            node, edge = work.pop()
            if edge == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack[node] = True
            if edge < len(successors[node]):
                work.append((node, edge + 1))
                nxt = successors[node][edge]
                if index[nxt] == -1:
                    work.append((nxt, 0))
                elif on_stack[nxt]:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack[member] = False
                    component.append(member)
                    if member == node:
                        break
                found.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


def close_transitively(pairs: pl.DataFrame, where: str = "implications") -> pl.DataFrame:
    """Every (antecedent, implied) reachable through chains of ``pairs``. Tags that imply
    each other (a cycle) are equivalent: neither is dropped for the other, so pairs within
    a cycle are left out. More than :data:`MAX_IMPLIED_PAIRS` pairs in all is refused
    (real tables close to far fewer), naming ``where``."""
    names = pl.concat([pairs["antecedent"], pairs["implied"]]).unique(maintain_order=True)
    number = {name: i for i, name in enumerate(names.to_list())}
    successors: list[list[int]] = [[] for _ in number]
    for old, new in pairs.iter_rows():
        if old != new:
            successors[number[old]].append(number[new])
    components = _components(len(number), successors)
    component_of = [0] * len(number)
    for c, members in enumerate(components):
        for member in members:
            component_of[member] = c
    reach = _reach(components, component_of, successors, where)
    old, new = [], []
    for c, members in enumerate(components):
        implied = _members(reach[c])
        for member in members:
            old.append(np.full(len(implied), member, np.int64))
            new.append(implied)
    empty = [np.empty(0, np.int64)]
    return pl.DataFrame({"antecedent": names.gather(np.concatenate(old or empty)),
                         "implied": names.gather(np.concatenate(new or empty))})  # fmt: skip


def _reach(
    components: list[list[int]], component_of: list[int], successors: list[list[int]], where: str
) -> list[int]:
    """For each component, the tags it implies (a bitset), components in reverse
    topological order so each reads the finished sets of those it reaches."""
    reach = [0] * len(components)
    pairs = 0
    for c, members in enumerate(components):
        bits = 0
        for member in members:
            for nxt in successors[member]:
                d = component_of[nxt]
                if d != c:
                    bits |= reach[d] | _bitset(components[d])
        reach[c] = bits
        pairs += len(members) * bits.bit_count()
        if pairs > MAX_IMPLIED_PAIRS:
            raise CaptionInputError(
                f"{where}: the implications close to more than {MAX_IMPLIED_PAIRS:,} tag "
                "pairs (real tables close to far fewer); check the file"
            )
    return reach


def _bitset(members: list[int]) -> int:
    bits = 0
    for member in members:
        bits |= 1 << member
    return bits


def _members(bits: int) -> np.ndarray:
    """The positions of the set bits of ``bits``."""
    if not bits:
        return np.empty(0, np.int64)
    raw = np.frombuffer(bits.to_bytes((bits.bit_length() + 7) // 8, "little"), np.uint8)
    return np.flatnonzero(np.unpackbits(raw, bitorder="little")).astype(np.int64)


def prune_implied(frame: pl.DataFrame, closure: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with, in every ``tags_<category>`` list, the tags another tag of the same
    post implies removed (order kept)."""
    columns = [c for c in TAG_COLUMNS if c in frame.columns]
    if frame.is_empty() or not columns:
        return frame
    indexed = frame.select(columns).with_row_index("_row")
    long = pl.concat(
        [
            indexed.select("_row", pl.col(c).alias("tag"))
            .explode("tag")
            .with_columns(pl.lit(c).alias("_column"))
            for c in columns
        ]
    ).drop_nulls("tag").with_row_index("_pos")  # fmt: skip
    implied = (
        long.select("_row", "tag")
        .join(closure, left_on="tag", right_on="antecedent")
        .select("_row", pl.col("implied").alias("tag"))
        .unique()
    )
    kept = long.join(implied, on=["_row", "tag"], how="anti").sort("_pos")
    rows = pl.DataFrame({"_row": pl.int_range(frame.height, eager=True, dtype=pl.UInt32)})
    for column in columns:
        lists = kept.filter(pl.col("_column") == column).group_by("_row").agg(
            pl.col("tag").alias(column)
        )  # fmt: skip
        rows = rows.join(lists, on="_row", how="left", maintain_order="left")
    empty = pl.lit([], pl.List(pl.String))
    pruned = rows.select(pl.col(c).fill_null(empty) for c in columns)
    return frame.with_columns(pruned)
