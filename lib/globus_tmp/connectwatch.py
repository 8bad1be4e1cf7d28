"""Starting the detached watcher that waits for a GCP to connect, off the job's start.

The Prolog returns as soon as GCP runs (``start_wait = "spawned"``): the endpoint id is
known from the pool entry and Globus queues a task for an endpoint that is not yet
connected. Someone must still find out whether GCP connects within ``start_timeout``,
and stop it (giving its lease back) if it does not: this watcher, a root process that
asks ``-status`` as the user until then (``NodeLifecycle.watch_connect``).

It is a plain ``fork`` of the hook, not a new interpreter: a cold Prolog's CPU is its
cost to the node (``bench/job_start.py``), and the hook has everything loaded already.
The child leaves the hook's session (slurmd kills that process group on a timeout),
holds none of its descriptors (slurmd waits for every holder of the hook's output
pipe; a lock's descriptor would keep the lock), and is bounded by an alarm. If it is
killed anyway, the next repair finds an unconnected instance without a live watcher
and starts another.
"""

from __future__ import annotations

import os
import resource
import syslog
from collections.abc import Callable
from typing import Protocol

from .alarm import alarm_backstop
from .hooklog import HookLog
from .process import ProcessRef


class ConnectWatchLauncher(Protocol):
    def launch(self, watch: Callable[[], str], log: HookLog, bound: float) -> ProcessRef: ...


class ForkedConnectWatch:
    """Runs ``watch`` in a detached, forked root child that logs its outcome."""

    def launch(self, watch: Callable[[], str], log: HookLog, bound: float) -> ProcessRef:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; its effects are tested in tests/hooks
            try:
                _detach()
                log.hook, log.to_stderr = "watch", False
                with alarm_backstop(bound, f"the connect watcher overran its {bound:.0f} s"):
                    said = watch()
                if said:
                    log.info(f"{said} (watcher cpu {cpu_ms()})")
            except BaseException as exc:
                log.error(f"connect watcher failed: {type(exc).__name__}: {exc}")
            finally:
                os._exit(0)
        return ProcessRef.of(pid)


def _detach() -> None:
    """A session of its own, stdio on /dev/null, no other descriptor of the hook's."""
    os.setsid()
    syslog.closelog()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, _max_fd())


def _max_fd() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if 0 < soft < 1 << 20 else 1 << 16


def cpu_ms() -> str:
    """This process's CPU so far, and its waited-for children's (the steps as the user
    with the ``-status`` calls they ran), for the log line ``bench/`` reads."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (
        f"{(own.ru_utime + own.ru_stime) * 1000:.0f} ms, "
        f"its steps {(kids.ru_utime + kids.ru_stime) * 1000:.0f} ms"
    )
