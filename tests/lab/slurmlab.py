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
- The Globus Transfer/Auth API emulator (tests/emulators/globus_api.py) runs as one more
  lab daemon on 127.0.0.1 (shared by every node: only mount namespaces are private). Every
  GCP connects out to it, the hooks' globus-tmp.conf points ``globus_service_urls`` at it,
  and :meth:`SlurmLab.make_pool` logs the user in (seeded tokens) and runs the real
  ``globus-tmp-endpoint setup``, so pool endpoints exist in the emulated Globus.

Stdlib only, so the lab runs from any Python 3.9+ (pytest's, or /usr/bin/python3).
Everything that needs root says so by failing early: the lab is root-only by nature.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout this file lives in: what the lab installs into its venv."""

DEFAULT_ROOT = Path(os.environ.get("GLOBUS_TMP_LAB_ROOT", "/opt/globus-tmp-lab"))
"""Outside /tmp on purpose: nodes with a private /tmp must still see everything here."""
DEFAULT_BASE_PORT = 17817
"""slurmctld's port; node nK listens on base+K. ``$GLOBUS_TMP_LAB_BASE_PORT`` overrides it
(read when a :class:`SlurmLab` is made), so a second lab (another root) can run beside."""

LAB_USERS: tuple[str, ...] = ("gtalice", "gtbob", "gtcarol", "gtdave")
APT_PACKAGES: tuple[str, ...] = ("slurmctld", "slurmd", "slurm-client", "munge", "python3-venv")
JOB_CONTAINER_APT_PACKAGES: tuple[str, ...] = ("gcc", "libslurm-dev")
"""Only with ``job_container``: to build the SPANK plugin (spank/) against this Slurm."""
SPANK_SOURCE = "spank/globus_tmp_spank.c"
"""The SPANK plugin's source in the checkout; the lab builds it into ``<root>/lib``."""
SPANK_PLUGIN = "globus_tmp_spank.so"
PRIVATETMP_HELPER = "globus-tmp-privatetmp"
"""The console script the SPANK plugin runs by default (``helper=``), from the lab venv."""
EXTERN_STEP_ID = 4294967292
"""SLURM_EXTERN_CONT: the step id of a job's extern step."""
HOST_PYTHON = "/usr/bin/python3"
NODE_STATE_MOUNT = "/run/globus-tmp"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
"""Each node's own, fresh at each (re)start: a file of the lab root bound over it."""
LAB_CLUSTER = "gtlab"
"""slurm.conf's ``ClusterName``: lease owners are ``<cluster>/<node>``."""
HOOK_SCRIPTS = {
    "Prolog": "globus-tmp-prolog",
    "Epilog": "globus-tmp-epilog",
    "TaskProlog": "globus-tmp-taskprolog",
}
ENDPOINT_CLI = "globus-tmp-endpoint"
GCP_WRAPPER = "globusconnectpersonal"
"""Name of the default GCP wrapper in ``<root>/bin``: the emulator with the lab's knobs."""
NODE_INIT = "lab-node-init"
"""PID 1 of each node's PID namespace, in ``<root>/bin``: a copy of tests/lab/nodeinit.py."""
GLOBUS_API_LAUNCHER = "globus-api-emulator"
"""The Transfer/Auth API emulator's launcher in the lab's copy of tests/emulators."""
LAB_GLOBUS_CLIENT_ID = "0c7e1a52-6d3b-4f0e-9a51-3f2b8c4d7e19"
"""The lab site's native-app client id (``globus_client_id``): any fixed UUID will do."""

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

PathLike = Union[str, "os.PathLike[str]"]
TomlValue = Union[str, int, float, bool, Sequence[str], Mapping[str, str]]


class LabError(RuntimeError):
    """The lab could not do what was asked; the message says why and shows the logs."""


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


# --------------------------------------------------------------------------- small helpers


def _run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 120,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[PathLike] = None,
    input: Optional[str] = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with captured text output; a failure names the command and its output."""
    try:
        cp = subprocess.run(
            list(argv),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout}s: {shlex.join(argv)}") from exc
    if check and cp.returncode != 0:
        raise LabError(
            f"command failed (rc={cp.returncode}): {shlex.join(argv)}\n"
            f"stdout:\n{cp.stdout.strip()}\nstderr:\n{cp.stderr.strip()}"
        )
    return cp


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"
    return "\n".join(text[-lines:])


def _proc_start_time(pid: int) -> Optional[int]:
    """Start time of a pid in clock ticks since boot: with the pid, a process's identity."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def _proc_state(pid: int) -> Optional[str]:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[0]


def _proc_alive(pid: int, start_time: Optional[int] = None) -> bool:
    """True while the process exists, is not a zombie, and (if given) started when recorded."""
    state = _proc_state(pid)
    if state is None or state in ("Z", "X"):
        return False
    return start_time is None or _proc_start_time(pid) == start_time


def _proc_argv(pid: int) -> tuple[str, ...]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ()
    return tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a)


def _proc_uid(pid: int) -> Optional[int]:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _proc_ppid(pid: int) -> Optional[int]:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _ns(pid: int, kind: str) -> Optional[str]:
    """A process's namespace id, e.g. ``mnt:[4026532198]`` (kind ``mnt``, ``pid``)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _mnt_ns(pid: int) -> Optional[str]:
    return _ns(pid, "mnt")


def _pid_ns(pid: int) -> Optional[str]:
    return _ns(pid, "pid")


def _ns_pids(pid: int) -> tuple[int, ...]:
    """The ``NSpid:`` line of a host pid: its pid in each PID namespace, outermost first.

    The last one is the pid as seen inside its own namespace (a lab node's pid); empty if
    the process is gone.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ()
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return tuple(int(x) for x in line.split()[1:])
    return ()


def _all_pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _children(pid: int) -> list[int]:
    return [p for p in _all_pids() if _proc_ppid(p) == pid]


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _toml_value(value: TomlValue) -> str:
    # JSON string escapes are valid TOML basic-string escapes for everything we write.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):  # an inline table: { key = "value", ... }
        return "{ " + ", ".join(f"{k} = {json.dumps(str(v))}" for k, v in value.items()) + " }"
    return "[" + ", ".join(json.dumps(str(v)) for v in value) + "]"


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""The API emulator is on 127.0.0.1: never through a proxy from the environment."""

SEED_TOKENS = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
import globus_api
from globus_sdk.token_storage import SQLiteTokenStorage
url, client_id, username, path = sys.argv[2:6]
tokens = globus_api.AdminClient(url).mint_tokens(
    username, scopes=globus_api.USER_APP_SCOPES, client_id=client_id
)
globus_api.seed_token_storage(SQLiteTokenStorage(path), tokens)
os.chmod(path, 0o600)
print(tokens["identity_id"])
"""
"""Run as the user by the lab venv's python: tokens as ``globus-tmp-endpoint login`` leaves them
(tests/test_globus.py ``_seed_tokens``): minted by the API emulator's admin route, stored in
globus-sdk's SQLite token storage."""


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _parse_scontrol_record(line: str) -> dict[str, str]:
    """Parse one ``scontrol -o`` record (``Key=Value`` pairs; values may hold spaces)."""
    out: dict[str, str] = {}
    # Keys are CamelCase words (some with '/' or ':'); a value runs up to the next ' Key='.
    for m in re.finditer(
        r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:]*)=(.*?)(?=\s[A-Za-z][A-Za-z0-9_/:]*=|$)", line
    ):
        out[m.group(1)] = m.group(2)
    return out


