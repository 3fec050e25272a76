"""Work done ahead in threads: results in order, a bounded number made ahead, errors
raised where the result is taken."""

from __future__ import annotations

import threading
import time

import pytest

from e6ingest.core import map_ahead, read_ahead


def test_read_ahead_gives_every_item_in_order_and_its_error():
    assert list(read_ahead(iter(range(7)))) == list(range(7))
    assert list(read_ahead(iter([]))) == []

    def failing():
        yield 1
        raise OSError("the third batch is unreadable")

    got = read_ahead(failing())
    assert next(got) == 1
    with pytest.raises(OSError, match="unreadable"):
        next(got)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_map_ahead_keeps_the_order_and_at_most_threads_results_made(threads):
    lock, running, most = threading.Lock(), [0], [0]

    def work(item: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.002 * (item % 3))  # finished out of order
        with lock:
            running[0] -= 1
        return item * item

    made = map_ahead(work, range(20), threads)
    assert [next(made) for _ in range(3)] == [0, 1, 4]
    assert list(made) == [i * i for i in range(3, 20)]
    assert most[0] <= threads


def test_map_ahead_raises_the_error_of_the_item_in_turn():
    def work(item: int) -> int:
        if item == 4:
            raise ValueError("item 4")
        return item

    made = map_ahead(work, range(8), 2)
    assert [next(made) for _ in range(4)] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="item 4"):
        next(made)
