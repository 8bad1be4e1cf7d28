"""Support for running the real hooks, as real processes, as root, for real Unix users.

The hooks run from the installed console scripts next to the interpreter running the
tests (``tests/run`` builds that venv from Debian's /usr/bin/python3, so the job users
can execute it). GCP is the emulator in ``tests/emulators``, copied into a
world-readable scratch directory so the users can run it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from gcp_config_dir import create_config_dir
from polling import wait_for

HERE = Path(__file__).resolve().parent

BIN = Path(sys.executable).parent
UNIT_USERS = ("gtunit1", "gtunit2", "gtunit3")
USER_DIR = "~/.globus-tmp-unit"


def ensure_user(name: str, home: Path | None = None) -> pwd.struct_passwd:
    """The Unix user ``name``, made (with its home, by default in /home) if missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        where = ["--home-dir", str(home)] if home else []
        subprocess.run(["useradd", "--create-home", *where, "--shell", "/bin/sh", name], check=True)
        return pwd.getpwnam(name)


def _ours(proc: psutil.Process) -> bool:
    """In this test's PID namespace: a Slurm lab running beside it has nodes of its own."""
    try:
        return os.readlink(f"/proc/{proc.pid}/ns/pid") == _OWN_PID_NS
    except OSError:
        return False


_OWN_PID_NS = os.readlink("/proc/self/ns/pid")


def gcp_processes(uid: int | None = None) -> list[psutil.Process]:
    """Running GCP emulator instances (the ``-start`` processes), optionally of one uid."""
    found = []
    for proc in psutil.process_iter(["uids", "cmdline", "status"]):
        if not _ours(proc):
            continue
        try:
            argv = proc.info["cmdline"] or []
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if not any(a.endswith("globusconnectpersonal") for a in argv) or "-start" not in argv:
                continue
            if uid is None or proc.info["uids"].real == uid:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def all_user_processes(uid: int) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter(["uids", "status"]):
        try:
            if proc.info["uids"].real == uid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.Error:
            continue
    return out


@dataclass
class UnixUser:
    name: str
    uid: int
    gid: int
    home: Path

    @property
    def user_dir(self) -> Path:
        return self.home / USER_DIR[2:]

    def make_pool(self, count: int) -> list[str]:
        ids = []
        for i in range(1, count + 1):
            ids.append(
                create_config_dir(self.user_dir / "endpoints" / f"ep{i}", self.uid, self.gid)
            )
        for path in (self.user_dir, self.user_dir / "endpoints"):
            os.chown(path, self.uid, self.gid)
            os.chmod(path, 0o700)
        return ids

    def registry(self) -> dict[str, dict[str, Any]]:
        """Held leases of the pool, by entry: ``{"node": owner, "since": ...}``."""
        from globus_tmp.pool import EndpointPool

        leases = EndpointPool(self.user_dir).leases()
        return {
            n: {"node": le.owner, "since": le.since, "phase": le.phase} for n, le in leases.items()
        }


