"""Processes we started and must recognise again: a pid alone is not an identity.

A pid is recycled; a pid with its start time is not (in practice). Node state stores
both, so a GCP that died and whose pid went to another program is seen as dead.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import psutil

_START_TIME_TOLERANCE = 0.05


@dataclass(frozen=True)
class ProcessRef:
    """A process, named by pid and start time."""

    pid: int
    create_time: float

    @classmethod
    def of(cls, pid: int) -> ProcessRef:
        return cls(pid, psutil.Process(pid).create_time())

    def alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            same = abs(proc.create_time() - self.create_time) < _START_TIME_TOLERANCE
            return same and proc.status() != psutil.STATUS_ZOMBIE
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False

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
        victims = _tree(self.pid)
        _signal_all(self.pid, victims, signal.SIGTERM)
        _, alive = psutil.wait_procs(victims, timeout=grace)
        if alive:
            _signal_all(self.pid, alive, signal.SIGKILL)
            psutil.wait_procs(alive, timeout=grace)


def _tree(pid: int) -> list[psutil.Process]:
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
    try:
        os.killpg(leader, sig)
    except OSError:
        pass
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass
