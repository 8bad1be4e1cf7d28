"""How a lab node starts, stops and reboots, and how the lab knows its processes.

A node is ``unshare`` (host PID namespace) -> ``sh`` -> exec of the node's init
(nodeinit.py, PID 1 of a new PID namespace, in a private mount namespace with its own
/proc, tmpfs's on /tmp and /run/globus-tmp, and a boot id of its own) -> ``slurmd -D``.
:meth:`Nodes._start_node` starts one, :meth:`Nodes._wait_node` records its pids and
namespace ids once slurmd runs, :meth:`Nodes._stop_node` stops one (SIGTERM to the init:
clean; SIGKILL: a power cut), :meth:`Nodes.reboot_node` power-cycles one.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from .daemons import Daemons
from .layout import BOOT_ID, HOST_PYTHON, NODE_INIT, NODE_STATE_MOUNT
from .procs import all_pids, child_pids, mnt_ns, pid_ns, proc_alive, proc_argv, proc_start_time
from .shell import LabError


class Nodes(Daemons):
    """The nodes' lifecycle (start, wait, stop, restart, reboot) and their recorded pids."""

    def _start_node(self, node: str) -> dict[str, Any]:
        """Start node ``node``: new PID and mount namespaces, its own /proc, /tmp and state dir.

        ``unshare --pid --fork --mount-proc`` forks a child that is PID 1 of a new PID
        namespace, in a new private mount namespace with a fresh ``/proc`` (the node's
        processes only). That child, ``sh``, mounts the node-local tmpfs's, gives the node
        a boot id of its own (fresh at each start, as a reboot changes it: a file of the
        lab root bound over ``/proc/sys/kernel/random/boot_id``) and execs the node's init
        (nodeinit.py), which runs ``slurmd -D`` as its child and reaps orphans.
        unshare itself stays in the host PID namespace, waiting for its child; it blocks
        SIGTERM, and ``--kill-child`` makes its death kill the node too.

        Returns the node's record for the state file, so far ``unshare`` ([pid, start])
        and ``boot_id``; :meth:`_wait_node` adds the rest once slurmd runs.
        """
        boot_id = str(uuid.uuid4())
        boot_id_file = self.run_dir / f"boot_id.{node}"
        boot_id_file.unlink(missing_ok=True)
        boot_id_file.write_text(boot_id + "\n")
        boot_id_file.chmod(0o444)
        script = (
            "set -e; mount -t tmpfs -o mode=1777 tmpfs /tmp && chmod 1777 /tmp && "
            f"mount -t tmpfs -o mode=0755 tmpfs {NODE_STATE_MOUNT} && "
            f"mount --bind -o ro {shlex.quote(str(boot_id_file))} {BOOT_ID} && "
            f"exec {HOST_PYTHON} {shlex.quote(str(self.bin_dir / NODE_INIT))} "
            f"{shlex.quote(self.slurm.program('slurmd'))} -D -N {node} "
            f"-f {shlex.quote(str(self.slurm_conf))}"
        )
        argv = [
            *self._node_pinning(node),
            "unshare",
            "--pid",
            "--fork",
            "--kill-child=SIGKILL",
            "--mount-proc",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
        ]
        pid, start = self._spawn(argv, self.log_dir / f"slurmd.{node}.out")
        return {"unshare": [pid, start], "boot_id": boot_id}

    def _node_pinning(self, node: str) -> list[str]:
        """``taskset -c CPU`` for a node with job_container on, else nothing.

        On this kernel (6.18) mount namespace ids are not ordered by creation time across
        CPUs, and job_container/tmpfs's bind of the job's new namespace onto ``.ns`` fails
        with EINVAL (the kernel's namespace-loop check: "not newer than mine") when the
        job's namespace got a lower id than the node's, i.e. was made on another CPU: the
        job is cancelled ("Prolog"), about one time in three. With the node's namespace
        and everything in the node made on one CPU, ids are ordered again.
        """
        if not self.job_container:
            return []
        cpus = sorted(os.sched_getaffinity(0))
        return ["taskset", "-c", str(cpus[self.nodes.index(node) % len(cpus)])]

    def _wait_node(self, node: str, rec: Mapping[str, Any], timeout: float = 10) -> dict[str, Any]:
        """Wait until the node's init runs slurmd; return its record with every pid and ns.

        ``init`` and ``slurmd`` are host pids (with start times); ``mnt`` and ``pidns`` the
        node's namespace ids, by which :meth:`node_of_pid` tells a process's node.
        """
        upid, ustart = rec["unshare"]
        deadline = time.monotonic() + timeout
        while True:
            # unshare's child is sh, which mounts and then execs the init (same pid).
            inits = [
                p for p in child_pids(upid) if proc_argv(p)[1:2] == (str(self.bin_dir / NODE_INIT),)
            ]
            slurmds = [
                p
                for init in inits
                for p in child_pids(init)
                if Path((*proc_argv(p), "")[0]).name == "slurmd"
            ]
            if inits and slurmds:
                init, slurmd = inits[0], slurmds[0]
                return {
                    "unshare": [upid, ustart],
                    "boot_id": rec.get("boot_id"),
                    "init": [init, proc_start_time(init)],
                    "slurmd": [slurmd, proc_start_time(slurmd)],
                    "mnt": mnt_ns(init),
                    "pidns": pid_ns(init),
                }
            if not proc_alive(upid, ustart):
                raise LabError(f"node {node} died at start:\n{self._logs_excerpt()}")
            if time.monotonic() > deadline:
                raise LabError(f"slurmd of {node} did not start:\n{self._logs_excerpt()}")
            time.sleep(0.05)

    def _stop_node(self, node: str, rec: Mapping[str, Any], hard: bool = False) -> None:
        """Stop a node: SIGTERM its init (slurmd stops, then the init exits), or with
        ``hard`` SIGKILL it (a power cut). Either way the kernel then kills everything left
        in the node's PID namespace, and unshare, its parent on the host, exits."""
        if "init" in rec:
            pid, start = rec["init"]
            sigs = (signal.SIGKILL,) if hard else (signal.SIGTERM, signal.SIGKILL)
            self._stop_pid(f"init of {node}", pid, start, signals=sigs)
        if "unshare" in rec:  # blocks SIGTERM; SIGKILL kills the node too (--kill-child)
            pid, start = rec["unshare"]
            self._stop_pid(f"unshare of {node}", pid, start, signals=(signal.SIGKILL,))

    def _start_registered(
        self, node: str, state: dict[str, Any], registered: Optional[str], timeout: float
    ) -> None:
        """Start a stopped node; return once slurmctld has its new slurmd's registration
        (``SlurmdStartTime`` no longer ``registered``)."""
        # SlurmdStartTime has whole seconds: a slurmd started within the same second as
        # the one it replaces would look unregistered forever.
        with contextlib.suppress(TypeError, ValueError, OverflowError):
            then = time.mktime(time.strptime(str(registered), "%Y-%m-%dT%H:%M:%S"))
            while time.time() < then + 1:
                time.sleep(0.05)
        state["node"][node] = self._start_node(node)
        self._save_state(state)
        state["node"][node] = self._wait_node(node, state["node"][node])
        self._save_state(state)
        deadline = time.monotonic() + timeout
        while self.node_info(node).get("SlurmdStartTime") == registered:
            if time.monotonic() > deadline:
                raise LabError(
                    f"the new slurmd of {node} did not register in {timeout:.0f}s\n"
                    + self._logs_excerpt(10)
                )
            time.sleep(0.2)

    def _restart_node(self, node: str, state: dict[str, Any], timeout: float = 60) -> None:
        """Stop a node cleanly (SIGTERM to its init) and start it afresh; the state is saved.

        Returns once slurmctld has the new slurmd's registration."""
        rec = self._node_records(state).get(node)
        if rec is None:
            raise LabError(f"no {node} recorded: is the lab up?")
        registered = self.node_info(node).get("SlurmdStartTime")
        self._stop_node(node, rec)
        self._start_registered(node, state, registered, timeout)

    def reboot_node(self, node: str, timeout: float = 60) -> float:
        """Power-cycle ``node``; return the seconds it took until its new slurmd registered.

        SIGKILL to the node's init: the kernel kills everything on the node at once
        (slurmd, slurmstepds, jobs, GCP, drains; no epilog runs), and its node-local /tmp
        and /run/globus-tmp vanish with its mount namespace. Then a fresh node starts (new
        namespaces, empty tmpfs's), as after a reboot; its SlurmdSpoolDir is kept, like a
        node's local disk. Returns once slurmctld has the new slurmd's registration
        (``SlurmdStartTime`` changed). What happens to the jobs that ran there is left to
        Slurm and the caller (``scancel``, ``scontrol update state=resume``).
        """
        t0 = time.monotonic()
        state = self._load_state()
        rec = self._node_records(state).get(node)
        if rec is None:
            raise LabError(f"no {node} recorded: is the lab up?")
        registered = self.node_info(node).get("SlurmdStartTime")
        self._stop_node(node, rec, hard=True)
        if rec.get("pidns") and any(pid_ns(p) == rec["pidns"] for p in all_pids()):
            raise LabError(f"processes of {node} survived its init's SIGKILL")
        self._start_registered(node, state, registered, timeout)
        took = time.monotonic() - t0
        self._log(f"{node} rebooted in {took:.1f}s")
        return took

    def _node_pid(self, node: str, which: str) -> int:
        rec = self._node_records(self._load_state()).get(node, {})
        if which not in rec:
            raise LabError(f"no {which} recorded for {node}: is the lab up?")
        pid, start = rec[which]
        if not proc_alive(pid, start):
            raise LabError(f"the {which} of {node} (host pid {pid}) is not running")
        return int(pid)

    def node_init_pid(self, node: str) -> int:
        """Host pid of a node's init (PID 1 in the node): the handle on its namespaces."""
        return self._node_pid(node, "init")

    def slurmd_pid(self, node: str) -> int:
        """Host pid of a node's running slurmd (the init's child)."""
        return self._node_pid(node, "slurmd")

    def node_boot_id(self, node: str) -> str:
        """The node's ``/proc/sys/kernel/random/boot_id``: new at each start (reboot)."""
        rec = self._node_records(self._load_state()).get(node, {})
        if "boot_id" not in rec:
            raise LabError(f"no boot id recorded for {node}: is the lab up?")
        return str(rec["boot_id"])

    def node_namespaces(self, kind: str = "pid") -> dict[str, str]:
        """node -> that node's namespace id of ``kind``: ``pid`` (``pid:[...]``) or ``mnt``."""
        key = "pidns" if kind == "pid" else kind
        return {
            n: rec[key] for n, rec in self._node_records(self._load_state()).items() if key in rec
        }
