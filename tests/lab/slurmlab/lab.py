"""The lab as one object: :class:`SlurmLab` composes the parts and runs the whole cluster's
lifecycle (up, down, switching job_container, status).

The parts are mixins, each in its own module and each built on the ones it uses:

- layout.LabBase: settings, paths, ports, the state file
- users.LabUsers: the job users, commands run as them
- jobs.SlurmCommands: Slurm's client commands, waiting for jobs
- daemons.Daemons: process control, munged, slurmctld, the lab's health
- nodes.Nodes: how a node starts, stops and reboots
- nodeview.NodeView: commands on nodes, pids, hook state and log, GCPs
- globus.GlobusParts: the Globus API emulator, its admin routes, logins
- pools.Pools: users' GCP pools
- install.Installer: packages, directories, the hooks' venv, the SPANK plugin
- config.ConfigWriter: slurm.conf, globus-tmp.conf, job_container.conf, plugstack.conf,
  GCP wrappers
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from .config import ConfigWriter
from .install import Installer
from .layout import GCP_WRAPPER
from .nodeview import NodeView
from .pools import Pools
from .procs import mnt_ns, pid_ns, proc_alive, proc_argv, proc_start_time, proc_uid
from .shell import LabError, PathLike, run


class SlurmLab(Pools, NodeView, ConfigWriter, Installer):
    """A Slurm cluster of ``nodes`` nodes (n1..nN) on this machine, with globus-tmp's hooks.

    With ``job_container=True`` (or :meth:`set_job_container` on a running lab), jobs get a
    private ``/tmp`` from Slurm's ``job_container/tmpfs`` (``<root>/jobtmp/<node>/<job>/.<job>``,
    :meth:`job_tmp_dir`), and the SPANK plugin of spank/ runs a helper in each job's extern
    step right after that directory is created and right before it is deleted.

    Typical use (as root)::

        lab = SlurmLab(nodes=3)
        lab.up()
        try:
            lab.make_pool("gtalice", 2)
            jid = lab.sbatch("gtalice", "#!/bin/bash\\nglobus-tmp-endpoint\\n", "-w", "n1")
            lab.wait_jobs([jid])
            print(lab.job_output(jid))
        finally:
            lab.down()

    The pids the lab starts are recorded in ``<root>/run/lab.json`` so that another process
    (``lab down`` from a shell after a crashed test run) can stop exactly those.
    """

    def up(self, force: bool = False) -> float:
        """Bring the cluster up from whatever state it is in; return the seconds it took.

        Idempotent: a lab that is (partly) running is taken down first, so each ``up``
        starts from known processes and picks up code and config changes.
        """
        t0 = time.monotonic()
        self._require_root()
        self.down(quiet=True, force=force)
        self.ensure_packages()
        self._prepare_dirs()
        self.ensure_users()
        self.clear_job_outputs()  # slurmctld -c numbers jobs from 1 again: no stale lab-1.out
        self._copy_emulators()
        self._install_node_init()
        if self.hooks:
            self.install_hooks()
        self._ensure_munge_key()
        self._check_ports()
        self._prepare_job_container()
        self._write_job_container_confs()
        state: dict[str, Any] = {
            "nodes": list(self.nodes),
            "owner": [os.getpid(), proc_start_time(os.getpid())],
            "node": {},
            "job_container": self.job_container,
            "clonens": self.clonens,
            "slurm": self.slurm_version,
        }
        try:
            if self.globus_api:
                # First: the GCP wrapper and globus-tmp.conf carry its URL.
                state["globus_api"], state["globus_api_port"] = self._start_globus_api()
                self._save_state(state)
            self.write_gcp_wrapper(GCP_WRAPPER)
            self.write_globus_tmp_conf()
            self._write_slurm_conf()
            state["munged"] = self._start_munged()
            self._save_state(state)
            state["slurmctld"] = self._start_slurmctld()
            self._save_state(state)
            for node in self.nodes:
                state["node"][node] = self._start_node(node)
                self._save_state(state)
            for node in self.nodes:
                state["node"][node] = self._wait_node(node, state["node"][node])
                self._save_state(state)
            self._wait_ready()
        except BaseException:
            self.down(quiet=True)
            raise
        took = time.monotonic() - t0
        self._log(f"up in {took:.1f}s: nodes {', '.join(self.nodes)} idle")
        return took

    def set_job_container(
        self,
        on: bool,
        helper: Optional[PathLike] = None,
        timeout: Optional[float] = None,
        clonens: bool = False,
    ) -> float:
        """Switch job_container/tmpfs and the SPANK plugin on or off on the running, idle lab.

        ``clonens``: export each job's /tmp by job_container.conf's ``CloneNSScript`` and
        ``CloneNSEpilog`` (Slurm 24.11+) instead of the SPANK plugin.

        ``helper`` and ``timeout`` are the plugin's ``helper=`` (default: the lab venv's
        globus-tmp-privatetmp) and ``timeout=`` (default: the plugin's own, 30 s). Rewrites
        slurm.conf, job_container.conf and plugstack.conf, has slurmctld re-read its config
        (``scontrol reconfigure``) and restarts every node (a plugin type is loaded when
        slurmd starts): node-local /tmp and state start empty, as after a reboot. If only
        the helper or timeout changes, only plugstack.conf is rewritten (no restart).
        Returns the seconds it took (a few: about 1 s per node).
        """
        t0 = time.monotonic()
        self._require_root()
        state = self._load_state()
        if not self.is_up():
            raise LabError("set_job_container needs a running lab (lab up)")
        if clonens and not self.slurm.clonens:
            raise LabError(f"CloneNSScript needs Slurm 24.11+; this lab runs {self.slurm_version}")
        self.job_container = on
        self.clonens = clonens and on
        self.spank_helper = Path(helper) if helper else None
        self.spank_timeout = timeout
        same = state.get("clonens", False) is self.clonens
        if state.get("job_container", False) is on and same:  # None: a switch failed midway
            if on:
                self.write_plugstack_conf()
            return time.monotonic() - t0
        ids = self.job_ids()
        if ids:
            raise LabError(f"set_job_container needs an idle lab; jobs: {ids}")
        state["job_container"] = None
        self._save_state(state)
        self.ensure_packages()
        self._prepare_job_container()
        self._write_job_container_confs()
        self._write_slurm_conf()
        self.scontrol("reconfigure")
        for node in self.nodes:
            self._restart_node(node, state)
        state["job_container"], state["clonens"] = on, self.clonens
        self._save_state(state)
        self._wait_ready()
        took = time.monotonic() - t0
        self._log(f"job_container {'on' if on else 'off'} in {took:.1f}s")
        return took

    def down(self, quiet: bool = False, force: bool = False) -> None:
        """Stop everything the lab started, and only that; idempotent.

        Order: cancel jobs (so epilogs run and stop GCP the normal way), kill what is left
        in the nodes' namespaces (job steps, GCP, detached drains: only lab nodes run
        there), stop the nodes (SIGTERM to each node's init, which stops slurmd and exits,
        and the kernel kills whatever still ran in its PID namespace), then slurmctld,
        munged and the Globus API emulator by recorded pid, then kill leftover processes of
        the lab users, clear their pools and the served collections.

        A lab brought up by another process that still runs (another pytest session, a
        demo) is not taken down unless ``force``: that would pull the cluster from under it.
        """
        self._require_root()
        state = self._load_state()
        owner = state.get("owner")
        if owner and not force and owner[0] != os.getpid() and proc_alive(*owner):
            argv = " ".join(proc_argv(owner[0]))[:120]
            raise LabError(
                f"the lab at {self.root} is in use by pid {owner[0]} ({argv}); "
                "let it finish, or take the lab down anyway with `lab down --force`"
            )
        nodes = self._node_records(state)
        namespaces = {rec.get(k) for rec in nodes.values() for k in ("mnt", "pidns")}
        host = os.getpid()
        # Never the host's, whatever the state file says.
        namespaces -= {None, mnt_ns(1), mnt_ns(host), pid_ns(1), pid_ns(host)}
        daemons = [(n, p, s) for n, p, s in self._recorded(state) if proc_alive(p, s)]
        ctld_alive = any(n == "slurmctld" for n, _, _ in daemons)
        slurmd_alive = any(n.startswith("node ") for n, _, _ in daemons)
        if ctld_alive and slurmd_alive and self.slurm_conf.exists():
            self.cancel_all_jobs(timeout=30, check=False)
        keep = {
            rec[k][0] for rec in nodes.values() for k in ("unshare", "init", "slurmd") if k in rec
        }

        def in_nodes(pid: int) -> bool:
            return pid not in keep and bool({mnt_ns(pid), pid_ns(pid)} & namespaces)

        self._kill_where(in_nodes, "node namespace")
        for node, rec in nodes.items():
            self._stop_node(node, rec)
        for name, pid, start in daemons:
            if not name.startswith("node "):
                self._stop_pid(name, pid, start)
        self._kill_where(in_nodes, "node namespace")  # nothing, unless a namespace leaked
        uids = set()
        for user in self.users:
            with contextlib.suppress(KeyError):
                uids.add(pwd.getpwnam(user).pw_uid)
        self._kill_where(lambda pid: proc_uid(pid) in uids, "lab user")
        for user in self.users:
            with contextlib.suppress(KeyError):
                self.clear_pool(user)
        with contextlib.suppress(OSError):  # served collections: possibly big test files
            for entry in self.collections_dir.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        if not quiet:
            self._log("down: nothing of the lab is running")

    def purge(self) -> None:
        """``down``, then remove the lab root and the test users with their homes."""
        self.down(quiet=True, force=True)
        for user in self.users:
            with contextlib.suppress(KeyError):
                pwd.getpwnam(user)
                run(["userdel", "--remove", user], check=False)
        if self.root.exists() and self.root != Path("/"):
            shutil.rmtree(self.root)

    def is_up(self) -> bool:
        state = self._load_state()
        rec = self._recorded(state)
        return bool(rec) and all(proc_alive(p, s) for _, p, s in rec)

    def status(self) -> dict[str, Any]:
        """What runs, from the recorded pids and from sinfo (for humans and for ``lab status``)."""
        state = self._load_state()
        daemons = {
            name: {"pid": p, "alive": proc_alive(p, s)} for name, p, s in self._recorded(state)
        }
        out: dict[str, Any] = {
            "root": str(self.root),
            "slurm_conf": str(self.slurm_conf),
            "daemons": daemons,
            "up": self.is_up(),
            "job_container": bool(state.get("job_container")),
            "globus_api_url": self._globus_api_url(),
            "nodes": {
                node: {
                    "init_pid": rec.get("init", [None])[0],
                    "slurmd_pid": rec.get("slurmd", [None])[0],
                    "pidns": rec.get("pidns"),
                    "mntns": rec.get("mnt"),
                }
                for node, rec in self._node_records(state).items()
            },
        }
        if out["up"]:
            out["sinfo"] = self.sinfo_states()
            out["jobs"] = self._slurm(
                ["squeue", "-h", "-o", "%i %u %T %N"], check=False
            ).stdout.splitlines()
            out["gcp"] = [
                f"{g.user}@{g.node} pid {g.node_pid} (host pid {g.pid})"
                for g in self.gcp_processes()
            ]
        return out
