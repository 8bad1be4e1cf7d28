"""Starting the detached drain that outlives the Epilog.

The Epilog must return quickly and slurmd kills its process group on a timeout, so the
drain runs in a session of its own, with no descriptor of the Epilog's (slurmd waits
for every holder of the hook's output pipe) and its own interpreter
(``python -m globus_tmp_epilog.drain``). It logs to the node's hook log.

``until`` (wall clock) is when its ``linger_max`` runs out; it is also recorded in node
state, so a repair that finds the drain dead knows whether to resume or to stop.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Protocol

from .job import UserIdentity
from .privileges import SAFE_PATH
from .process import ProcessRef

_INHERITED = (
    "GLOBUS_TMP_CONFIG",
    "SLURM_CONF",
    "SLURMD_NODENAME",
    "TZ",
    "GLOBUS_TMP_FAILPOINTS",
)


class DrainLauncher(Protocol):
    def launch(self, user: UserIdentity, node: str, until: float) -> ProcessRef: ...


class DetachedDrainLauncher:
    """Runs the drain as a detached root process on this node."""

    def launch(self, user: UserIdentity, node: str, until: float) -> ProcessRef:
        module = "globus_tmp_epilog.drain"
        argv = [sys.executable, "-m", module, "--user", user.name, "--node", node]
        return launch_detached([*argv, "--until", f"{until:.3f}"], {"SLURMD_NODENAME": node})


def launch_detached(argv: list[str], env: dict[str, str]) -> ProcessRef:
    """Start ``argv`` as root in a session of its own, with no descriptor of ours (slurmd
    waits for every holder of a hook's output pipe) and a clean environment: ``env``
    plus where the configuration and Globus are."""
    clean = {"PATH": SAFE_PATH}
    clean.update(
        {k: v for k, v in os.environ.items() if k in _INHERITED or k.startswith("GLOBUS_SDK_")}
    )
    clean.update(env)
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
        env=clean,
        cwd="/",
    )
    return ProcessRef.of(proc.pid)