@dataclass
class Site:
    """One test's world: config, state, GCP wrapper; hooks run against it."""

    root: Path
    config: Path
    users: dict[str, UnixUser]
    settings: dict[str, object] = field(default_factory=dict)
    steps: dict[str, Any] = field(default_factory=dict)
    """Listening sockets standing for live slurmstepd steps (see :meth:`step`)."""

    def state_dir(self, node: str = "n1") -> Path:
        return self.root / "state" / node

    def hook_log(self, node: str = "n1") -> str:
        path = self.state_dir(node) / "hooks.log"
        return path.read_text() if path.exists() else ""

    def state(self, user: str, node: str = "n1") -> dict[str, Any]:
        data: dict[str, object] = json.loads(
            (self.state_dir(node) / "users" / f"{user}.json").read_text()
        )
        return data

    def gcp_wrapper(self, name: str, **knobs: str) -> str:
        """A launcher that sets emulator knobs and execs the emulator (hooks clean the env)."""
        env = {
            "GCP_EMULATOR_STATUS_INTERVAL": "0.3",
            "GCP_EMULATOR_CONNECT_DELAY": "0.6",
            "GCP_EMULATOR_STOP_DELAY": "0.3",
            **knobs,
        }
        path = self.root / f"gcp-{name}"
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        path.write_text(
            f'#!/bin/sh\n{exports} exec {self.root}/emulators/globusconnectpersonal "$@"\n'
        )
        path.chmod(0o755)
        return str(path)

    def configure(self, **settings: object) -> None:
        self.settings.update(settings)
        lines = []
        for key, value in self.settings.items():
            if isinstance(value, dict):
                table = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
                lines.append(f"{key} = {{ {table} }}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
        self.config.write_text("\n".join(lines) + "\n")

    def _hook_env(self, job: str, user: str, node: str) -> dict[str, str]:
        u = self.users[user]
        return {
            "SLURM_JOB_ID": job,
            "SLURM_JOB_USER": u.name,
            "SLURM_JOB_UID": str(u.uid),
            "SLURM_JOB_GID": str(u.gid),
            "SLURMD_NODENAME": node,
            "SLURM_SCRIPT_CONTEXT": "prolog_slurmd",
            "GLOBUS_TMP_CONFIG": str(self.config),
        }

    def hook(
        self, name: str, job: str, user: str, node: str = "n1", wait: bool = True, failpoint=""
    ):
        """Run globus-tmp-<name> as slurmd would (root, no PATH, a process group of its
        own, which slurmd kills on a timeout); Popen if not wait. ``failpoint``: e.g.
        ``"prolog.after_spawn=kill"`` (see globus_tmp.failpoints)."""
        argv = [str(BIN / f"globus-tmp-{name}")]
        env = self._hook_env(job, user, node)
        if failpoint:
            env["GLOBUS_TMP_FAILPOINTS"] = failpoint
        if not wait:
            return subprocess.Popen(
                argv,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        res = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=300, start_new_session=True
        )
        if not failpoint and self.settings.get("on_failure") != "fail":
            # the fault matrix's first column: a hook never drains a node by itself
            assert res.returncode == 0, f"globus-tmp-{name} exited {res.returncode}: {res.stderr}"
        return res

    def admin(self, *args: str, node: str = "n1") -> subprocess.CompletedProcess[str]:
        """``globus-tmp-admin ARGS`` as HealthCheckProgram runs it: root, SLURMD_NODENAME."""
        env = {"SLURMD_NODENAME": node, "GLOBUS_TMP_CONFIG": str(self.config)}
        return subprocess.run(
            [str(BIN / "globus-tmp-admin"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            start_new_session=True,
        )

    def slurm_conf(self, prolog_flags: str = "Alloc,Contain") -> Path:
        """A slurm.conf beside globus-tmp.conf (where the hooks look without SLURM_CONF)
        whose SlurmdSpoolDir is ``<root>/spool/%n``, root-owned like slurmd's."""
        (self.root / "spool").mkdir(mode=0o755, exist_ok=True)
        conf = self.root / "slurm.conf"
        conf.write_text(
            f"SlurmdSpoolDir={self.root}/spool/%n\nPrologFlags={prolog_flags}\n"
            "ProctrackType=proctrack/linuxproc\n"
        )
        return conf

    def step(self, job: str, node: str = "n1", step: str = "4294967292", live: bool = True) -> None:
        """Create (or remove) the socket slurmd keeps for a job step on ``node``."""
        spool = self.root / "spool" / node
        spool.mkdir(mode=0o755, parents=True, exist_ok=True)
        path = spool / f"{node}_{job}.{step}"
        if not live:  # the step ended: slurmstepd closes and removes its socket
            listener = self.steps.pop(str(path), None)
            if listener is not None:
                listener.close()
            path.unlink(missing_ok=True)
            return
        import socket

        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(8)
        self.steps[str(path)] = listener

    def prolog(
        self, job: str, user: str = "gtunit1", node: str = "n1"
    ) -> subprocess.CompletedProcess[str]:
        return self.hook("prolog", job, user, node)  # type: ignore[no-any-return]

    def epilog(
        self, job: str, user: str = "gtunit1", node: str = "n1"
    ) -> subprocess.CompletedProcess[str]:
        return self.hook("epilog", job, user, node)  # type: ignore[no-any-return]

    def as_user(
        self, user: str, argv: list[str], node: str = "n1", job: str = "1"
    ) -> subprocess.CompletedProcess[str]:
        """Run a command as the job user inside a 'job' on ``node`` (TaskProlog, CLI)."""
        env = [
            f"GLOBUS_TMP_CONFIG={self.config}",
            f"SLURMD_NODENAME={node}",
            f"SLURM_JOB_ID={job}",
            "PATH=/usr/bin:/bin",
        ]
        return subprocess.run(
            ["runuser", "-u", user, "--", "env", "-i", *env, *argv],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def endpoint(
        self, user: str = "gtunit1", *args: str, node: str = "n1", job: str = "1"
    ) -> subprocess.CompletedProcess[str]:
        return self.as_user(user, [str(BIN / "globus-tmp-endpoint"), *args], node=node, job=job)

    def wait_connected(self, user: str = "gtunit1", node: str = "n1", timeout: float = 30) -> None:
        """Wait, as a job would (``globus-tmp-endpoint --wait``), until the user's GCP on
        ``node`` is connected: a cold Prolog returns before that (``start_wait``)."""
        res = self.endpoint(user, "--wait", f"{timeout:g}", node=node)
        assert res.returncode == 0, res.stderr

    def emulate_transfer(self, seconds: float, user: str = "gtunit1", node: str = "n1") -> None:
        """Have the user's GCP on ``node`` report a transfer for ``seconds`` (the
        emulator's ``-emulator-transfer``), once it is connected, as Globus would: a cold
        Prolog returns before the connect, and the emulator refuses a transfer before it."""
        self.wait_connected(user, node)
        gcp = str(self.settings["gcp_path"])
        res = self.as_user(user, [gcp, "-emulator-transfer", str(seconds)], node=node)
        assert res.returncode == 0, res.stderr or res.stdout

    def wait_gcp_stopped(self, user: str = "gtunit1", timeout: float = 15.0) -> None:
        """Wait until the user has no GCP (after the last job, an unverified idle GCP is
        kept up for ``linger_unverified`` by a drain) and no drain runs."""
        uid = self.users[user].uid
        wait_for(
            lambda: not gcp_processes(uid) and not drain_processes(),
            timeout=timeout,
            what=f"GCP of {user} to stop",
        )

    def taskprolog(
        self, user: str = "gtunit1", node: str = "n1"
    ) -> subprocess.CompletedProcess[str]:
        return self.as_user(user, [str(BIN / "globus-tmp-taskprolog")], node=node)


def kill_user_processes(uid: int) -> None:
    for proc in all_user_processes(uid):
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    deadline = time.monotonic() + 10
    while all_user_processes(uid) and time.monotonic() < deadline:
        time.sleep(0.05)


def drain_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if not _ours(proc):
            continue
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if "globus_tmp_epilog.drain" in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            pass
    # A drain's step as the user is a fork of it (same command line): not a drain.
    pids = {p.pid for p in found}
    roots = []
    for proc in found:
        try:
            if proc.ppid() not in pids:
                roots.append(proc)
        except psutil.Error:
            pass
    return roots


def kill_drains() -> None:
    for proc in drain_processes():
        try:
            proc.kill()
        except psutil.Error:
            pass


@contextlib.contextmanager
def hung_file_system(path: Path) -> Iterator[Path]:
    """Mount at ``path`` a file system whose server never answers, as a hung network
    home does: every ``stat`` or ``open`` at or below ``path`` blocks (killably, as on a
    ``hard`` NFS mount), for root and users alike (``allow_other``). It is a FUSE mount
    made straight from ``/dev/fuse`` whose INIT is never read: no FUSE library, no
    daemon. Leaving aborts the connection (waiters get ENOTCONN) and unmounts."""
    if not os.path.exists("/dev/fuse"):
        import pytest

        pytest.skip("no /dev/fuse: no file system that hangs can be made here")
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    options = f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
    if libc.mount(b"globus-tmp-hung", str(path).encode(), b"fuse", 0, options) != 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, f"mounting a hung file system at {path}: {os.strerror(err)}")
    try:
        yield path
    finally:
        os.close(fd)  # the server is gone: the connection is aborted
        libc.umount2(str(path).encode(), 2)  # MNT_DETACH


def blocks(argv: list[str], seconds: float = 2.0) -> bool:
    """Whether ``argv`` is still running after ``seconds``; then its whole session is
    killed (a process left waiting on a hung file system can hold a directory's lock:
    whoever next changes that directory would wait with it, unkillably)."""
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True
    return False
