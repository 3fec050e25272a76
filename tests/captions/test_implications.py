"""Implied tags: the closure of an implications table against a plain reference on random
graphs (cycles included), and tables as a hostile user writes them (a clique, a cycle, a
chain that closes to billions of pairs)."""

from __future__ import annotations

import random
import time

import polars as pl
import pytest

from e6ingest.captions import CaptionInputError, read_implications
from e6ingest.captions.implications import close_transitively, prune_implied
from tests.captions.test_tokens import _post


def _reference(pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Every (a, b) with b reachable from a, except when a is reachable from b too."""
    nodes = {n for pair in pairs for n in pair}
    reach = {}
    for start in nodes:
        seen, todo = set(), [start]
        while todo:
            for a, b in pairs:
                if a == todo[-1] and b not in seen:
                    seen.add(b)
                    todo.insert(0, b)
            todo.pop()
        reach[start] = seen - {start}
    return {(a, b) for a in nodes for b in reach[a] if a not in reach[b]}


def _closure(pairs) -> set[tuple[str, str]]:
    frame = pl.DataFrame(pairs, schema=["antecedent", "implied"], orient="row")
    return set(close_transitively(frame).iter_rows())


@pytest.mark.parametrize("seed", range(40))
def test_closure_equals_the_plain_reference_on_random_graphs(seed):
    rng = random.Random(seed)
    tags = [f"t{i}" for i in range(rng.randint(2, 14))]
    pairs = list({(rng.choice(tags), rng.choice(tags)) for _ in range(rng.randint(1, 30))})
    assert _closure(pairs) == _reference(pairs)


def test_a_two_row_cycle_drops_neither_tag():
    closure = _closure([("a", "b"), ("b", "a"), ("b", "c")])
    assert closure == {("a", "c"), ("b", "c")}
    frame = pl.DataFrame([_post(general=["a", "b", "c", "solo"])])
    assert prune_implied(frame, close_transitively(
        pl.DataFrame({"antecedent": ["a", "b", "b"], "implied": ["b", "a", "c"]})
    ))["tags_general"].to_list() == [["a", "b", "solo"]]  # fmt: skip


def test_a_clique_of_400_tags_closes_at_once(tmp_path):
    tags = [f"clique_member_with_a_long_name_{i:03d}" for i in range(400)]
    rows = [f"{a},{b}" for a in tags for b in tags if a != b]
    path = tmp_path / "implications.csv"
    path.write_text("antecedent_name,consequent_name\n" + "\n".join(rows) + "\n")
    assert path.stat().st_size > 3_000_000
    start = time.perf_counter()
    closure = read_implications(path)
    assert closure.height == 0  # all equivalent: none drops another
    assert time.perf_counter() - start < 30


def test_a_chain_closing_to_too_many_pairs_is_refused(tmp_path):
    rows = [f"c{i},c{i + 1}" for i in range(8000)]  # closes to 32 million pairs
    path = tmp_path / "chain.csv"
    path.write_text("antecedent_name,consequent_name\n" + "\n".join(rows) + "\n")
    with pytest.raises(CaptionInputError, match=r"chain\.csv"):
        read_implications(path)


def test_implications_from_parquet_of_other_types(tmp_path):
    """Tag names a CSV or parquet stores as numbers (2024) are names; a column of lists is
    refused naming it (both ended in a traceback)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "implications.parquet"
    pq.write_table(pa.table({"antecedent_name": [2024], "consequent_name": ["year"],
                             "status": ["active"]}), path)  # fmt: skip
    assert read_implications(path).to_dicts() == [{"antecedent": "2024", "implied": "year"}]
    pq.write_table(pa.table({"a": [["x"]], "b": [["y"]]}), path)
    with pytest.raises(CaptionInputError, match="column 'a' holds List"):
        read_implications(path)
