"""Which Slurm jobs are alive on this node, from the processes that run them.

Reconciling the job set against this (and not against slurmctld) keeps the epilog off
the network: every job step on a node is run by a ``slurmstepd`` whose process title
is ``slurmstepd: [<jobid>.<step>]``.
"""

from __future__ import annotations

import re
from typing import Protocol

import psutil

_STEP = re.compile(r"\[(\d+)\.")


class JobProbe(Protocol):
    def live_job_ids(self) -> set[str]:
        """Ids of the jobs that have a step running on this node."""


class SlurmstepdJobs:
    """:class:`JobProbe` reading slurmstepd process titles."""

    def live_job_ids(self) -> set[str]:
        found: set[str] = set()
        for proc in psutil.process_iter(["name", "cmdline"]):
            try:
                if proc.info["name"] != "slurmstepd":
                    continue
                match = _STEP.search(" ".join(proc.info["cmdline"] or ()))
            except psutil.Error:
                continue
            if match:
                found.add(match.group(1))
        return found
