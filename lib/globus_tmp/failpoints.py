"""Failpoints: named places where a test can make a hook die, as slurmd would kill it.

A fault matrix needs "the hook was killed right here" to be reproducible. Each
``failpoint(name)`` is a no-op unless ``GLOBUS_TMP_FAILPOINTS`` names it; slurmd never
sets that variable, and the steps run as the job user get a clean environment, so in
production this is one dictionary lookup. Actions:

- ``kill``: SIGKILL the hook's whole process group (what slurmd does at
  ``PrologEpilogTimeout``); processes in sessions of their own (GCP, a drain) survive.
- ``exit``: ``os._exit(1)`` without cleanup;
- ``hang``: sleep for good (a stuck call; SIGALRM backstops still fire);
- ``stall``: ignore SIGALRM, then sleep for good (stuck where no backstop helps: only
  someone else can end it).
"""

from __future__ import annotations

import os
import signal
import time

ENV = "GLOBUS_TMP_FAILPOINTS"


def failpoint(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        where, _, action = item.partition("=")
        if where.strip() != name:
            continue
        action = action.strip() or "kill"
        if action == "kill":
            os.killpg(os.getpgrp(), signal.SIGKILL)
        if action == "stall":
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
        if action in ("hang", "stall"):
            while True:
                time.sleep(3600)
        os._exit(1)
