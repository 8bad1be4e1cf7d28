"""One ``task_list`` answer per poll interval for all of a user's drains, on any node.

``task_list`` has no endpoint filter, so one answer (the user's live tasks) serves every
endpoint of the user. Drains of one user on many nodes (a wide job's nodes all drain at
once) share it through a small file in the user's dir: within an interval, the first
drain to need an answer claims the interval (an ``O_EXCL`` file, atomic on shared file
systems), asks Globus and writes the answer; the others wait briefly for it. A 429
answer is remembered with its ``Retry-After``, so no drain asks again before then.

Runs as the user. The Epilog's own check never uses it: it must see a transfer the job
submitted a moment before ending. Facts: docs/GCP.md#transfer-api.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from .boundedio import STATE, read_bounded
from .nodestate import write_atomic

Task = tuple[str, str, str]  # task id, source endpoint, destination endpoint
_WAIT_STEP = 0.2


class RateLimited(Exception):
    """Globus answered 429; nobody asks again before ``until``."""

    def __init__(self, until: float) -> None:
        super().__init__(f"rate-limited by the Transfer API until {time.ctime(until)}")
        self.until = until


class TaskListCache:
    def __init__(self, user_dir: Path, interval: float) -> None:
        self.dir = user_dir / "cache"
        self.path = self.dir / "task-list.json"
        self.interval = max(interval, 1.0)

    def live_tasks(self, fetch: Callable[[], list[Task]], wait: float) -> list[Task]:
        """The user's live tasks, at most one interval old; ``fetch`` asks Globus."""
        now = time.time()
        doc = self._read()
        if _num(doc, "backoff_until") > now:
            raise RateLimited(_num(doc, "backoff_until"))
        if now - _num(doc, "fetched_at") < self.interval:
            return _tasks(doc)
        slot = int(now // self.interval)
        if self._claim(slot):
            return self._fetch_and_store(fetch)
        deadline = time.monotonic() + min(wait, self.interval)
        while time.monotonic() < deadline:  # another drain is asking for this interval
            time.sleep(_WAIT_STEP)
            doc = self._read()
            if time.time() - _num(doc, "fetched_at") < self.interval:
                return _tasks(doc)
        return self._fetch_and_store(fetch)

    def _fetch_and_store(self, fetch: Callable[[], list[Task]]) -> list[Task]:
        try:
            tasks = fetch()
        except RateLimited as exc:
            self._write({"fetched_at": 0, "backoff_until": exc.until, "tasks": []})
            raise
        self._write({"fetched_at": time.time(), "tasks": [list(t) for t in tasks]})
        return tasks

    def _read(self) -> dict[str, object]:
        try:
            doc = json.loads(read_bounded(self.path, STATE))
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def _write(self, doc: dict[str, object]) -> None:
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(doc), 0o600)
        except OSError:
            pass  # only a shared answer: each drain can still ask on its own

    def _claim(self, slot: int) -> bool:
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(self.dir / f"task-list.claim.{slot}", os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return False
        except OSError:
            return True  # cannot coordinate: ask on our own
        for name in os.listdir(self.dir):  # the claims of earlier intervals
            if name.startswith("task-list.claim.") and name.rsplit(".", 1)[-1] != str(slot):
                try:
                    if int(name.rsplit(".", 1)[-1]) < slot - 1:
                        os.unlink(self.dir / name)
                except (ValueError, OSError):
                    pass
        return True


def _num(doc: dict[str, object], key: str) -> float:
    value = doc.get(key)
    return float(value) if isinstance(value, (int, float)) else 0.0


def _tasks(doc: dict[str, object]) -> list[Task]:
    raw = doc.get("tasks")
    if not isinstance(raw, list):
        return []
    return [(str(t[0]), str(t[1]), str(t[2])) for t in raw if isinstance(t, list) and len(t) == 3]
