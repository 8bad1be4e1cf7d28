#!/usr/bin/python3
"""nodeinit: PID 1 of a lab node's PID namespace (tests/lab/slurmlab/nodes.py starts one per node).

Usage: nodeinit.py PROGRAM [ARGS...]    (the lab runs ``slurmd -D -N nK -f slurm.conf``)

A real node's init does two things the lab needs, and nothing else here:

- it reaps orphans: GCP instances and drains are started detached (``setsid``) by the
  hooks and are reparented to PID 1 of their PID namespace when their parent exits;
  without a reaper they would stay zombies, and a zombie still counts as a pid in /proc;
- it is the node's lifetime: when PID 1 of a PID namespace exits, the kernel SIGKILLs
  every other process in it. So the lab stops a node by SIGTERM to this init (forwarded to
  slurmd; the init exits when slurmd has), and "reboots" it by SIGKILL (everything on the
  node dies at once, as on a power cut).

It mounts nothing (the lab's ``unshare ... sh -c 'mount ...; exec nodeinit.py ...'`` does)
and runs PROGRAM as its one direct child, exiting with PROGRAM's status. Stdlib only, run
by /usr/bin/python3; a copy lives in the lab root so a node with a private /tmp finds it.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import Optional

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: nodeinit.py PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    # Signals are blocked across the fork: one that arrives before the handlers are in place
    # is forwarded once they are, not lost (PID 1 ignores signals it has no handler for).
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    child = os.fork()
    if child == 0:
        try:
            for sig in FORWARDED:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            os.execvp(argv[0], argv)
        except OSError as exc:
            print(f"nodeinit: cannot run {argv[0]}: {exc}", file=sys.stderr, flush=True)
        os._exit(127)

    def forward(signum: int, _frame: Optional[FrameType]) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    while True:
        try:
            pid, status = os.wait()  # any child: orphans reparented to us included
        except ChildProcessError:
            return 1  # cannot happen while the program runs: it is our child
        if pid == child:
            # Exiting kills what is left in the namespace (the kernel does, with SIGKILL).
            return _exit_code(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
