"""Slurm's client commands against the lab: submitting jobs, following them, node records.

Every command runs with the lab's ``SLURM_CONF`` and a clean environment; ``sbatch`` and
``srun`` run as the job user (``runuser``), from the user's home.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

from .shell import LabError, run
from .users import LabUsers

# Job states after which a job no longer holds its nodes (COMPLETING does: its epilogs run).
_ACTIVE_JOB_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "RESV_DEL_HOLD",
        "STOPPED",
    }
)


@dataclass(frozen=True)
class JobInfo:
    """The fields of ``scontrol show job`` the tests look at."""

    job_id: str
    state: str
    exit_code: str
    reason: str
    restarts: int
    nodes: str
    raw: Mapping[str, str] = field(repr=False, default_factory=dict)

    @property
    def active(self) -> bool:
        return self.state in _ACTIVE_JOB_STATES


def parse_scontrol_record(line: str) -> dict[str, str]:
    """Parse one ``scontrol -o`` record (``Key=Value`` pairs; values may hold spaces)."""
    out: dict[str, str] = {}
    # Keys are CamelCase words (some with '/' or ':'); a value runs up to the next ' Key='.
    for m in re.finditer(
        r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:]*)=(.*?)(?=\s[A-Za-z][A-Za-z0-9_/:]*=|$)", line
    ):
        out[m.group(1)] = m.group(2)
    return out


class SlurmCommands(LabUsers):
    """sbatch, srun, squeue, scontrol, sinfo, scancel on the lab, and waiting for jobs."""

    def _slurm(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 30,
        input: Optional[str] = None,
    ) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": self.slurm.path,
            "SLURM_CONF": str(self.slurm_conf),
            "LANG": "C.UTF-8",
        }
        return run(argv, check=check, timeout=timeout, env=env, input=input)

    def scontrol(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._slurm(["scontrol", *args], check=check)

    def sinfo_states(self) -> dict[str, str]:
        """node -> state as sinfo prints it (``idle``, ``mixed``, ``drained``, ``down*``...)."""
        cp = self._slurm(["sinfo", "-h", "-N", "-o", "%N %T"], timeout=15)
        out: dict[str, str] = {}
        for line in cp.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2:
                out[parts[0]] = parts[1]
        return out

    def sinfo_reasons(self) -> str:
        return self._slurm(["sinfo", "-R"], check=False).stdout

    def node_info(self, node: str) -> dict[str, str]:
        """``scontrol -o show node`` of a node, as Key -> value."""
        cp = self._slurm(["scontrol", "-o", "show", "node", node], timeout=15)
        return parse_scontrol_record(cp.stdout.strip())

    def sbatch(self, user: str, script_text: str, *sbatch_args: str, timeout: float = 30) -> str:
        """Submit ``script_text`` as ``user``; return the job id.

        Runs from the user's home with a clean environment (the job inherits it: the lab
        venv's bin first on PATH, so jobs can call ``globus-tmp-endpoint``). Unless the
        arguments say otherwise, the job's output goes to ``~user/lab-<jobid>.out``, on the
        shared home, where the host reads it with :meth:`job_output`.
        """
        args = list(sbatch_args)
        if not any(a in ("-o", "--output") or a.startswith("--output=") for a in args):
            args += ["-o", str(self.home(user) / "lab-%j.out")]
        cp = self.run_as(
            user, ["sbatch", "--parsable", *args], check=True, timeout=timeout, input=script_text
        )
        return cp.stdout.strip().split(";")[0]

    def srun(
        self,
        user: str,
        argv: Sequence[str],
        *srun_args: str,
        timeout: float = 120,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``srun <srun_args> <argv>`` as ``user`` and wait for it (output captured)."""
        return self.run_as(user, ["srun", *srun_args, *argv], check=check, timeout=timeout)

    def job_output(self, job_id: str, user: Optional[str] = None) -> str:
        """The job's stdout file (default location of :meth:`sbatch`); '' if none yet."""
        users = [user] if user else list(self.users)
        for u in users:
            path = self.home(u) / f"lab-{job_id}.out"
            if path.exists():
                return path.read_text(errors="replace")
        return ""

    def job_info(self, job_id: str) -> Optional[JobInfo]:
        """The job as slurmctld knows it, or None once it is purged (MinJobAge)."""
        cp = self._slurm(["scontrol", "-o", "show", "job", job_id], check=False, timeout=15)
        if cp.returncode != 0 or not cp.stdout.strip():
            return None
        rec = parse_scontrol_record(cp.stdout.strip().splitlines()[0])
        return JobInfo(
            job_id=rec.get("JobId", job_id),
            state=rec.get("JobState", "UNKNOWN"),
            exit_code=rec.get("ExitCode", ""),
            reason=rec.get("Reason", ""),
            restarts=int(rec.get("Restarts", "0") or 0),
            nodes=rec.get("NodeList", ""),
            raw=rec,
        )

    def wait_jobs(self, ids: Iterable[str], timeout: float = 120) -> dict[str, Optional[JobInfo]]:
        """Wait until none of the jobs is pending, running or completing (epilogs done)."""
        ids = list(ids)
        deadline = time.monotonic() + timeout
        while True:
            infos = {j: self.job_info(j) for j in ids}
            pending = [j for j, i in infos.items() if i is not None and i.active]
            if not pending:
                return infos
            if time.monotonic() > deadline:
                raise LabError(
                    f"jobs still active after {timeout}s: "
                    + ", ".join(f"{j}={infos[j].state}" for j in pending if infos[j])  # type: ignore[union-attr]
                    + "\n"
                    + self._logs_excerpt(10)
                )
            time.sleep(0.3)

    def wait_running(self, job_id: str, timeout: float = 60) -> JobInfo:
        """Wait until a job is RUNNING (its prologs are done then); return its record."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.job_info(job_id)
            if info is not None and info.state == "RUNNING":
                return info
            if info is not None and not info.active:
                raise LabError(f"job {job_id} ended before running: {info}")
            if time.monotonic() > deadline:
                raise LabError(f"job {job_id} not running after {timeout}s: {info}")
            time.sleep(0.2)

    def job_ids(self) -> list[str]:
        """Ids of the jobs squeue lists (pending, running, completing)."""
        return self._slurm(["squeue", "-h", "-o", "%i"], timeout=15).stdout.split()

    def cancel_all_jobs(self, timeout: float = 60, check: bool = True) -> None:
        """scancel every job and wait until squeue is empty (their epilogs have run)."""
        deadline = time.monotonic() + timeout
        try:
            ids = self.job_ids()
            if ids:
                self._slurm(["scancel", *ids], check=False, timeout=15)
            while ids:
                if time.monotonic() > deadline:
                    raise LabError(
                        f"jobs left after scancel and {timeout:.0f}s: {ids}\n"
                        + self._logs_excerpt(10)
                    )
                time.sleep(0.3)
                ids = self.job_ids()
        except LabError:
            if check:
                raise

    def scancel(self, *job_ids: str) -> None:
        self._slurm(["scancel", *job_ids], timeout=15)
