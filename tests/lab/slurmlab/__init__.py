"""A real multi-node Slurm cluster on one machine: the "lab" for globus-tmp's end-to-end tests.

Why a real cluster: the hooks' hard parts (prologs and epilogs of overlapping jobs running
concurrently, an epilog per node of a multi-node job, TaskProlog output reaching the job,
what drains a node) are Slurm's behaviour, not ours, so the tests must run under slurmd.

How it is put together (see /work/shared/FACTS.md, "A real multi-node Slurm cluster"):

- Debian's Slurm 22.05 and munge, installed on demand. Our own munged (own key, socket, pid
  and log under the lab root) so a system munge, if any, is neither needed nor disturbed.
- One slurmctld and one ``slurmd -N nK`` per node, all on 127.0.0.1 with distinct ports.
  Each node is a PID namespace and a mount namespace of its own, as a real node has its
  own processes: its own ``/proc`` (the hooks, their liveness checks and ``ps`` on a node
  see only that node's processes), a private tmpfs on ``/tmp`` (GCP's control socket
  ``/tmp/globusconnect_<uid>.sock`` is per host, so each node needs its own ``/tmp``) and
  on ``/run/globus-tmp`` (node-local hook state). ``/home``, ``/opt`` and the rest stay
  shared, like a cluster's shared file systems. PID 1 of a node is a tiny init
  (tests/lab/nodeinit.py) that runs slurmd as its child and reaps orphans (the detached
  GCPs and drains); killing it kills the whole node at once (:meth:`SlurmLab.reboot_node`).
- ``PrologFlags=Alloc,Contain`` by default: an extern step on every node of a job for its
  whole life, each step with a root-owned socket ``<node>_<jobid>.<stepid>`` in the node's
  SlurmdSpoolDir (``<root>/spool/slurmd.<node>/``).
- Nothing under /etc/slurm is touched: the lab writes its own slurm.conf and the hooks'
  globus-tmp.conf beside it, under a lab root outside ``/tmp`` (a node with a private
  ``/tmp`` cannot see the host's, so everything nodes execute or read lives there: the
  hooks' venv, a copy of tests/emulators, the GCP wrapper scripts).
- The hooks' venv is built from ``/usr/bin/python3`` because the default python3 here lives
  under /root (mode 0700) and the job users could not execute console scripts made from it.
- The Globus Transfer/Auth API emulator (tests/emulators/globus_api/) runs as one more
  lab daemon on 127.0.0.1 (shared by every node: only mount namespaces are private). Every
  GCP connects out to it, the hooks' globus-tmp.conf points ``globus_service_urls`` at it,
  and :meth:`SlurmLab.make_pool` logs the user in (seeded tokens) and runs the real
  ``globus-tmp-endpoint setup``, so pool endpoints exist in the emulated Globus.


Stdlib only, so the lab runs from any Python 3.9+ (pytest's, or /usr/bin/python3).
Everything that needs root says so by failing early: the lab is root-only by nature.

The package, one concern per module (``from slurmlab import X`` gives every public name):

- ``lab``: :class:`SlurmLab`, the facade: up, down, set_job_container, status
- ``layout``: names, paths under the lab root, ports, the state file (``LabBase``)
- ``install``: Debian packages, directories, the hooks' venv, the SPANK plugin
- ``config``: slurm.conf, globus-tmp.conf, job_container.conf, plugstack.conf, GCP wrappers
- ``daemons``: process control, munged, slurmctld, the lab's health
- ``nodes``: how a node starts, stops and reboots (namespaces, its init, slurmd)
- ``nodeview``: commands on a node, host/node pids, hook state and log, GCP processes
- ``jobs``: sbatch, srun, scontrol, sinfo, waiting for jobs
- ``users``: the job users, their environments, commands run as them
- ``globus``: the Globus API emulator service, its admin routes, logins (tokens)
- ``pools``: users' GCP pools (setup, leases)
- ``procs``: reading /proc (process identity, liveness, namespaces)
- ``shell``: running commands, :class:`LabError`
"""

