"""What Slurm says about the user's jobs and the cluster's nodes, asked as the user.

Used on cold paths only (a start that must reclaim a lease, a lease's slot in a wide
job): every call runs a Slurm client with a bound, in a session of its own, and an
answer that cannot be had is ``None``, never a guess.
"""

from __future__ import annotations

import os
import re
import shutil
import time

from .commands import run_bounded
from .errors import CommandError
from .privileges import SAFE_PATH

SYSTEM_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"
"""Where distributions put ``slurmd``; searched after :data:`SAFE_PATH`."""

# Node states in which nothing of a job can still run there.
_DOWN = ("DOWN", "FUTURE", "UNKNOWN", "NOT_RESPONDING", "POWERED_DOWN", "POWERING_DOWN")


class SlurmView:
    def __init__(
        self,
        timeout: float = 10.0,
        squeue: str | None = None,
        scontrol: str | None = None,
        bin_dir: str = "",
    ) -> None:
        self.timeout = timeout
        self.paths = {"squeue": squeue, "scontrol": scontrol}
        self.bin_dir = bin_dir

    def jobs(self, user: str, *extra: str) -> list[tuple[str, str]] | None:
        """(job id, state) of every job Slurm still lists for ``user``."""
        lines = self._lines(
            "squeue", "--noheader", f"--user={user}", "--states=all", "--format=%A %T", *extra
        )
        if lines is None:
            return None
        return [(job, state.strip().upper()) for job, _, state in (x.partition(" ") for x in lines)]

    def nodes_with_jobs(self, user: str) -> set[str] | None:
        """Nodes where ``user`` has a running, suspended or completing job."""
        lists = self._lines("squeue", "-h", f"--user={user}", "--states=R,CG,CF,S", "--format=%N")
        if lists is None:
            return None
        nodes: set[str] = set()
        for hostlist in set(lists):
            names = self.hostnames(hostlist)
            if names is None:
                return None
            nodes.update(names)
        return nodes

    def hostnames(self, hostlist: str) -> list[str] | None:
        """``n[1-3]`` -> ``n1 n2 n3``, expanded by Slurm itself."""
        return self._lines("scontrol", "show", "hostnames", hostlist)

    def node_down_since(self, node: str, since: float) -> str | None:
        """Why ``node`` cannot be running what it started at ``since`` (down, or booted
        after it); None when it may be, or Slurm cannot say."""
        lines = self._lines("scontrol", "show", "node", node, "--oneliner")
        if not lines:
            return None
        fields = dict(f.split("=", 1) for f in lines[0].split() if "=" in f)
        state = fields.get("State", "")
        if any(word in state for word in _DOWN):
            return f"node {node} is {state}"
        try:
            booted = time.mktime(time.strptime(fields.get("BootTime", ""), "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            return None
        return f"node {node} rebooted since" if booted > since + 60 else None

    def _lines(self, program: str, *args: str) -> list[str] | None:
        path = self.paths.get(program) or slurm_program(program, self.bin_dir)
        if not path:
            return None
        try:
            out = run_bounded([path, *args], self.timeout, check=True).stdout
        except CommandError:
            return None
        return [line.strip() for line in out.splitlines() if line.strip()]


def slurm_program(program: str, bin_dir: str = "") -> str | None:
    """The path of Slurm's ``program`` (``squeue``, ``scontrol``, ``slurmd``): in
    ``slurm_bin_dir`` and its sibling ``sbin`` (a prefix install: ``/opt/slurm/bin``,
    ``/opt/slurm/sbin``) when set, else in the safe PATH and the system's ``sbin``
    directories. Never from the caller's PATH: root runs these."""
    if bin_dir:
        sbin = os.path.join(os.path.dirname(bin_dir.rstrip("/")), "sbin")
        search = os.pathsep.join((bin_dir, sbin))
    else:
        search = os.pathsep.join((SAFE_PATH, SYSTEM_SBIN))
    return shutil.which(program, path=search)


def slurm_version(bin_dir: str = "", timeout: float = 10.0) -> tuple[int, int, int] | None:
    """The Slurm this node runs: ``slurmd -V`` (slurmstepd, which loads the SPANK plugin,
    is slurmd's), else ``scontrol --version``; None when neither answers. Both print
    e.g. ``slurm 24.11.7`` (Debian: ``slurm-wlm 22.05.8``)."""
    for program, flag in (("slurmd", "-V"), ("scontrol", "--version")):
        path = slurm_program(program, bin_dir)
        if not path:
            continue
        try:
            out = run_bounded([path, flag], timeout, check=True).stdout
        except CommandError:
            continue
        found = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
        if found:
            return int(found[1]), int(found[2]), int(found[3])
    return None
