"""``LocalExecutor``: results as tasks finish, a task's error ends the run with that error,
and a run stopped early leaves no worker process behind."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest

from e6ingest.pipeline.executor import LocalExecutor


def square(n: int) -> int:
    return n * n


def fail_on_three(n: int) -> int:
    if n == 3:
        raise ValueError(f"task {n} failed")
    return n


def sleep_and_say_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def remember(context: str, cores: int) -> None:
    os.environ["E6INGEST_TEST_CONTEXT"] = f"{context} {cores}"


def context_seen(_: int) -> str:
    return os.environ.get("E6INGEST_TEST_CONTEXT", "")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("workers", [1, 2])
def test_every_result_comes_back_once(workers):
    results = list(LocalExecutor(workers).run(square, list(range(7))))
    assert sorted(results) == [n * n for n in range(7)]


@pytest.mark.parametrize(("workers", "tasks", "cores"), [(1, 4, 1), (2, 4, 1), (4, 2, 4)])
def test_the_initializer_runs_in_every_process_that_runs_tasks(workers, tasks, cores):
    """Each process running tasks gets the context and the cores each task may use: one
    in a pool, every core when fewer tasks than workers run one after the other here."""
    run = LocalExecutor(workers).run(context_seen, list(range(tasks)), remember, "ctx")
    assert list(run) == [f"ctx {cores}"] * tasks
    os.environ.pop("E6INGEST_TEST_CONTEXT", None)


def test_a_local_executor_offers_a_shared_budget_and_a_progress_channel():
    executor = LocalExecutor(2)
    assert executor.memory_budget(1 << 20) is not None
    received = []
    with executor.progress_channel(lambda w, f: received.append((w, f))) as queue:
        queue.put((3, 1))
    assert received == [(3, 1)]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_task_error_ends_the_run_with_that_error(workers):
    with pytest.raises(ValueError, match="task 3 failed"):
        list(LocalExecutor(workers).run(fail_on_three, list(range(6))))


def test_a_run_stopped_early_kills_its_workers():
    run = LocalExecutor(2).run(sleep_and_say_pid, [0.0, 60.0, 60.0, 60.0])
    first = next(run)  # one worker is free again, the other sleeps for a minute
    start = time.monotonic()
    run.close()  # what an interrupted driver does
    assert time.monotonic() - start < 10
    deadline = time.monotonic() + 10
    while _alive(first) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(first)


def hold_write_lock(queue) -> None:
    queue._wlock.acquire()  # what a worker killed while sending a count leaves behind
    time.sleep(60)


def _interrupted_with_a_dead_sender(received: list) -> None:
    channel = LocalExecutor(2).progress_channel(lambda w, f: received.append((w, f)))
    with pytest.raises(KeyboardInterrupt), channel as queue:
        worker = multiprocessing.get_context("spawn").Process(target=hold_write_lock, args=(queue,))
        worker.start()
        while queue._wlock.acquire(timeout=0.05):  # until the worker holds it
            queue._wlock.release()
            time.sleep(0.05)
        worker.kill()
        worker.join()
        raise KeyboardInterrupt


def test_a_channel_left_by_an_interrupt_does_not_wait_for_a_killed_worker():
    received: list = []
    run = threading.Thread(target=_interrupted_with_a_dead_sender, args=(received,), daemon=True)
    run.start()
    run.join(30)
    assert not run.is_alive(), "the channel waited for a worker that was killed while sending"
    assert received == []
    assert "e6ingest-progress" not in [t.name for t in threading.enumerate()]  # nothing left
