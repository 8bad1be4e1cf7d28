"""Which Slurm jobs are alive on this node, from the processes that run them.

Reconciling the job set against this (and not against slurmctld) keeps the epilog off
the network: every job step on a node is run by a ``slurmstepd`` whose process title
is ``slurmstepd: [<jobid>.<step>]``. The scan reads ``/proc`` directly: it runs on the
epilog's non-last path, where importing psutil would cost more than the scan.
"""

from __future__ import annotations

import os
import re
from typing import Protocol

_STEP = re.compile(rb"\[(\d+)\.")


class JobProbe(Protocol):
    def live_job_ids(self) -> set[str]:
        """Ids of the jobs that have a step running on this node."""


class SlurmstepdJobs:
    """:class:`JobProbe` reading slurmstepd process titles from ``/proc``."""

    def live_job_ids(self) -> set[str]:
        found: set[str] = set()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/comm", "rb") as fh:
                    if fh.read().strip() != b"slurmstepd":
                        continue
                with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                    match = _STEP.search(fh.read())
            except OSError:
                continue
            if match:
                found.add(match.group(1).decode())
        return found
