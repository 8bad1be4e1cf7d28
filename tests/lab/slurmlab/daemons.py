"""Starting, watching and stopping the lab's daemons: munged, slurmctld, and the process
primitives the nodes (nodes.py) and the Globus API emulator (globus.py) are started with.

Every daemon runs in the foreground of its own session as a child of the process that
brought the lab up; it is recorded by pid and start time, and stopped by those alone
(never by name: other labs and other test suites may run the same programs).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .jobs import SlurmCommands
from .procs import all_pids, proc_alive, proc_argv, proc_start_time
from .shell import LabError, port_free, run, tail


class Daemons(SlurmCommands):
    """Process control for the lab's daemons, munged and slurmctld, and the lab's health."""

    def _spawn(self, argv: Sequence[str], log: Path, **kw: Any) -> tuple[int, int]:
        """Start a daemon in the foreground of its own session; return (pid, start time)."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.root,
                **kw,
            )
        self._children[proc.pid] = proc
        start = None
        for _ in range(50):
            start = proc_start_time(proc.pid)
            if start is not None:
                break
            time.sleep(0.01)
        if start is None or proc.poll() is not None:
            raise LabError(f"{argv[0]} exited at once (rc={proc.poll()}):\n{tail(log)}")
        return proc.pid, start

    def _reap(self, pid: int) -> None:
        """Collect a child's exit status if it is ours, so it does not linger as a zombie."""
        proc = self._children.get(pid)
        if proc is not None:
            proc.poll()  # through Popen, so it knows its child is gone
            return
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)

    def _stop_pid(
        self,
        name: str,
        pid: int,
        start: int,
        grace: float = 15,
        signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGKILL),
    ) -> None:
        proc = self._children.get(pid)

        def alive() -> bool:
            # Our own child is gone once reaped: a multi-threaded daemon (slurmctld) whose
            # main thread has exited shows as a zombie in /proc while its other threads
            # still run, and cannot be reaped until they are done.
            if proc is not None:
                return proc.poll() is None
            return proc_alive(pid, start)

        for sig in signals:
            if not alive():
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                self._reap(pid)
                if not alive():
                    break
                time.sleep(0.1)
        self._reap(pid)
        if alive():
            raise LabError(f"{name} (pid {pid}) survived SIGKILL")
        self._children.pop(pid, None)

    def _kill_where(self, pred: Callable[[int], bool], what: str, grace: float = 5) -> None:
        me = os.getpid()
        victims = [p for p in all_pids() if p != me and proc_alive(p) and pred(p)]
        if not victims:
            return
        self._log(
            f"killing {len(victims)} leftover {what} process(es): "
            + "; ".join(f"{p} {' '.join(proc_argv(p))[:80]}" for p in victims)
        )
        starts = {p: proc_start_time(p) for p in victims}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in victims:
                if proc_alive(p, starts[p]):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(p, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                for p in victims:
                    self._reap(p)
                if not any(proc_alive(p, starts[p]) for p in victims):
                    return
                time.sleep(0.1)

    def _check_ports(self) -> None:
        ports = [self.ctld_port, *(self.node_port(n) for n in self.nodes)]
        busy = [p for p in ports if not port_free(p)]
        if busy:
            raise LabError(f"ports {busy} on 127.0.0.1 are in use; pick another base_port")

    def _ensure_munge_key(self) -> None:
        self.munge_dir.mkdir(mode=0o755, exist_ok=True)
        pw = pwd.getpwnam("munge")
        os.chown(self.munge_dir, pw.pw_uid, pw.pw_gid)
        self.munge_dir.chmod(0o755)
        key = self.munge_dir / "munge.key"
        if not key.exists():
            run(["mungekey", "--create", f"--keyfile={key}"])
        os.chown(key, pw.pw_uid, pw.pw_gid)
        key.chmod(0o600)

    def _start_munged(self) -> list[int]:
        pw = pwd.getpwnam("munge")
        log = self.munge_dir / "munged.log"
        argv = [
            "munged",
            "--foreground",
            "--force",
            f"--socket={self.munge_socket}",
            f"--key-file={self.munge_dir / 'munge.key'}",
            f"--pid-file={self.munge_dir / 'munged.pid'}",
            f"--log-file={log}",
            f"--seed-file={self.munge_dir / 'munged.seed'}",
        ]
        pid, start = self._spawn(
            argv, self.log_dir / "munged.out", user=pw.pw_uid, group=pw.pw_gid, extra_groups=[]
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not proc_alive(pid):
                raise LabError(f"munged died:\n{tail(log)}\n{tail(self.log_dir / 'munged.out')}")
            if self.munge_socket.exists():
                cp = subprocess.run(
                    f"munge -n -S {shlex.quote(str(self.munge_socket))} | "
                    f"unmunge -S {shlex.quote(str(self.munge_socket))}",
                    shell=True,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if cp.returncode == 0:
                    return [pid, start]
            time.sleep(0.1)
        raise LabError(f"munged not answering on {self.munge_socket}:\n{tail(log)}")

    def _start_slurmctld(self) -> list[int]:
        # -c: a clean start every time (no jobs recovered from an earlier lab).
        pid, start = self._spawn(
            [self.slurm.program("slurmctld"), "-D", "-c", "-i", "-f", str(self.slurm_conf)],
            self.log_dir / "slurmctld.out",
        )
        return [pid, start]

    def _wait_ready(self) -> None:
        """Ready means ready: every node idle in sinfo (drained ones resumed), bounded."""
        deadline = time.monotonic() + self.ready_timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            self._check_daemons()
            try:
                states = self.sinfo_states()
            except LabError:
                states = {}
            bad = [n for n, s in states.items() if "drain" in s or s.startswith("down")]
            for n in bad:
                if "drain" in states[n]:
                    self.scontrol("update", f"nodename={n}", "state=resume", check=False)
            if len(states) == len(self.nodes) and all(s == "idle" for s in states.values()):
                return
            time.sleep(0.5)
        raise LabError(
            f"nodes not idle after {self.ready_timeout:.0f}s: {states or 'sinfo gave nothing'}\n"
            + self._logs_excerpt()
        )

    def _check_daemons(self) -> None:
        state = self._load_state()
        dead = [name for name, pid, start in self._recorded(state) if not proc_alive(pid, start)]
        if dead:
            raise LabError(f"lab daemons died: {', '.join(dead)}\n{self._logs_excerpt()}")
