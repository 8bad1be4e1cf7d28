"""Looking into the nodes from the host: commands run on a node, pids translated between
host and node, the hooks' node-local state and log, and the running GCPs.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from .nodes import Nodes
from .procs import (
    all_pids,
    mnt_ns,
    namespace_pids,
    pid_ns,
    proc_alive,
    proc_argv,
    proc_ppid,
    proc_uid,
    user_name,
)
from .shell import LabError, run


@dataclass(frozen=True)
class GcpProc:
    """One running GCP (emulator) instance, as seen from the host."""

    pid: int
    """As the host sees it (what ``os.kill`` from the tests takes)."""
    uid: int
    user: str
    node: Optional[str]
    """The lab node whose PID namespace the process is in (None: none of them)."""
    argv: tuple[str, ...]
    node_pid: Optional[int] = None
    """As its node sees it: what the hooks record in the node's state and hooks.log."""


class NodeView(Nodes):
    """Runs commands on nodes and inspects what runs there (processes, hook state, GCPs)."""

    def node_exec(
        self,
        node: str,
        argv: Sequence[str],
        *,
        check: bool = False,
        timeout: float = 30,
        user: Optional[str] = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on a node: in its mount namespace (its /tmp, /run/globus-tmp and
        /proc) and its PID namespace (``ps``, ``kill`` and pids are the node's)."""
        # nsenter forks after entering: the PID namespace only applies to its children.
        pre = ["nsenter", "-t", str(self.node_init_pid(node)), "-m", "-p", "--"]
        if user:
            pre += ["runuser", "-u", user, "--"]
        return run([*pre, *argv], check=check, timeout=timeout)

    def node_of_pid(self, pid: int) -> Optional[str]:
        """The lab node whose PID namespace a host pid is in (None: none of them).

        A process entered into a node's mount namespace only (``nsenter -m``) counts too.
        """
        return self._node_finder()(pid)

    def _node_finder(self) -> Callable[[int], Optional[str]]:
        """A host pid -> its node, reading the state file once (for scans of /proc)."""
        by_pid_ns = {ns: n for n, ns in self.node_namespaces("pid").items()}
        by_mnt_ns = {ns: n for n, ns in self.node_namespaces("mnt").items()}

        def node_of(pid: int) -> Optional[str]:
            return by_pid_ns.get(pid_ns(pid) or "") or by_mnt_ns.get(mnt_ns(pid) or "")

        return node_of

    def node_pid(self, pid: int) -> Optional[int]:
        """A host pid as its node sees it (``NSpid:``), as in the hooks' state and logs.

        None if the process is gone or runs on no lab node.
        """
        if self.node_of_pid(pid) is None:
            return None
        pids = namespace_pids(pid)
        return pids[-1] if len(pids) > 1 else None

    def host_pid(self, node: str, node_pid: int) -> Optional[int]:
        """The host pid of the process that ``node`` knows as ``node_pid`` (None: none)."""
        ns = self.node_namespaces("pid").get(node)
        for pid in all_pids():
            pids = namespace_pids(pid)
            if len(pids) > 1 and pids[-1] == node_pid and pid_ns(pid) == ns:
                return pid
        return None

    def node_processes(self, node: str) -> list[int]:
        """Host pids of every process on ``node`` (in its PID namespace)."""
        ns = self.node_namespaces("pid").get(node)
        return sorted(p for p in all_pids() if ns and pid_ns(p) == ns)

    def node_user_state(self, node: str, user: str) -> Optional[dict[str, Any]]:
        """The hooks' node-local state of ``user`` on ``node`` (``users/<user>.json``), or
        None if there is none. Its pids are the node's (see :meth:`host_pid`)."""
        path = f"{self.node_state_dir(node)}/users/{user}.json"
        cp = self.node_exec(node, ["cat", path])
        if cp.returncode != 0:
            return None
        try:
            data: dict[str, Any] = json.loads(cp.stdout)
        except ValueError as exc:
            raise LabError(f"{node}:{path} is not JSON ({exc}): {cp.stdout[:200]!r}") from None
        return data

    def hook_log(self, node: str) -> str:
        """The hooks' log on a node (``/run/globus-tmp/<node>/hooks.log``); '' if none."""
        cp = self.node_exec(node, ["cat", f"{self.node_state_dir(node)}/hooks.log"])
        return cp.stdout if cp.returncode == 0 else ""

    def gcp_processes(
        self, user: Optional[str] = None, *, all_calls: bool = False
    ) -> list[GcpProc]:
        """Running GCP emulator instances (``-start``) of this lab, with user and node.

        Of this lab: on a lab node (its PID or mount namespace), or run from the lab's copy
        of the emulators; other emulators on the host (other test suites) are not the lab's.
        ``pid`` is the host's pid, ``node_pid`` the node's (as the hooks record it).

        A running instance is the outermost process whose argv runs the emulator with
        ``-start`` (or ``-debug``); ``-status``/``-stop`` calls are short-lived clients and
        are left out unless ``all_calls``. A launcher and its child count once.
        """
        node_of = self._node_finder()
        emu_dir = str(self.emulators_dir)
        matched: dict[int, tuple[str, ...]] = {}
        for pid in all_pids():
            argv = proc_argv(pid)
            if not argv or not any(
                "gcp_emulator" in a or a.endswith("/globusconnectpersonal") or a.startswith(emu_dir)
                for a in argv
            ):
                continue
            if not all_calls and not ({"-start", "-debug"} & set(argv)):
                continue
            matched[pid] = argv
        out = []
        for pid, argv in matched.items():
            if proc_ppid(pid) in matched:
                continue  # the child of a matched launcher: same instance
            uid = proc_uid(pid)
            if uid is None or not proc_alive(pid):
                continue
            name = user_name(uid)
            if user is not None and name != user:
                continue
            node = node_of(pid)
            if node is None and not any(a.startswith(emu_dir) for a in argv):
                continue  # another emulator on this host (e.g. the emulator's own tests)
            ns_pids = namespace_pids(pid)
            node_pid = ns_pids[-1] if node and len(ns_pids) > 1 else None
            out.append(
                GcpProc(pid=pid, uid=uid, user=name, node=node, argv=argv, node_pid=node_pid)
            )
        return sorted(out, key=lambda g: (g.node or "", g.user, g.pid))

    def wait_no_gcp(
        self, user: Optional[str] = None, node: Optional[str] = None, timeout: float = 60
    ) -> list[GcpProc]:
        """Wait until no GCP of ``user`` (on ``node``) runs; return what is left (empty: ok)."""
        deadline = time.monotonic() + timeout
        while True:
            left = [g for g in self.gcp_processes(user) if node is None or g.node == node]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.3)

    def kill_gcp(self) -> list[GcpProc]:
        """SIGKILL every running GCP emulator instance (cleanup after a failed test)."""
        victims = self.gcp_processes()
        pids = {g.pid for g in victims}
        self._kill_where(lambda pid: pid in pids, "GCP", grace=5)
        return victims