from __future__ import annotations

from .config import ConfigWriter, TomlValue, toml_value
from .daemons import Daemons
from .globus import SEED_TOKENS, GlobusParts, api_request
from .install import APT_PACKAGES, JOB_CONTAINER_APT_PACKAGES, Installer
from .jobs import JobInfo, SlurmCommands, parse_scontrol_record
from .lab import SlurmLab
from .layout import (
    BOOT_ID,
    DEFAULT_BASE_PORT,
    DEFAULT_ROOT,
    ENDPOINT_CLI,
    EXTERN_STEP_ID,
    GCP_WRAPPER,
    GLOBUS_API_LAUNCHER,
    HOOK_SCRIPTS,
    HOST_PYTHON,
    LAB_CLUSTER,
    LAB_GLOBUS_CLIENT_ID,
    LAB_USERS,
    NODE_INIT,
    NODE_STATE_MOUNT,
    PRIVATETMP_HELPER,
    REPO_ROOT,
    SPANK_PLUGIN,
    SPANK_SOURCE,
    LabBase,
)
from .nodes import Nodes
from .nodeview import GcpProc, NodeView
from .pools import Pools
from .procs import (
    all_pids,
    child_pids,
    mnt_ns,
    namespace_id,
    namespace_pids,
    pid_ns,
    proc_alive,
    proc_argv,
    proc_ppid,
    proc_start_time,
    proc_state,
    proc_uid,
    user_name,
)
from .shell import LabError, PathLike, port_free, run, tail
from .users import LabUsers

# The helpers' names from before the split (slurmlab.py, one module), for the tests that
# import them.
_all_pids = all_pids
_children = child_pids
_mnt_ns = mnt_ns
_ns = namespace_id
_ns_pids = namespace_pids
_pid_ns = pid_ns
_proc_alive = proc_alive
_proc_argv = proc_argv
_proc_ppid = proc_ppid
_proc_start_time = proc_start_time
_proc_state = proc_state
_proc_uid = proc_uid
_user_name = user_name
_run = run
_tail = tail
_port_free = port_free
_toml_value = toml_value
_parse_scontrol_record = parse_scontrol_record

__all__ = [
    "APT_PACKAGES",
    "BOOT_ID",
    "DEFAULT_BASE_PORT",
    "DEFAULT_ROOT",
    "ENDPOINT_CLI",
    "EXTERN_STEP_ID",
    "GCP_WRAPPER",
    "GLOBUS_API_LAUNCHER",
    "HOOK_SCRIPTS",
    "HOST_PYTHON",
    "JOB_CONTAINER_APT_PACKAGES",
    "LAB_CLUSTER",
    "LAB_GLOBUS_CLIENT_ID",
    "LAB_USERS",
    "NODE_INIT",
    "NODE_STATE_MOUNT",
    "PRIVATETMP_HELPER",
    "REPO_ROOT",
    "SEED_TOKENS",
    "SPANK_PLUGIN",
    "SPANK_SOURCE",
    "ConfigWriter",
    "Daemons",
    "GcpProc",
    "GlobusParts",
    "Installer",
    "JobInfo",
    "LabBase",
    "LabError",
    "LabUsers",
    "NodeView",
    "Nodes",
    "PathLike",
    "Pools",
    "SlurmCommands",
    "SlurmLab",
    "TomlValue",
    "all_pids",
    "api_request",
    "child_pids",
    "mnt_ns",
    "namespace_id",
    "namespace_pids",
    "parse_scontrol_record",
    "pid_ns",
    "port_free",
    "proc_alive",
    "proc_argv",
    "proc_ppid",
    "proc_start_time",
    "proc_state",
    "proc_uid",
    "run",
    "tail",
    "toml_value",
    "user_name",
]
