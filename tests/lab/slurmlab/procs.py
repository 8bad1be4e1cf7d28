"""Reading /proc: process identity (pid plus start time), liveness, and namespaces.

The lab tells its processes apart from everything else on the machine by these alone:
a pid with its start time is one process for good, and a process's PID and mount
namespace ids say which lab node (if any) it runs on.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path
from typing import Optional


def proc_start_time(pid: int) -> Optional[int]:
    """Start time of a pid in clock ticks since boot: with the pid, a process's identity."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def proc_state(pid: int) -> Optional[str]:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[0]


def proc_alive(pid: int, start_time: Optional[int] = None) -> bool:
    """True while the process exists, is not a zombie, and (if given) started when recorded."""
    state = proc_state(pid)
    if state is None or state in ("Z", "X"):
        return False
    return start_time is None or proc_start_time(pid) == start_time


def proc_argv(pid: int) -> tuple[str, ...]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ()
    return tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a)


def proc_uid(pid: int) -> Optional[int]:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def proc_ppid(pid: int) -> Optional[int]:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def namespace_id(pid: int, kind: str) -> Optional[str]:
    """A process's namespace id, e.g. ``mnt:[4026532198]`` (kind ``mnt``, ``pid``)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def mnt_ns(pid: int) -> Optional[str]:
    return namespace_id(pid, "mnt")


def pid_ns(pid: int) -> Optional[str]:
    return namespace_id(pid, "pid")


def namespace_pids(pid: int) -> tuple[int, ...]:
    """The ``NSpid:`` line of a host pid: its pid in each PID namespace, outermost first.

    The last one is the pid as seen inside its own namespace (a lab node's pid); empty if
    the process is gone.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ()
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return tuple(int(x) for x in line.split()[1:])
    return ()


def all_pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def child_pids(pid: int) -> list[int]:
    return [p for p in all_pids() if proc_ppid(p) == pid]


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
