"""What is where: the lab's names, its root's layout, its ports and its state file.

:class:`LabBase` holds a lab's settings (the constructor's arguments) and derives every
path from the root, so each concern (install, config, daemons, nodes, jobs...) builds on
one shared picture of the lab. The state file ``<root>/run/lab.json`` records the pids
(with start times) of what ``up`` started, so that another process can stop exactly those.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

from .shell import LabError, PathLike, tail
from .slurmbuild import SlurmInstall, locate, normalise

REPO_ROOT = Path(__file__).resolve().parents[3]
"""The checkout this file lives in: what the lab installs into its venv."""

DEFAULT_ROOT = Path(os.environ.get("GLOBUS_TMP_LAB_ROOT", "/opt/globus-tmp-lab"))
"""Outside /tmp on purpose: nodes with a private /tmp must still see everything here."""
DEFAULT_BASE_PORT = 17817
"""slurmctld's port; node nK listens on base+K. ``$GLOBUS_TMP_LAB_BASE_PORT`` overrides it
(read when a :class:`SlurmLab` is made), so a second lab (another root) can run beside."""

LAB_USERS: tuple[str, ...] = ("gtalice", "gtbob", "gtcarol", "gtdave")
SPANK_SOURCE = "spank/globus_tmp_spank.c"
"""The SPANK plugin's source in the checkout; the lab builds it into ``<root>/lib``."""
SPANK_PLUGIN = "globus_tmp_spank.so"
CLONENS_INIT = "globus-tmp-clonens-init"
CLONENS_EPILOG = "globus-tmp-clonens-epilog"
"""job_container.conf's CloneNSScript/CloneNSEpilog wrappers in ``<root>/bin`` (as in
slurm-conf-snippets/): ``globus-tmp-privatetmp clonens-init|clonens-epilog``."""
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


class LabBase:
    """A lab's settings, its paths and its state file: what every part of the lab builds on.

    The constructor's arguments are :class:`SlurmLab`'s (see there).
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
        slurm: Optional[str] = None,
        clonens: bool = False,
    ) -> None:
        self.root = Path(root)
        self.slurm_version = normalise(
            slurm
            or os.environ.get("GLOBUS_TMP_LAB_SLURM")
            or self._load_state().get("slurm")
            or "22.05"
        )
        """Which Slurm runs the lab (``22.05``: Debian's; ``24.11``, ``25.11``: built from
        source, see slurmbuild.py). ``$GLOBUS_TMP_LAB_SLURM`` sets the default."""
        self.clonens = clonens
        """With job_container on: export private /tmp by job_container.conf's
        ``CloneNSScript``/``CloneNSEpilog`` (24.11+) instead of the SPANK plugin."""
        self._slurm_install: Optional[SlurmInstall] = None
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

    @property
    def slurm(self) -> SlurmInstall:
        """Where this lab's Slurm programs and headers are (not built here: ``up`` builds)."""
        if self._slurm_install is None:
            self._slurm_install = locate(self.slurm_version)
        return self._slurm_install

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

    def job_container_dir(self, node: str, job_id: Union[str, int]) -> Path:
        """A job's container on ``node`` as the host sees it: ``BasePath/<node>/<job>/.<job>``.

        It exists from right after the job's Prolog on that node until right before its
        Epilog (created and deleted by the job's extern step); owner the job user, 0700.
        """
        return self.job_tmp_base / node / str(job_id) / f".{job_id}"

    def job_tmp_dir(self, node: str, job_id: Union[str, int]) -> Path:
        """A job's private /tmp on ``node`` as the host sees it: the container on 22.05,
        ``<container>/_tmp`` from 23.02 (job_container.conf's ``Dirs``)."""
        container = self.job_container_dir(node, job_id)
        return container / "_tmp" if self.slurm.dirs_layout else container

    def job_tmp_export(self, user: str, job_id: Union[str, int]) -> str:
        """How the path of a job's exported /tmp ends: ``/jobtmp/<user>/<job>[/_tmp]``."""
        return f"/jobtmp/{user}/{job_id}" + ("/_tmp" if self.slurm.dirs_layout else "")

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

    def _log(self, msg: str) -> None:
        if self.verbose:
            print(f"lab: {msg}", file=sys.stderr, flush=True)

    @staticmethod
    def _require_root() -> None:
        if os.geteuid() != 0:
            raise LabError("the Slurm lab needs root (it starts slurmd, munged, creates users)")

    def _logs_excerpt(self, lines: int = 20) -> str:
        parts = [f"--- {self.slurmctld_log} (tail) ---\n{tail(self.slurmctld_log, lines)}"]
        for node in self.nodes:
            log = self.slurmd_log(node)
            parts.append(f"--- {log} (tail) ---\n{tail(log, lines)}")
            out = self.log_dir / f"slurmd.{node}.out"
            if out.exists() and out.stat().st_size:
                parts.append(f"--- {out} (tail) ---\n{tail(out, lines)}")
        return "\n".join(parts)

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
