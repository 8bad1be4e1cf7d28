"""Which of a user's jobs are provably gone from this node, from witnesses users cannot forge.

The job set is reconciled so a skipped Epilog does not keep GCP up forever; but
dropping a job that still runs stops GCP under it, so a job is dropped only on proof:

- **Step sockets.** slurmd keeps one socket per job step on the node in its spool dir,
  ``<node>_<jobid>.<stepid>``, owned by root in a root-owned directory (what
  ``scontrol listpids`` reads). A listing cannot be forged by users and cannot block on
  a user's file system, unlike process titles and ``/proc/PID/cmdline``.
- **Contain.** With ``PrologFlags=Contain`` a job has an extern step on every node for
  its whole life: no socket of the job here means the job is gone from here. Without
  it, a node of a multi-node job has no step between ``srun`` calls, so absence proves
  nothing.
- **slurmctld.** Without Contain, a job not seen here is asked about (``squeue``, only
  for jobs older than ``job_grace``, never on the join path): a job Slurm no longer
  lists as pending, running, suspended or completing is gone. If Slurm cannot answer,
  nothing is dropped.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Collection
from pathlib import Path
from typing import Protocol

from .slurmconf import SlurmSettings
from .slurmview import SlurmView

# Slurm job states after which a job holds nothing on its nodes.
_ENDED = frozenset(
    {
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)


class JobProbe(Protocol):
    def gone(self, user: str, job_ids: Collection[str]) -> tuple[set[str], str]:
        """Of ``job_ids`` (jobs of ``user`` in this node's set), those proven gone,
        and how that was decided (for the log)."""

    def running_here(self, user: str) -> set[str] | None:
        """The user's jobs Slurm runs on this node (to rebuild a lost job set); None
        when Slurm cannot be asked."""


def step_jobs(spool: Path, node: str, probe: Collection[str] = ()) -> set[str] | None:
    """Job ids with a step socket of ``node`` in ``spool``; None if it cannot be trusted.

    A socket of a job in ``probe`` counts only if a slurmstepd still listens on it: a
    node that died hard (power cut, killed slurmd) leaves its steps' sockets behind, and
    a connect to those is refused at once.
    """
    try:
        st = os.lstat(spool)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & stat.S_IWOTH:
        return None
    prefix = f"{node}_"
    found: set[str] = set()
    try:
        entries = list(os.scandir(spool))
    except OSError:
        return None
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix):
            continue
        job, dot, step = name[len(prefix) :].partition(".")
        if not (dot and job.isdigit() and step.isdigit()):
            continue
        try:
            est = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not (stat.S_ISSOCK(est.st_mode) and est.st_uid == 0):
            continue
        if job in found or job not in probe or _listening(entry.path):
            found.add(job)
    return found


def _listening(path: str) -> bool:
    """Whether a process listens on the Unix socket ``path`` (refused: a dead step's)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(path)
        except ConnectionRefusedError:
            return False
        except OSError:
            return True  # busy or slow is not proof of death
    return True


class SlurmJobProbe:
    """:class:`JobProbe` from the spool dir's step sockets, Contain, and ``squeue``."""

    def __init__(
        self,
        settings: SlurmSettings,
        node: str,
        timeout: float = 10.0,
        squeue: str | None = None,
        bin_dir: str = "",
    ) -> None:
        self.settings = settings
        self.node = node
        self.slurm = SlurmView(timeout, squeue=squeue, bin_dir=bin_dir)

    def gone(self, user: str, job_ids: Collection[str]) -> tuple[set[str], str]:
        spool = self.settings.spool_dir_for(self.node)
        here = step_jobs(spool, self.node, probe=job_ids)
        unseen = set(job_ids) if here is None else {j for j in job_ids if j not in here}
        if not unseen:
            return set(), "every job has a step here"
        if here is not None and self.settings.contain:
            return unseen, "no step in slurmd's spool dir (PrologFlags=Contain)"
        listed = self._squeue_live(user)
        if listed is None:
            return set(), "not provable: Slurm could not be asked"
        return {j for j in unseen if j not in listed}, "not listed by squeue"

    def running_here(self, user: str) -> set[str] | None:
        return self._squeue_live(user, f"--nodelist={self.node}")

    def _squeue_live(self, user: str, *extra: str) -> set[str] | None:
        jobs = self.slurm.jobs(user, *extra)
        if jobs is None:
            return None
        return {job for job, state in jobs if job and state not in _ENDED}
