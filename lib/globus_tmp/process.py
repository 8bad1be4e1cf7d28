"""Processes we started and must recognise again: a pid alone is not an identity.

A pid is recycled; a pid with its start time is not (in practice). Node state stores
both, so a GCP that died and whose pid went to another program is seen as dead.

Everything here reads ``/proc/PID/stat`` and the owner of ``/proc/PID``: kernel data
that a user cannot forge and that never waits on a user's file system (unlike
``/proc/PID/cmdline``, which reads the process's memory and can hang on a FUSE
mapping). It is also cheap enough for the join path, which checks a pid per job.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator


class ProcStat:
    """The fields of ``/proc/PID/stat`` we use (a plain class: this is on the join path,
    where each dataclass definition costs a noticeable share of the start-up)."""

    __slots__ = ("pgrp", "pid", "ppid", "session", "start_ticks", "state")

    def __init__(
        self, pid: int, state: str, ppid: int, pgrp: int, session: int, start_ticks: int
    ) -> None:
        self.pid, self.state, self.ppid = pid, state, ppid
        self.pgrp, self.session, self.start_ticks = pgrp, session, start_ticks


def proc_stat(pid: int) -> ProcStat | None:
    """``/proc/PID/stat`` of ``pid``; None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    try:
        fields = data[data.rindex(b")") + 2 :].split()  # the command name may hold spaces
        return ProcStat(
            pid, fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19])
        )
    except (ValueError, IndexError):
        return None


def proc_uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def all_pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def _running(st: ProcStat | None) -> bool:
    return st is not None and st.state not in ("Z", "X")


class ProcessRef:
    """A process, named by pid and start time (clock ticks since boot).

    Immutable and compared by value; a plain class rather than a frozen dataclass
    because it is on the join path (see :class:`ProcStat`)."""

    __slots__ = ("pid", "start_ticks")
    pid: int
    start_ticks: int

    def __init__(self, pid: int, start_ticks: int) -> None:
        object.__setattr__(self, "pid", pid)
        object.__setattr__(self, "start_ticks", start_ticks)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"ProcessRef is immutable ({name})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProcessRef):
            return NotImplemented
        return (self.pid, self.start_ticks) == (other.pid, other.start_ticks)

    def __hash__(self) -> int:
        return hash((self.pid, self.start_ticks))

    def __repr__(self) -> str:
        return f"ProcessRef(pid={self.pid}, start_ticks={self.start_ticks})"

    @classmethod
    def of(cls, pid: int) -> ProcessRef:
        st = proc_stat(pid)
        if st is None:
            raise ProcessLookupError(pid)
        return cls(pid, st.start_ticks)

    def alive(self) -> bool:
        st = proc_stat(self.pid)
        return _running(st) and st is not None and st.start_ticks == self.start_ticks

    def wait_gone(self, timeout: float, poll: float = 0.1) -> bool:
        """Wait until the process has exited; True if it did within ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
        return True

    def members(self, owner_uid: int | None) -> list[ProcessRef]:
        """This process and every live process of its session or process group.

        GCP runs in a session of its own (``setsid`` at start), so its children
        (relay, GridFTP) are found through the session even after the leader died;
        ``owner_uid`` and the start time keep a recycled session id from matching
        someone else's processes.
        """
        found: list[ProcessRef] = []
        for pid in all_pids():
            st = proc_stat(pid)
            if not _running(st) or st is None:
                continue
            if pid == self.pid:
                if st.start_ticks == self.start_ticks:
                    found.append(ProcessRef(pid, st.start_ticks))
                continue
            if self.pid not in (st.session, st.pgrp) or st.start_ticks < self.start_ticks:
                continue
            if owner_uid is not None and proc_uid(pid) != owner_uid:
                continue
            found.append(ProcessRef(pid, st.start_ticks))
        return found

    def kill_tree(self, owner_uid: int | None = None, grace: float = 2.0) -> int:
        """SIGTERM the process and its session; SIGKILL what remains after ``grace``.

        Works when the leader is already gone (its children are still found through
        the session). Returns how many processes were signalled.
        """
        victims = self.members(owner_uid)
        for ref in victims:
            ref.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(v.alive() for v in victims):
            time.sleep(0.05)
        left = [v for v in self.members(owner_uid) if v.alive()]
        for ref in left:
            ref.signal(signal.SIGKILL)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(v.alive() for v in left):
            time.sleep(0.05)
        return len({v.pid for v in victims} | {v.pid for v in left})

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` if the pid still names this process (checked just before)."""
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except OSError:
                pass


def process_age() -> float:
    """Seconds since this process started (its start time in ``/proc/self/stat`` is in
    clock ticks since boot): a hook's wall time as slurmd sees it, start-up included."""
    st = proc_stat(os.getpid())
    if st is None:
        return 0.0
    since_boot = time.clock_gettime(time.CLOCK_BOOTTIME)
    return max(since_boot - st.start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)
