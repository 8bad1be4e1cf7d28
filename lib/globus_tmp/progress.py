"""How ``stage-out/stage-in --wait`` shows a Globus task while it runs.

On a terminal, a live bar (tqdm, imported only here, on this cold path). Anywhere else
(a batch job's stderr is ``slurm-<job>.out``), plain lines: one when the task's state
changes and one every ``every`` seconds otherwise, never a carriage return, so the job's
output file stays readable and small. Both show what Globus reports in the task document
(facts: docs/GCP.md#transfer-task-document) and the task's page in the web app.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TextIO

if TYPE_CHECKING:
    from tqdm import tqdm

ACTIVITY_URL = "https://app.globus.org/activity/{task_id}"
FINAL_STATUSES = ("SUCCEEDED", "FAILED")


class TaskDisplay(Protocol):
    def update(self, task: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def activity_url(task_id: str) -> str:
    return ACTIVITY_URL.format(task_id=task_id)


def display_for(out: TextIO, task_id: str, every: float = 30.0) -> TaskDisplay:
    """A live bar on a terminal, plain lines in a file or pipe."""
    isatty = getattr(out, "isatty", None)
    if callable(isatty) and isatty():
        return LiveDisplay(out, task_id)
    return PlainDisplay(out, task_id, every)


def progress_line(task: Mapping[str, Any]) -> str:
    """What Globus says of the task, in one line (no bar)."""
    return f"{_counts(task)}  {_status(task)}"


def _counts(task: Mapping[str, Any]) -> str:
    files, done = _int(task, "files"), _int(task, "files_transferred")
    parts = [f"{done}/{files} files"]
    if _int(task, "files_skipped"):
        parts.append(f"{_int(task, 'files_skipped')} skipped")
    if _int(task, "subtasks_total"):
        parts.append(f"{_int(task, 'subtasks_succeeded')}/{_int(task, 'subtasks_total')} subtasks")
    moved = _int(task, "bytes_transferred")
    parts.append(f"{human_size(moved)} at {human_size(_int(task, 'effective_bytes_per_second'))}/s")
    troubles = []
    if _int(task, "faults"):
        troubles.append(f"{_int(task, 'faults')} faults")
    if _int(task, "subtasks_retrying"):
        troubles.append(f"{_int(task, 'subtasks_retrying')} retrying")
    if _int(task, "subtasks_failed"):
        troubles.append(f"{_int(task, 'subtasks_failed')} failed")
    return "  ".join(parts + troubles)


def _status(task: Mapping[str, Any]) -> str:
    status = str(task.get("status") or "?")
    nice = task.get("nice_status")
    return f"{status} ({nice})" if nice and nice != status else status


def _int(task: Mapping[str, Any], key: str) -> int:
    value = task.get(key)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _columns(out: TextIO) -> int:
    try:
        return os.get_terminal_size(out.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 0


class PlainDisplay:
    """One line per state change, and at most one per ``every`` seconds besides."""

    def __init__(
        self,
        out: TextIO,
        task_id: str,
        every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out, self.task_id, self.every, self.clock = out, task_id, every, clock
        self._state: tuple[object, ...] | None = None
        self._last = 0.0
        self._said_link = False

    def update(self, task: Mapping[str, Any]) -> None:
        if not self._said_link:
            self._write(f"task {self.task_id}: {activity_url(self.task_id)}")
            self._said_link = True
        now = self.clock()
        state = (task.get("status"), task.get("nice_status"))
        final = task.get("status") in FINAL_STATUSES
        if state != self._state or final or now - self._last >= self.every:
            self._write(f"task {self.task_id}: {progress_line(task)}")
            self._state, self._last = state, now

    def close(self) -> None:
        pass

    def _write(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


class LiveDisplay:
    """A tqdm bar over the task's files, with Globus's bytes, rate, faults and status."""

    def __init__(self, out: TextIO, task_id: str) -> None:
        self.out, self.task_id = out, task_id
        self._bar: tqdm[Any] | None = None

    def update(self, task: Mapping[str, Any]) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self.out.write(f"task {self.task_id}: {activity_url(self.task_id)}\n")
            sized = _columns(self.out) > 0  # a pty nobody sized says 0: tqdm would draw nothing
            self._bar = tqdm(
                total=_int(task, "files") or None,
                file=self.out,
                unit="file",
                dynamic_ncols=sized,
                ncols=None if sized else 100,
                bar_format="{bar:20}| {desc}",
                mininterval=0,
            )
        files = _int(task, "files")
        if files and self._bar.total != files:
            self._bar.total = files
        self._bar.n = _int(task, "files_transferred")
        self._bar.set_description_str(progress_line(task), refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
