"""Drains of one user on many nodes share one task_list answer per poll interval."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
from globus_tmp.taskcache import RateLimited, TaskListCache

TASKS = [("t1", "ep-a", "dest"), ("t2", "src", "ep-b")]


def _drain(user_dir: str, calls: str, interval: float) -> None:
    def fetch() -> list[tuple[str, str, str]]:
        with open(calls, "a") as fh:
            fh.write("call\n")
        time.sleep(0.3)  # the API's answer takes a while: the others must wait for it
        return TASKS

    assert TaskListCache(Path(user_dir), interval).live_tasks(fetch, wait=5) == TASKS


def test_one_call_per_interval_for_many_drains(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    calls.touch()
    ctx = multiprocessing.get_context("fork")
    interval = 8.0  # longer than 30 forks take on a loaded 2-core machine (3 s was not)
    for _round in range(2):
        started = time.monotonic()
        procs = [
            ctx.Process(target=_drain, args=(str(tmp_path / "u"), str(calls), interval))
            for _ in range(30)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(30)
            assert proc.exitcode == 0
        assert time.monotonic() - started < interval, "a round outlasted the interval"
        time.sleep(interval + 0.1)  # the next interval
    assert calls.read_text().count("call") == 2, "one task_list call per interval"


def test_a_429_is_remembered_until_retry_after(tmp_path: Path) -> None:
    cache = TaskListCache(tmp_path, 1.0)
    asked = []

    def limited() -> list[tuple[str, str, str]]:
        asked.append(1)
        raise RateLimited(time.time() + 2)

    with pytest.raises(RateLimited):
        cache.live_tasks(limited, wait=0)
    with pytest.raises(RateLimited):
        TaskListCache(tmp_path, 1.0).live_tasks(limited, wait=0)
    assert len(asked) == 1, "nobody asks again before Retry-After"
    time.sleep(2.1)
    assert TaskListCache(tmp_path, 1.0).live_tasks(lambda: TASKS, wait=0) == TASKS
