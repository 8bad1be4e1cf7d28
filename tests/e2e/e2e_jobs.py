"""Job scripts and output parsing shared by the end-to-end tests.

Every job reports through one probe (``<lab root>/bin/e2e-probe``, outside /tmp so every
node can run it), which prints one line per call::

    E2E|<node>|<job>|<label>|<exit code of globus-tmp-endpoint>|$GLOBUS_TMP_ENDPOINT_ID|
        $GLOBUS_TMP_PATHS|<what globus-tmp-endpoint printed>      (one line, wrapped here)

so a test compares what the TaskProlog exported with what the CLI says, per node.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from polling import wait_for
from slurmlab import SlurmLab

PROBE = r"""#!/bin/bash
# Written by tests/e2e/e2e_jobs.py: what a job sees of its node's endpoint, on one line.
label=${1:-probe}
out=$(globus-tmp-endpoint 2>&1); rc=$?
out=${out//$'\n'/ \\n }
printf 'E2E|%s|%s|%s|%s|%s|%s|%s\n' "$SLURMD_NODENAME" "$SLURM_JOB_ID" "$label" "$rc" \
    "${GLOBUS_TMP_ENDPOINT_ID:-}" "${GLOBUS_TMP_PATHS:-}" "$out"
"""


@dataclass(frozen=True)
class Probe:
    """One probe line: what one task on one node saw."""

    node: str
    job: str
    label: str
    cli_rc: int
    env_id: str
    env_paths: str
    cli_out: str


def install_probe(lab: SlurmLab) -> Path:
    path = lab.bin_dir / "e2e-probe"
    path.write_text(PROBE)
    path.chmod(0o755)
    return path


def probe_cmd(lab: SlurmLab, label: str = "probe") -> str:
    return f"{lab.bin_dir / 'e2e-probe'} {label}"


def parse_probes(output: str) -> list[Probe]:
    probes = []
    for line in output.splitlines():
        if not line.startswith("E2E|"):
            continue
        parts = line.split("|", 7)
        if len(parts) != 8:
            continue
        _, node, job, label, rc, env_id, paths, out = parts
        probes.append(Probe(node, job, label, int(rc), env_id, paths, out.strip()))
    return probes


def reason_lines(output: str) -> list[str]:
    """The lines the TaskProlog prints into a job's output when it has no endpoint."""
    return [line for line in output.splitlines() if line.startswith("globus-tmp:")]


def flag_path(lab: SlurmLab, user: str, name: str) -> Path:
    return lab.home(user) / f"e2e-flag-{name}"


def waiting_job(lab: SlurmLab, user: str, name: str, limit: int = 240) -> str:
    """A batch script that probes, then waits for ``~/e2e-flag-<name>`` (bounded), probes again.

    Lets a test end jobs in exactly the order it wants (touch the flag: the job completes
    normally; or scancel it), instead of guessing with sleeps.
    """
    flag = flag_path(lab, user, name)
    return (
        "#!/bin/bash\n"
        f"{probe_cmd(lab, 'start')}\n"
        f"for i in $(seq {limit * 5}); do [ -e {flag} ] && break; sleep 0.2; done\n"
        f"{probe_cmd(lab, 'end')}\n"
    )


def release(lab: SlurmLab, user: str, name: str) -> None:
    """Let a :func:`waiting_job` finish (as the user, so the file is the user's)."""
    path = flag_path(lab, user, name)
    path.touch()
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)


def clear_flags(lab: SlurmLab) -> None:
    for user in lab.users:
        for f in lab.home(user).glob("e2e-flag-*"):
            f.unlink()


def wait_output(
    lab: SlurmLab, job: str, user: str, label: str, timeout: float = 60, count: int = 1
) -> list[Probe]:
    """Wait until the job printed ``count`` probe lines with ``label``; return them."""
    found: list[Probe] = []

    def ready() -> bool:
        nonlocal found
        found = [p for p in parse_probes(lab.job_output(job, user)) if p.label == label]
        return len(found) >= count

    wait_for(ready, timeout, f"job {job} to print its '{label}' probe")
    return found


def explain(lab: SlurmLab, *jobs: str, user: Optional[str] = None) -> str:
    """Everything worth reading when an e2e assertion fails (for assertion messages)."""
    parts = []
    for job in jobs:
        parts.append(f"--- job {job}: {lab.job_info(job)}\n{lab.job_output(job, user)}")
    for node in lab.nodes:
        parts.append(f"--- {node} hooks.log\n{lab.hook_log(node)}")
    parts.append(f"--- sinfo -R\n{lab.sinfo_reasons()}")
    parts.append(f"--- GCP processes: {lab.gcp_processes()}")
    return "\n".join(parts)


class HookLogMark:
    """Where each node's hooks.log ended when the test began: read only what came after."""

    def __init__(self, lab: SlurmLab) -> None:
        self.lab = lab
        self.offsets = {node: len(lab.hook_log(node)) for node in lab.nodes}

    def new_text(self, node: str) -> str:
        return self.lab.hook_log(node)[self.offsets[node] :]

    def started_lines(self, node: str, user: str) -> list[str]:
        """New hooks.log lines on ``node`` that record a GCP start for ``user``."""
        return [
            line
            for line in self.new_text(node).splitlines()
            if f"user={user}" in line and re.search(r": started\b", line)
        ]


class GcpSampler:
    """Samples the GCP instances of ``user`` (None: of every user) on ``node`` in a thread.

    "At most one GCP per (node, user) at any moment" can only be checked by looking
    often while the jobs' prologs race each other. ``max_seen`` is the most GCPs one user
    had on the node at once (``max_by_user`` per user), ``pids`` every host pid seen.
    """

    def __init__(
        self, lab: SlurmLab, user: Optional[str], node: str, interval: float = 0.1
    ) -> None:
        self.lab, self.user, self.node, self.interval = lab, user, node, interval
        self.max_by_user: dict[str, int] = {}
        self.pids: set[int] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def max_seen(self) -> int:
        return max(self.max_by_user.values(), default=0)

    def _run(self) -> None:
        while not self._stop.is_set():
            procs = [g for g in self.lab.gcp_processes(self.user) if g.node == self.node]
            for user in {g.user for g in procs}:
                count = sum(g.user == user for g in procs)
                self.max_by_user[user] = max(self.max_by_user.get(user, 0), count)
            self.pids.update(g.pid for g in procs)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> GcpSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def output_field(output: str, key: str) -> str:
    """The rest of the line ``KEY value`` a job printed (AssertionError if none)."""
    for line in output.splitlines():
        if line.startswith(key + " "):
            return line.split(None, 1)[1]
    raise AssertionError(f"no {key} line in the job output:\n{output}")