# --------------------------------------------------------------------------- the lab


class SlurmLab:
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

    def __init__(
        self,
        root: PathLike = DEFAULT_ROOT,
        nodes: Optional[int] = None,
        *,
        repo: PathLike = REPO_ROOT,
        hooks: bool = True,
        base_port: Optional[int] = None,
        status_interval: float = 1.0,
        connect_delay: float = 1.0,
        cpus_per_node: int = 4,
        ready_timeout: float = 60.0,
        verbose: bool = False,
        globus_api: bool = True,
        globus_api_gcp_timeout: float = 5.0,
        prolog_flags: str = "Alloc,Contain",
        job_container: bool = False,
        spank_helper: Optional[PathLike] = None,
        spank_timeout: Optional[float] = None,
    ) -> None:
        self.root = Path(root)
        if nodes is None:  # the running lab's size, else 3
            nodes = len(self._load_state().get("nodes", ())) or 3
        if nodes < 1:
            raise ValueError("a lab needs at least one node")
        self.nodes: tuple[str, ...] = tuple(f"n{i}" for i in range(1, nodes + 1))
        self.repo = Path(repo)
        self.hooks = hooks
        if base_port is None:
            base_port = int(os.environ.get("GLOBUS_TMP_LAB_BASE_PORT") or DEFAULT_BASE_PORT)
        self.base_port = base_port
        self.status_interval = status_interval
        self.connect_delay = connect_delay
        self.cpus_per_node = cpus_per_node
        self.ready_timeout = ready_timeout
        self.verbose = verbose
        self.globus_api = globus_api
        self.globus_api_gcp_timeout = globus_api_gcp_timeout
        self.prolog_flags = prolog_flags
        """slurm.conf's ``PrologFlags``: ``Contain`` adds an extern step on every node of a job."""
        self.job_container = job_container
        """``JobContainerType=job_container/tmpfs`` and the SPANK plugin (needs ``Contain``)."""
        self.spank_helper: Optional[Path] = Path(spank_helper) if spank_helper else None
        """The plugin's ``helper=`` (None: the lab venv's globus-tmp-privatetmp)."""
        self.spank_timeout = spank_timeout
        """The plugin's ``timeout=`` in seconds (None: the plugin's default, 30)."""
        self.users = LAB_USERS
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # ----------------------------------------------------------------- paths

    @property
    def etc_dir(self) -> Path:
        return self.root / "etc"

    @property
    def slurm_conf(self) -> Path:
        return self.etc_dir / "slurm.conf"

    @property
    def globus_tmp_conf(self) -> Path:
        """Beside slurm.conf: the hooks find it through $SLURM_CONF's directory."""
        return self.etc_dir / "globus-tmp.conf"

    @property
    def job_container_conf(self) -> Path:
        """``job_container.conf``, beside slurm.conf (where Slurm looks for it); only when on."""
        return self.etc_dir / "job_container.conf"

    @property
    def plugstack_conf(self) -> Path:
        """``plugstack.conf`` (slurm.conf's ``PlugStackConfig``); only with job_container on."""
        return self.etc_dir / "plugstack.conf"

    @property
    def job_tmp_base(self) -> Path:
        """job_container.conf's ``BasePath``: on disk, shared by the nodes (not under /tmp).

        Debian's 22.05 appends ``/<node>`` itself: node nK's containers are under
        ``<job_tmp_base>/nK/``.
        """
        return self.root / "jobtmp"

    def job_tmp_dir(self, node: str, job_id: Union[str, int]) -> Path:
        """A job's private /tmp on ``node`` as the host sees it: ``BasePath/<node>/<job>/.<job>``.

        It exists from right after the job's Prolog on that node until right before its
        Epilog (created and deleted by the job's extern step); owner the job user, 0700.
        """
        return self.job_tmp_base / node / str(job_id) / f".{job_id}"

    @property
    def lib_dir(self) -> Path:
        """Where the lab builds the SPANK plugin (``globus_tmp_spank.so``)."""
        return self.root / "lib"

    @property
    def spank_plugin(self) -> Path:
        return self.lib_dir / SPANK_PLUGIN

    @property
    def spank_helper_path(self) -> Path:
        """The ``helper=`` the plugin runs: :attr:`spank_helper`, else the venv's script."""
        return self.spank_helper or self.venv_bin / PRIVATETMP_HELPER

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def venv_bin(self) -> Path:
        return self.venv / "bin"

    @property
    def bin_dir(self) -> Path:
        """Wrapper scripts (GCP with the emulator's knobs set) live here."""
        return self.root / "bin"

    @property
    def emulators_dir(self) -> Path:
        """A copy of tests/emulators: CI's checkout may sit under /tmp, invisible to nodes."""
        return self.root / "emulators"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def spool_dir(self) -> Path:
        return self.root / "spool"

    @property
    def munge_dir(self) -> Path:
        return self.root / "munge"

    @property
    def munge_socket(self) -> Path:
        return self.munge_dir / "munge.socket"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "lab.json"

    @property
    def slurmctld_log(self) -> Path:
        return self.log_dir / "slurmctld.log"

    @property
    def globus_api_log(self) -> Path:
        return self.log_dir / "globus-api.out"

    @property
    def globus_api_state_file(self) -> Path:
        """The API emulator's persisted state (identities, endpoints, tasks): for post-mortems."""
        return self.run_dir / "globus-api.json"

    @property
    def collections_dir(self) -> Path:
        """Where :meth:`create_collection` puts the directories the API emulator serves."""
        return self.root / "collections"

    @property
    def globus_api_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the running API emulator, without a trailing slash.

        globus-tmp.conf's ``globus_service_urls`` get ``<url>/``; the GCP wrapper sets
        ``GCP_EMULATOR_GLOBUS_API=<url>``. Raises :class:`LabError` if it does not run.
        """
        url = self._globus_api_url()
        if url is None:
            raise LabError("the lab's Globus API emulator is not running (is the lab up?)")
        return url

    def _globus_api_url(self) -> Optional[str]:
        port = self._load_state().get("globus_api_port")
        return f"http://127.0.0.1:{int(port)}" if port else None

    def slurmd_log(self, node: str) -> Path:
        return self.log_dir / f"slurmd.{node}.log"

    @property
    def ctld_port(self) -> int:
        return self.base_port

    def node_port(self, node: str) -> int:
        return self.base_port + self.nodes.index(node) + 1

    def node_state_dir(self, node: str) -> str:
        """The hooks' node-local state dir (``state_dir = "/run/globus-tmp/%n"``)."""
        return f"{NODE_STATE_MOUNT}/{node}"

    def home(self, user: str) -> Path:
        return Path(pwd.getpwnam(user).pw_dir)

    def user_env(self, user: str, extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
        """A clean environment for commands run as a lab user (nothing of root's leaks in)."""
        pw = pwd.getpwnam(user)
        env = {
            "HOME": pw.pw_dir,
            "USER": user,
            "LOGNAME": user,
            "SHELL": pw.pw_shell or "/bin/sh",
            "LANG": "C.UTF-8",
            "PATH": f"{self.venv_bin}:/usr/bin:/bin",
            "SLURM_CONF": str(self.slurm_conf),
        }
        env.update(extra or {})
        return env

    def _log(self, msg: str) -> None:
        if self.verbose:
            print(f"lab: {msg}", file=sys.stderr, flush=True)

    # ----------------------------------------------------------------- up

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
        self._write_job_container_confs()
        state: dict[str, Any] = {
            "nodes": list(self.nodes),
            "owner": [os.getpid(), _proc_start_time(os.getpid())],
            "node": {},
            "job_container": self.job_container,
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

    @staticmethod
    def _require_root() -> None:
        if os.geteuid() != 0:
            raise LabError("the Slurm lab needs root (it starts slurmd, munged, creates users)")

    def ensure_packages(self) -> None:
        """apt-get install what is missing; ``apt-get update`` only when the install needs it."""
        wanted = [*APT_PACKAGES, *(JOB_CONTAINER_APT_PACKAGES if self.job_container else ())]
        missing = [p for p in wanted if not self._dpkg_installed(p)]
        if not missing:
            return
        self._log(f"installing {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-q", *missing]
        lists = Path("/var/lib/apt/lists")
        if not any(lists.glob("*Packages*")):
            _run(["apt-get", "update", "-q"], env=env, timeout=600)
        if _run(install, env=env, timeout=900, check=False).returncode != 0:
            _run(["apt-get", "update", "-q"], env=env, timeout=600)
            _run(install, env=env, timeout=900)

    @staticmethod
    def _dpkg_installed(pkg: str) -> bool:
        cp = _run(["dpkg-query", "-W", "-f=${Status}", pkg], check=False)
        return cp.returncode == 0 and cp.stdout.strip().endswith(" installed")

    def _prepare_dirs(self) -> None:
        # The lab root must be traversable by the job users (venv, wrappers, slurm.conf).
        for d in (
            self.root,
            self.etc_dir,
            self.bin_dir,
            self.log_dir,
            self.run_dir,
            self.spool_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        for leftover in self.spool_dir.iterdir():
            # Old job scripts and node state would make slurmd try to recover dead jobs.
            shutil.rmtree(leftover, ignore_errors=True)
        for log in [*self.log_dir.glob("*.log"), self.globus_api_log]:
            log.unlink(missing_ok=True)
        # The API emulator starts afresh: the pools it knew were cleared by ``down``.
        self.globus_api_state_file.unlink(missing_ok=True)
        shutil.rmtree(self.collections_dir, ignore_errors=True)
        self.collections_dir.mkdir(mode=0o755)
        Path(NODE_STATE_MOUNT).mkdir(mode=0o755, parents=True, exist_ok=True)

    def ensure_users(self) -> None:
        """Create the test users (idempotent), homes under /home as on a shared-home cluster."""
        for user in self.users:
            try:
                pwd.getpwnam(user)
            except KeyError:
                _run(
                    [
                        "useradd",
                        "--create-home",
                        "--home-dir",
                        f"/home/{user}",
                        "--shell",
                        "/bin/bash",
                        "--user-group",
                        user,
                    ]
                )
            home = self.home(user)
            if not home.is_dir():
                home.mkdir(parents=True)
                pw = pwd.getpwnam(user)
                os.chown(home, pw.pw_uid, pw.pw_gid)
                home.chmod(0o750)

    def _copy_emulators(self) -> None:
        src = self.repo / "tests" / "emulators"
        if self.emulators_dir.exists():
            shutil.rmtree(self.emulators_dir)
        if src.is_dir():
            shutil.copytree(
                src, self.emulators_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            self.emulators_dir.mkdir()
        for p in [self.emulators_dir, *self.emulators_dir.rglob("*")]:
            # Readable (and, where executable at source, runnable) by every job user.
            mode = p.stat().st_mode
            p.chmod(0o755 if p.is_dir() or mode & 0o111 else 0o644)

    def _install_node_init(self) -> None:
        """Copy nodeinit.py into the lab root: a node's /tmp hides a checkout under /tmp."""
        self.bin_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        dest = self.bin_dir / NODE_INIT
        shutil.copyfile(Path(__file__).resolve().with_name("nodeinit.py"), dest)
        dest.chmod(0o755)

    def write_gcp_wrapper(self, name: str = GCP_WRAPPER, **env: Union[str, int, float]) -> Path:
        """Write ``<root>/bin/<name>``: sets the emulator's knobs, then execs the emulator.

        The hooks start GCP with a clean environment, so knobs such as
        ``GCP_EMULATOR_STATUS_INTERVAL`` or ``GCP_EMULATOR_MODE`` can only reach the emulator
        through a wrapper like this one. Point ``gcp_path`` at the returned path.
        While the lab's API emulator runs, ``GCP_EMULATOR_GLOBUS_API`` is set to it unless
        ``env`` says otherwise (an empty value: a GCP that never connects out).
        """
        knobs: dict[str, str] = {
            "GCP_EMULATOR_STATUS_INTERVAL": str(self.status_interval),
            "GCP_EMULATOR_CONNECT_DELAY": str(self.connect_delay),
        }
        url = self._globus_api_url()
        if url:  # every GCP connects out to the lab's Globus; -setup redeems keys there
            knobs["GCP_EMULATOR_GLOBUS_API"] = url
        knobs.update({k: str(v) for k, v in env.items()})
        lines = [
            "#!/bin/sh",
            "# Written by tests/lab/slurmlab.py: the GCP emulator with lab knobs.",
        ]
        lines.append("PATH=/usr/bin:/bin; export PATH")
        lines += [f"{k}={shlex.quote(v)}; export {k}" for k, v in sorted(knobs.items())]
        lines.append(f'exec {shlex.quote(str(self.emulators_dir / GCP_WRAPPER))} "$@"')
        path = self.bin_dir / name
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o755)
        return path

    def install_hooks(self) -> None:
        """(Re)install the checkout into the lab venv, so each ``up`` runs the current code.

        Built from a copy of the checkout (only what the package needs). Dependencies are
        installed once; later runs only force-reinstall the project itself (seconds, no
        network; the build backend, hatchling, in the venv makes ``--no-build-isolation``
        possible).
        """
        if not (self.venv_bin / "python").exists():
            self._log(f"creating venv {self.venv} from {HOST_PYTHON}")
            _run([HOST_PYTHON, "-m", "venv", str(self.venv)], timeout=300)
        src = self.root / "src"
        if src.exists():
            shutil.rmtree(src)
        shutil.copytree(
            self.repo,
            src,
            ignore=shutil.ignore_patterns(
                ".git",
                "tests",
                "bench",
                "build",
                "dist",
                "*.egg-info",
                "__pycache__",
                "*.pyc",
                ".venv",
                "venv",
                ".mypy_cache",
                ".ruff_cache",
                ".pytest_cache",
            ),
        )
        pip = [str(self.venv_bin / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
        marker = self.venv / ".lab-deps-installed"
        pyproject = self.repo / "pyproject.toml"
        stamp = pyproject.read_bytes() if pyproject.exists() else b""
        for attempt in (1, 2):
            deps_now = not (marker.exists() and marker.read_bytes() == stamp)
            if deps_now:
                self._log("installing the checkout's dependencies into the lab venv")
                cp = _run(
                    # the build backend too: the project itself is reinstalled below
                    # without build isolation (fast, offline)
                    [*pip, "install", "hatchling", str(src)], check=False, timeout=900
                )
                if cp.returncode != 0:
                    raise LabError(
                        f"pip install of {self.repo} into {self.venv} failed; the hooks cannot "
                        f"be installed (`lab up --no-hooks` gives a cluster without them):\n"
                        f"{cp.stdout.strip()[-2000:]}\n{cp.stderr.strip()[-3000:]}"
                    )
                marker.write_bytes(stamp)
            # The project itself, always: same version number, new code.
            cp = _run(
                [
                    *pip,
                    "install",
                    "--no-deps",
                    "--force-reinstall",
                    "--no-build-isolation",
                    str(src),
                ],
                check=False,
                timeout=300,
            )
            if cp.returncode == 0:
                break
            marker.unlink()
            if deps_now or attempt == 2:
                raise LabError(
                    f"pip install of {self.repo} into {self.venv} failed:\n"
                    f"{cp.stdout.strip()[-2000:]}\n{cp.stderr.strip()[-3000:]}"
                )
        missing = [
            s for s in [*HOOK_SCRIPTS.values(), ENDPOINT_CLI] if not (self.venv_bin / s).exists()
        ]
        if missing:
            raise LabError(
                f"installed {self.repo}, but {', '.join(missing)} missing from {self.venv_bin}"
            )

    def hooks_installable(self) -> bool:
        """Whether the checkout looks like it provides the hooks (for skipping early)."""
        return (self.repo / "pyproject.toml").exists() and any((self.repo / "prolog").glob("*.py"))

    def _ensure_munge_key(self) -> None:
        self.munge_dir.mkdir(mode=0o755, exist_ok=True)
        pw = pwd.getpwnam("munge")
        os.chown(self.munge_dir, pw.pw_uid, pw.pw_gid)
        self.munge_dir.chmod(0o755)
        key = self.munge_dir / "munge.key"
        if not key.exists():
            _run(["mungekey", "--create", f"--keyfile={key}"])
        os.chown(key, pw.pw_uid, pw.pw_gid)
        key.chmod(0o600)

    def _check_ports(self) -> None:
        ports = [self.ctld_port, *(self.node_port(n) for n in self.nodes)]
        busy = [p for p in ports if not _port_free(p)]
        if busy:
            raise LabError(f"ports {busy} on 127.0.0.1 are in use; pick another base_port")

    def write_globus_tmp_conf(self, **overrides: Optional[TomlValue]) -> Path:
        """(Re)write the hooks' globus-tmp.conf; an override of None drops that key.

        The hooks read it on every call, so a test can switch e.g. ``gcp_path`` to a broken
        program between jobs without restarting anything. While the lab's API emulator
        runs, the defaults point the hooks and the CLI at it (``globus_client_id``,
        ``globus_service_urls``) and keep ``linger_unverified`` short.
        """
        conf: dict[str, Optional[TomlValue]] = {
            "gcp_path": str(self.bin_dir / GCP_WRAPPER),
            "state_dir": f"{NODE_STATE_MOUNT}/%n",
            "user_dir": "~/.globus-tmp",
            "exposed_paths": ["/tmp"],
            "start_timeout": 30,
            "stop_grace": 10,
            "linger_max": 120,
            "linger_poll_seconds": 2,
            "on_failure": "continue",
        }
        url = self._globus_api_url()
        if url:
            conf["linger_unverified"] = 5
            conf["globus_client_id"] = LAB_GLOBUS_CLIENT_ID
            conf["globus_service_urls"] = {"transfer": url + "/", "auth": url + "/"}
        conf.update(overrides)
        text = "# Written by tests/lab/slurmlab.py for the lab cluster.\n" + "".join(
            f"{k} = {_toml_value(v)}\n" for k, v in conf.items() if v is not None
        )
        tmp = self.globus_tmp_conf.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(self.globus_tmp_conf)  # atomic: a hook never reads half a file
        return self.globus_tmp_conf

    # ----------------------------------------------------------------- job_container/tmpfs

    def build_spank_plugin(self) -> Path:
        """Compile the checkout's spank/globus_tmp_spank.c into ``<root>/lib``; return the .so.

        gcc directly (spank/Makefile's flags), not ``make``: no build artefacts in the
        checkout. Written beside and renamed, so a slurmstepd that has the old one mapped
        keeps a consistent file.
        """
        src = self.repo / SPANK_SOURCE
        if not src.exists():
            raise LabError(f"no {src}: the checkout has no SPANK plugin")
        self.lib_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.lib_dir.chmod(0o755)
        tmp = self.lib_dir / f".{SPANK_PLUGIN}.{os.getpid()}"
        try:
            _run(
                [
                    "gcc",
                    "-Wall",
                    "-Wextra",
                    "-O2",
                    "-shared",
                    "-fPIC",
                    "-I/usr/include/slurm",
                    "-o",
                    str(tmp),
                    str(src),
                ],
                timeout=120,
            )
            tmp.chmod(0o755)  # sbatch/srun of the job users load it too (plugstack.conf)
            tmp.replace(self.spank_plugin)
        finally:
            tmp.unlink(missing_ok=True)
        return self.spank_plugin

    def _write_job_container_confs(self) -> None:
        """job_container.conf and plugstack.conf beside slurm.conf when on; neither when off.

        When on, also builds the plugin and empties BasePath: job ids restart at 1 with
        each ``up`` (slurmctld -c), and a ``<node>/<job>`` dir left from an earlier lab makes
        job_container/tmpfs skip the container and the job fail.
        """
        if not self.job_container:
            self.plugstack_conf.unlink(missing_ok=True)
            self.job_container_conf.unlink(missing_ok=True)
            return
        if "Contain" not in self.prolog_flags.split(","):
            raise LabError("job_container/tmpfs needs PrologFlags=Contain")
        self.build_spank_plugin()
        if self.job_tmp_base.exists():
            shutil.rmtree(self.job_tmp_base)
        self.job_tmp_base.mkdir(mode=0o755, parents=True)
        self.job_container_conf.write_text(
            "# Written by tests/lab/slurmlab.py: a private /tmp per job (Debian's 22.05\n"
            "# appends /<node> to BasePath itself).\n"
            f"AutoBasePath=true\nBasePath={self.job_tmp_base}\n"
        )
        self.job_container_conf.chmod(0o644)
        self.write_plugstack_conf()

    def write_plugstack_conf(self) -> Path:
        """(Re)write plugstack.conf: the plugin with :attr:`spank_helper_path` and the timeout.

        Each slurmstepd reads it when it starts, so a new helper applies to the next job
        without restarting anything.
        """
        line = f"optional {self.spank_plugin} helper={self.spank_helper_path}"
        if self.spank_timeout is not None:
            line += f" timeout={self.spank_timeout:g}"
        tmp = self.plugstack_conf.with_suffix(".tmp")
        tmp.write_text(f"# Written by tests/lab/slurmlab.py.\n{line}\n")
        tmp.chmod(0o644)
        tmp.replace(self.plugstack_conf)
        return self.plugstack_conf

    def set_job_container(
        self,
        on: bool,
        helper: Optional[PathLike] = None,
        timeout: Optional[float] = None,
    ) -> float:
        """Switch job_container/tmpfs and the SPANK plugin on or off on the running, idle lab.

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
        self.job_container = on
        self.spank_helper = Path(helper) if helper else None
        self.spank_timeout = timeout
        if state.get("job_container", False) is on:  # None: a switch that failed midway
            if on:
                self.write_plugstack_conf()
            return time.monotonic() - t0
        ids = self.job_ids()
        if ids:
            raise LabError(f"set_job_container needs an idle lab; jobs: {ids}")
        state["job_container"] = None
        self._save_state(state)
        self.ensure_packages()
        self._write_job_container_confs()
        self._write_slurm_conf()
        self.scontrol("reconfigure")
        for node in self.nodes:
            self._restart_node(node, state)
        state["job_container"] = on
        self._save_state(state)
        self._wait_ready()
        took = time.monotonic() - t0
        self._log(f"job_container {'on' if on else 'off'} in {took:.1f}s")
        return took

    def _restart_node(self, node: str, state: dict[str, Any], timeout: float = 60) -> None:
        """Stop a node cleanly (SIGTERM to its init) and start it afresh; the state is saved.

        Returns once slurmctld has the new slurmd's registration."""
        rec = self._node_records(state).get(node)
        if rec is None:
            raise LabError(f"no {node} recorded: is the lab up?")
        registered = self.node_info(node).get("SlurmdStartTime")
        self._stop_node(node, rec)
        self._start_registered(node, state, registered, timeout)

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

    def _write_slurm_conf(self) -> None:
        host = socket.gethostname().split(".")[0]
        container = ""
        if self.job_container:
            # job_container.conf has no slurm.conf key: Slurm reads it beside slurm.conf.
            container = (
                f"JobContainerType=job_container/tmpfs\nPlugStackConfig={self.plugstack_conf}\n"
            )
        hooks = ""
        if self.hooks:
            hooks = "".join(f"{k}={self.venv_bin / v}\n" for k, v in HOOK_SCRIPTS.items())
        hooks = container + hooks
        nodes = "".join(
            f"NodeName={n} NodeHostname=localhost NodeAddr=127.0.0.1 Port={self.node_port(n)} "
            f"CPUs={self.cpus_per_node} RealMemory=1000 State=UNKNOWN\n"
            for n in self.nodes
        )
        text = f"""\
# Written by tests/lab/slurmlab.py: a {len(self.nodes)}-node lab cluster on one machine.
ClusterName={LAB_CLUSTER}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={self.spool_dir}/ctld
SlurmdSpoolDir={self.spool_dir}/slurmd.%n
SlurmctldPidFile={self.run_dir}/slurmctld.pid
SlurmdPidFile={self.run_dir}/slurmd.%n.pid
SlurmctldLogFile={self.slurmctld_log}
SlurmdLogFile={self.log_dir}/slurmd.%n.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmdTimeout=30
SlurmctldTimeout=30
MessageTimeout=20
TCPTimeout=2
KillWait=5
InactiveLimit=0
MinJobAge=600
JobRequeue=0
MailProg=/bin/true
PrologFlags={self.prolog_flags}
PrologEpilogTimeout=180
{hooks}{nodes}PartitionName=lab Nodes={",".join(self.nodes)} Default=YES MaxTime=INFINITE State=UP
"""
        self.slurm_conf.write_text(text)
        self.slurm_conf.chmod(0o644)

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
            start = _proc_start_time(proc.pid)
            if start is not None:
                break
            time.sleep(0.01)
        if start is None or proc.poll() is not None:
            raise LabError(f"{argv[0]} exited at once (rc={proc.poll()}):\n{_tail(log)}")
        return proc.pid, start

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
            if not _proc_alive(pid):
                raise LabError(f"munged died:\n{_tail(log)}\n{_tail(self.log_dir / 'munged.out')}")
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
        raise LabError(f"munged not answering on {self.munge_socket}:\n{_tail(log)}")

    def _start_globus_api(self) -> tuple[list[int], int]:
        """Start the Transfer/Auth API emulator on a free port; return ([pid, start], port).

        From the lab's copy of the emulators, by /usr/bin/python3 (stdlib only), as root in
        the host's mount namespace: it listens on 127.0.0.1, which every node shares, and
        serves the collections under :attr:`collections_dir`.
        """
        port_file = self.run_dir / "globus-api.port"
        port_file.unlink(missing_ok=True)
        launcher = self.emulators_dir / GLOBUS_API_LAUNCHER
        if not launcher.exists():
            raise LabError(f"no {launcher}: the checkout has no Globus API emulator")
        argv = [
            HOST_PYTHON,
            str(launcher),
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--state-file",
            str(self.globus_api_state_file),
            "--gcp-timeout",
            f"{self.globus_api_gcp_timeout:g}",
        ]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
        pid, start = self._spawn(argv, self.globus_api_log, env=env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if not _proc_alive(pid, start):
                raise LabError(f"the Globus API emulator died:\n{_tail(self.globus_api_log)}")
            try:
                port = int(port_file.read_text().strip())
            except (OSError, ValueError):
                time.sleep(0.05)
                continue
            try:
                self._api_call(f"http://127.0.0.1:{port}", "GET", "_emulator/health")
            except (OSError, ValueError):
                time.sleep(0.1)
                continue
            self._log(f"Globus API emulator pid {pid} on http://127.0.0.1:{port}")
            return [pid, start], port
        self._stop_pid("globus-api", pid, start)
        raise LabError(f"the Globus API emulator did not answer:\n{_tail(self.globus_api_log)}")

    def _start_slurmctld(self) -> list[int]:
        # -c: a clean start every time (no jobs recovered from an earlier lab).
        pid, start = self._spawn(
            ["slurmctld", "-D", "-c", "-i", "-f", str(self.slurm_conf)],
            self.log_dir / "slurmctld.out",
        )
        return [pid, start]

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
            f"slurmd -D -N {node} -f {shlex.quote(str(self.slurm_conf))}"
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
                p for p in _children(upid) if _proc_argv(p)[1:2] == (str(self.bin_dir / NODE_INIT),)
            ]
            slurmds = [
                p
                for init in inits
                for p in _children(init)
                if Path((*_proc_argv(p), "")[0]).name == "slurmd"
            ]
            if inits and slurmds:
                init, slurmd = inits[0], slurmds[0]
                return {
                    "unshare": [upid, ustart],
                    "boot_id": rec.get("boot_id"),
                    "init": [init, _proc_start_time(init)],
                    "slurmd": [slurmd, _proc_start_time(slurmd)],
                    "mnt": _mnt_ns(init),
                    "pidns": _pid_ns(init),
                }
            if not _proc_alive(upid, ustart):
                raise LabError(f"node {node} died at start:\n{self._logs_excerpt()}")
            if time.monotonic() > deadline:
                raise LabError(f"slurmd of {node} did not start:\n{self._logs_excerpt()}")
            time.sleep(0.05)

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
        dead = [name for name, pid, start in self._recorded(state) if not _proc_alive(pid, start)]
        if dead:
            raise LabError(f"lab daemons died: {', '.join(dead)}\n{self._logs_excerpt()}")

    def _logs_excerpt(self, lines: int = 20) -> str:
        parts = [f"--- {self.slurmctld_log} (tail) ---\n{_tail(self.slurmctld_log, lines)}"]
        for node in self.nodes:
            log = self.slurmd_log(node)
            parts.append(f"--- {log} (tail) ---\n{_tail(log, lines)}")
            out = self.log_dir / f"slurmd.{node}.out"
            if out.exists() and out.stat().st_size:
                parts.append(f"--- {out} (tail) ---\n{_tail(out, lines)}")
        return "\n".join(parts)

    # ----------------------------------------------------------------- state file

    def _save_state(self, state: Mapping[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_file)

    def _load_state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.state_file.read_text())
            return data
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _node_records(state: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """node -> its record (``unshare``, ``init``, ``slurmd``: [host pid, start]; ``mnt``,
        ``pidns``: namespace ids; ``boot_id``). Fields not known yet (a node still starting)
        are absent.
        """
        return {n: dict(rec) for n, rec in state.get("node", {}).items()}

    @classmethod
    def _recorded(cls, state: Mapping[str, Any]) -> list[tuple[str, int, int]]:
        """(name, pid, start time) of every daemon in the state file, nodes first.

        A node is its init (PID 1 of its namespace: it lives exactly as long as slurmd),
        or, before the init is known, the unshare that starts it.
        """
        out = []
        for node, rec in cls._node_records(state).items():
            pid, start = rec.get("init") or rec["unshare"]
            out.append((f"node {node}", int(pid), int(start)))
        for name in ("slurmctld", "munged", "globus_api"):
            if state.get(name):
                pid, start = state[name]
                out.append((name.replace("_", "-"), int(pid), int(start)))
        return out

    def _node_pid(self, node: str, which: str) -> int:
        rec = self._node_records(self._load_state()).get(node, {})
        if which not in rec:
            raise LabError(f"no {which} recorded for {node}: is the lab up?")
        pid, start = rec[which]
        if not _proc_alive(pid, start):
            raise LabError(f"the {which} of {node} (host pid {pid}) is not running")
        return int(pid)

    def node_boot_id(self, node: str) -> str:
        """The node's ``/proc/sys/kernel/random/boot_id``: new at each start (reboot)."""
        rec = self._node_records(self._load_state()).get(node, {})
        if "boot_id" not in rec:
            raise LabError(f"no boot id recorded for {node}: is the lab up?")
        return str(rec["boot_id"])

    def node_init_pid(self, node: str) -> int:
        """Host pid of a node's init (PID 1 in the node): the handle on its namespaces."""
        return self._node_pid(node, "init")

    def slurmd_pid(self, node: str) -> int:
        """Host pid of a node's running slurmd (the init's child)."""
        return self._node_pid(node, "slurmd")

    def node_namespaces(self, kind: str = "pid") -> dict[str, str]:
        """node -> that node's namespace id of ``kind``: ``pid`` (``pid:[...]``) or ``mnt``."""
        key = "pidns" if kind == "pid" else kind
        return {
            n: rec[key] for n, rec in self._node_records(self._load_state()).items() if key in rec
        }

    # ----------------------------------------------------------------- down

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
        if owner and not force and owner[0] != os.getpid() and _proc_alive(*owner):
            argv = " ".join(_proc_argv(owner[0]))[:120]
            raise LabError(
                f"the lab at {self.root} is in use by pid {owner[0]} ({argv}); "
                "let it finish, or take the lab down anyway with `lab down --force`"
            )
        nodes = self._node_records(state)
        namespaces = {rec.get(k) for rec in nodes.values() for k in ("mnt", "pidns")}
        host = os.getpid()
        # Never the host's, whatever the state file says.
        namespaces -= {None, _mnt_ns(1), _mnt_ns(host), _pid_ns(1), _pid_ns(host)}
        daemons = [(n, p, s) for n, p, s in self._recorded(state) if _proc_alive(p, s)]
        ctld_alive = any(n == "slurmctld" for n, _, _ in daemons)
        slurmd_alive = any(n.startswith("node ") for n, _, _ in daemons)
        if ctld_alive and slurmd_alive and self.slurm_conf.exists():
            self.cancel_all_jobs(timeout=30, check=False)
        keep = {
            rec[k][0] for rec in nodes.values() for k in ("unshare", "init", "slurmd") if k in rec
        }

        def in_nodes(pid: int) -> bool:
            return pid not in keep and bool({_mnt_ns(pid), _pid_ns(pid)} & namespaces)

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
        self._kill_where(lambda pid: _proc_uid(pid) in uids, "lab user")
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

    def kill_gcp(self) -> list[GcpProc]:
        """SIGKILL every running GCP emulator instance (cleanup after a failed test)."""
        victims = self.gcp_processes()
        pids = {g.pid for g in victims}
        self._kill_where(lambda pid: pid in pids, "GCP", grace=5)
        return victims

    def _kill_where(self, pred: Any, what: str, grace: float = 5) -> None:
        me = os.getpid()
        victims = [p for p in _all_pids() if p != me and _proc_alive(p) and pred(p)]
        if not victims:
            return
        self._log(
            f"killing {len(victims)} leftover {what} process(es): "
            + "; ".join(f"{p} {' '.join(_proc_argv(p))[:80]}" for p in victims)
        )
        starts = {p: _proc_start_time(p) for p in victims}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in victims:
                if _proc_alive(p, starts[p]):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(p, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                for p in victims:
                    self._reap(p)
                if not any(_proc_alive(p, starts[p]) for p in victims):
                    return
                time.sleep(0.1)

    def _reap(self, pid: int) -> None:
        """Collect a child's exit status if it is ours, so it does not linger as a zombie."""
        proc = self._children.get(pid)
        if proc is not None:
            proc.poll()  # through Popen, so it knows its child is gone
            return
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)

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
            return _proc_alive(pid, start)

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

    def purge(self) -> None:
        """``down``, then remove the lab root and the test users with their homes."""
        self.down(quiet=True, force=True)
        for user in self.users:
            with contextlib.suppress(KeyError):
                pwd.getpwnam(user)
                _run(["userdel", "--remove", user], check=False)
        if self.root.exists() and self.root != Path("/"):
            shutil.rmtree(self.root)

    # ----------------------------------------------------------------- status

    def is_up(self) -> bool:
        state = self._load_state()
        rec = self._recorded(state)
        return bool(rec) and all(_proc_alive(p, s) for _, p, s in rec)

    def status(self) -> dict[str, Any]:
        """What runs, from the recorded pids and from sinfo (for humans and for ``lab status``)."""
        state = self._load_state()
        daemons = {
            name: {"pid": p, "alive": _proc_alive(p, s)} for name, p, s in self._recorded(state)
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

    # ----------------------------------------------------------------- Slurm commands

    def _slurm(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 30,
        input: Optional[str] = None,
    ) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            "SLURM_CONF": str(self.slurm_conf),
            "LANG": "C.UTF-8",
        }
        return _run(argv, check=check, timeout=timeout, env=env, input=input)

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
        cp = _run(
            [
                "runuser",
                "-u",
                user,
                "--",
                "env",
                "-i",
                *self._env_args(user),
                "sbatch",
                "--parsable",
                *args,
            ],
            input=script_text,
            timeout=timeout,
            cwd=self.home(user),
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
        return _run(
            [
                "runuser",
                "-u",
                user,
                "--",
                "env",
                "-i",
                *self._env_args(user),
                "srun",
                *srun_args,
                *argv,
            ],
            timeout=timeout,
            cwd=self.home(user),
            check=check,
        )

    def _env_args(self, user: str) -> list[str]:
        return [f"{k}={v}" for k, v in self.user_env(user).items()]

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
        rec = _parse_scontrol_record(cp.stdout.strip().splitlines()[0])
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

    def node_info(self, node: str) -> dict[str, str]:
        """``scontrol -o show node`` of a node, as Key -> value."""
        cp = self._slurm(["scontrol", "-o", "show", "node", node], timeout=15)
        return _parse_scontrol_record(cp.stdout.strip())

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
        if rec.get("pidns") and any(_pid_ns(p) == rec["pidns"] for p in _all_pids()):
            raise LabError(f"processes of {node} survived its init's SIGKILL")
        self._start_registered(node, state, registered, timeout)
        took = time.monotonic() - t0
        self._log(f"{node} rebooted in {took:.1f}s")
        return took

    # ----------------------------------------------------------------- inside nodes

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
        return _run([*pre, *argv], check=check, timeout=timeout)

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
            return by_pid_ns.get(_pid_ns(pid) or "") or by_mnt_ns.get(_mnt_ns(pid) or "")

        return node_of

    def node_pid(self, pid: int) -> Optional[int]:
        """A host pid as its node sees it (``NSpid:``), as in the hooks' state and logs.

        None if the process is gone or runs on no lab node.
        """
        if self.node_of_pid(pid) is None:
            return None
        pids = _ns_pids(pid)
        return pids[-1] if len(pids) > 1 else None

    def host_pid(self, node: str, node_pid: int) -> Optional[int]:
        """The host pid of the process that ``node`` knows as ``node_pid`` (None: none)."""
        ns = self.node_namespaces("pid").get(node)
        for pid in _all_pids():
            pids = _ns_pids(pid)
            if len(pids) > 1 and pids[-1] == node_pid and _pid_ns(pid) == ns:
                return pid
        return None

    def node_processes(self, node: str) -> list[int]:
        """Host pids of every process on ``node`` (in its PID namespace)."""
        ns = self.node_namespaces("pid").get(node)
        return sorted(p for p in _all_pids() if ns and _pid_ns(p) == ns)

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
        for pid in _all_pids():
            argv = _proc_argv(pid)
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
            if _proc_ppid(pid) in matched:
                continue  # the child of a matched launcher: same instance
            uid = _proc_uid(pid)
            if uid is None or not _proc_alive(pid):
                continue
            name = _user_name(uid)
            if user is not None and name != user:
                continue
            node = node_of(pid)
            if node is None and not any(a.startswith(emu_dir) for a in argv):
                continue  # another emulator on this host (e.g. the emulator's own tests)
            ns_pids = _ns_pids(pid)
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

    # ----------------------------------------------------------------- user pools

    def pool_dir(self, user: str) -> Path:
        return self.home(user) / ".globus-tmp" / "endpoints"

    def make_pool(self, user: str, n: int) -> list[str]:
        """Give ``user`` a pool of ``n`` set-up GCP config dirs ep1..epN; return their ids.

        With the lab's Globus API emulator (the default), the real way: the user is logged
        in (:meth:`login`) and runs ``globus-tmp-endpoint setup --count n``, which creates
        the endpoints in the emulated Globus and runs GCP's ``-setup`` for each, so their
        GCPs can connect. Without it (or without the hooks' venv), the emulator's
        ``create_config_dir`` makes what a ``-setup`` leaves behind, for ids no Globus
        knows. Either way everything is owned by the user, directories 0700.
        """
        self.clear_pool(user)
        if self._globus_api_url() and (self.venv_bin / ENDPOINT_CLI).exists():
            self.login(user)
            self.endpoint_cli(user, "setup", "--count", str(n), check=True, timeout=60 + 15 * n)
            return [self.pool_endpoint_id(user, f"ep{i}") for i in range(1, n + 1)]
        create = self._create_config_dir()
        pw = pwd.getpwnam(user)
        base = self.user_dir(user)
        ids = []
        for d in (base, base / "endpoints"):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chown(d, pw.pw_uid, pw.pw_gid)
            d.chmod(0o700)
        for i in range(1, n + 1):
            ep = base / "endpoints" / f"ep{i}"
            ids.append(str(create(ep, pw.pw_uid, pw.pw_gid)))
            for p in [ep, *ep.rglob("*")]:
                os.lchown(p, pw.pw_uid, pw.pw_gid)
                if p.is_dir() and not p.is_symlink():
                    p.chmod(0o700)
        return ids

    def leases(self, user: str) -> dict[str, str]:
        """Pool entry -> the node holding its lease (``<cluster>/<node>`` if not this lab's).

        Each entry's lease is its highest ``.lease.<N>`` file (a JSON record: ``held``,
        ``cluster``, ``node``...); a checkout still on the single ``registry.json`` of
        earlier versions is read from there.
        """
        out: dict[str, str] = {}
        try:
            entries = sorted(p for p in self.pool_dir(user).iterdir() if p.is_dir())
        except FileNotFoundError:
            entries = []
        found = False
        for entry in entries:
            gens = [
                int(f.name[len(".lease.") :])
                for f in entry.iterdir()
                if f.name.startswith(".lease.") and f.name[len(".lease.") :].isdigit()
            ]
            if not gens:
                continue
            found = True
            path = entry / f".lease.{max(gens)}"
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise LabError(f"{path} is unreadable: {exc}") from None
            if record.get("held"):
                cluster, node = record.get("cluster", ""), str(record.get("node", ""))
                out[entry.name] = node if cluster in ("", LAB_CLUSTER) else f"{cluster}/{node}"
        registry = self.user_dir(user) / "registry.json"
        if found or not registry.exists():
            return out
        try:
            data = json.loads(registry.read_text())
        except (OSError, ValueError) as exc:
            raise LabError(f"{registry} is unreadable: {exc}") from None
        return {name: str(lease["node"]) for name, lease in data.get("leases", {}).items()}

    def user_dir(self, user: str) -> Path:
        """The user's globus-tmp dir (``user_dir = "~/.globus-tmp"``): pool, tokens, logs."""
        return self.home(user) / ".globus-tmp"

    def pool_endpoint_id(self, user: str, entry: str) -> str:
        """The endpoint id of a pool entry (``lta/client-id.txt``, as GCP's -setup wrote it)."""
        path = self.pool_dir(user) / entry / "lta" / "client-id.txt"
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise LabError(f"pool entry {entry} of {user} has no endpoint id: {exc}") from None

    def login(self, user: str) -> str:
        """Log ``user`` in to the lab's Globus as ``<user>@example.org``; return the identity id.

        Tokens as ``globus-tmp-endpoint login`` leaves them (``~/.globus-tmp/tokens.db``,
        the user's, 0600), minted by the API emulator for the lab's client id and stored by
        the lab venv's globus-sdk, run as the user (the test process needs no globus-sdk).
        """
        pw = pwd.getpwnam(user)
        base = self.user_dir(user)
        base.mkdir(mode=0o700, exist_ok=True)
        os.chown(base, pw.pw_uid, pw.pw_gid)
        base.chmod(0o700)
        tokens = base / "tokens.db"
        tokens.unlink(missing_ok=True)
        cp = self.run_as(
            user,
            [
                str(self.venv_bin / "python"),
                "-c",
                SEED_TOKENS,
                str(self.emulators_dir),
                self.globus_api_url,
                LAB_GLOBUS_CLIENT_ID,
                f"{user}@example.org",
                str(tokens),
            ],
            check=True,
        )
        st = tokens.stat()
        if st.st_uid != pw.pw_uid or st.st_mode & 0o077:
            raise LabError(f"{tokens}: not {user}'s or not 0600 ({st.st_mode:o})")
        return cp.stdout.strip()

    def logout(self, user: str) -> None:
        """Forget ``user``'s tokens (the epilog can then not ask the Transfer API)."""
        (self.user_dir(user) / "tokens.db").unlink(missing_ok=True)

    def run_as(
        self,
        user: str,
        argv: Sequence[str],
        *,
        check: bool = False,
        timeout: float = 120,
        env: Optional[Mapping[str, str]] = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on the host as ``user`` (a login node: the host's /tmp, no job).

        Clean environment (:meth:`user_env`: the lab venv first on PATH, ``SLURM_CONF``
        set, so the CLI finds the lab's globus-tmp.conf), from the user's home.
        """
        envargs = [f"{k}={v}" for k, v in self.user_env(user, env).items()]
        return _run(
            ["runuser", "-u", user, "--", "env", "-i", *envargs, *argv],
            check=check,
            timeout=timeout,
            cwd=self.home(user),
        )

    def endpoint_cli(
        self, user: str, *args: str, check: bool = False, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``globus-tmp-endpoint ARGS`` run as ``user`` on the host (e.g. ``setup``, ``list``)."""
        return self.run_as(
            user, [str(self.venv_bin / ENDPOINT_CLI), *args], check=check, timeout=timeout
        )

    # ----------------------------------------------------------------- the Globus API emulator

    def api_call(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        """Call the API emulator's admin routes (``_emulator/...``): JSON in, JSON out."""
        return self._api_call(self.globus_api_url, method, path, body, timeout)

    @staticmethod
    def _api_call(
        url: str,
        method: str,
        path: str,
        body: Any = None,
        timeout: float = 30,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        all_headers = dict(headers or {})
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        req = urllib.request.Request(
            url.rstrip("/") + "/" + path.lstrip("/"),
            data=data,
            method=method,
            headers=all_headers,
        )
        try:
            with _NO_PROXY.open(req, timeout=timeout) as resp:
                content = resp.read()
        except urllib.error.HTTPError as exc:
            raise LabError(
                f"{method} {path}: HTTP {exc.code}: {exc.read().decode(errors='replace')}"
            ) from None
        return json.loads(content) if content else None

    def create_collection(self, name: str, writable: bool = True) -> tuple[str, Path]:
        """A directory ``<root>/collections/<name>`` served by the API emulator as a collection
        (standing in for another site's Globus endpoint); return (its endpoint id, the dir).

        Outside /tmp, so the host reads what transfers wrote there.
        """
        path = self.collections_dir / name
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        doc = self.api_call(
            "POST", "_emulator/collections", {"path": str(path), "writable": writable}
        )
        return str(doc["id"]), path

    def api_state(self) -> dict[str, Any]:
        """The API emulator's whole state (identities, endpoints, tasks, GCP sessions...)."""
        return dict(self.api_call("GET", "_emulator/state"))

    def api_task(self, task_id: str) -> dict[str, Any]:
        """A task as the emulator stores it (``status``, ``completion_time``, ``_completed_ts``)."""
        task = self.api_state()["tasks"].get(task_id)
        if task is None:
            raise LabError(f"the Globus API emulator has no task {task_id}")
        return dict(task)

    def pause_task(self, task_id: str, pause: bool = True) -> dict[str, Any]:
        """Pause (INACTIVE, as an admin pause in Globus) or resume a task; return its view."""
        action = "pause" if pause else "resume"
        return dict(self.api_call("POST", f"_emulator/tasks/{task_id}/{action}", {}))

    def cancel_task(self, user: str, task_id: str) -> dict[str, Any]:
        """Cancel ``user``'s task through the Transfer API, with a token minted for the user."""
        tokens = self.api_call(
            "POST",
            "_emulator/tokens",
            {"username": f"{user}@example.org", "client_id": LAB_GLOBUS_CLIENT_ID},
        )
        docs = [tokens, *tokens.get("other_tokens", [])]
        (transfer,) = [d for d in docs if d.get("resource_server") == "transfer.api.globus.org"]
        return dict(
            self._api_call(
                self.globus_api_url,
                "POST",
                f"v0.10/task/{task_id}/cancel",
                {},
                headers={"Authorization": f"Bearer {transfer['access_token']}"},
            )
        )

    def clear_pool(self, user: str) -> None:
        """Remove the user's whole ``~/.globus-tmp`` (pool, leases, logs, tokens)."""
        shutil.rmtree(self.user_dir(user), ignore_errors=True)

    def _create_config_dir(self) -> Any:
        """Import create_config_dir from the lab's copy of the emulators (no sys.path games)."""
        import importlib.util

        path = self.emulators_dir / "gcp_config_dir.py"
        if not path.exists():
            path = self.repo / "tests" / "emulators" / "gcp_config_dir.py"
        spec = importlib.util.spec_from_file_location("_lab_gcp_config_dir", path)
        if spec is None or spec.loader is None:
            raise LabError(f"cannot load {path}")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod.create_config_dir

    def clear_job_outputs(self) -> None:
        """Remove the ``lab-*.out`` job outputs from the users' homes."""
        for user in self.users:
            with contextlib.suppress(KeyError):
                for f in self.home(user).glob("lab-*.out"):
                    f.unlink()
