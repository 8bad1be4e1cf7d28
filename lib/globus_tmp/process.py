"""Processes we started and must recognise again: a pid alone is not an identity.

A pid is recycled; a pid with its start time is not (in practice). Node state stores
both, so a GCP that died and whose pid went to another program is seen as dead.

The liveness check is on the join path of every job, so it reads ``/proc/PID/stat``
itself (the start time in clock ticks since boot); psutil, whose import costs about
as much as the rest of the join path, is loaded only to kill process trees.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in ticks) from ``/proc/PID/stat``; None if there is no such pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()  # the command name may hold spaces
    return fields[0].decode(), int(fields[19])


@dataclass(frozen=True)
class ProcessRef:
    """A process, named by pid and start time (clock ticks since boot)."""

    pid: int
    start_ticks: int

    @classmethod
    def of(cls, pid: int) -> ProcessRef:
        stat = _stat(pid)
        if stat is None:
            raise ProcessLookupError(pid)
        return cls(pid, stat[1])

    def alive(self) -> bool:
        stat = _stat(self.pid)
        return stat is not None and stat[0] not in ("Z", "X") and stat[1] == self.start_ticks

    def wait_gone(self, timeout: float, poll: float = 0.1) -> bool:
        """Wait until the process has exited; True if it did within ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
        return True

    def kill_tree(self, grace: float = 2.0) -> None:
        """SIGTERM the process, its session and its descendants; SIGKILL what remains.

        GCP runs children (relay, GridFTP); they are found both through the process
        tree and through the session the process leads, so none outlives it.
        """
        if not self.alive():
            return
        import psutil

        victims = _tree(self.pid)
        _signal_all(self.pid, victims, signal.SIGTERM)
        _, alive = psutil.wait_procs(victims, timeout=grace)
        if alive:
            _signal_all(self.pid, alive, signal.SIGKILL)
            psutil.wait_procs(alive, timeout=grace)


def _tree(pid: int) -> list[psutil.Process]:
    import psutil

    try:
        top = psutil.Process(pid)
        procs = [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    seen = {p.pid for p in procs}
    for proc in psutil.process_iter():
        try:
            if proc.pid not in seen and os.getsid(proc.pid) == pid:
                procs.append(proc)
        except (OSError, psutil.Error):
            continue
    return procs


def _signal_all(leader: int, procs: list[psutil.Process], sig: signal.Signals) -> None:
    import psutil

    try:
        os.killpg(leader, sig)
    except OSError:
        pass
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass
