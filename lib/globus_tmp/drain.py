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

_INHERITED = ("GLOBUS_TMP_CONFIG", "SLURM_CONF", "TZ", "GLOBUS_TMP_FAILPOINTS")


class DrainLauncher(Protocol):
    def launch(self, user: UserIdentity, node: str, until: float) -> ProcessRef: ...


class DetachedDrainLauncher:
    """Runs the drain as a detached root process on this node."""

    def launch(self, user: UserIdentity, node: str, until: float) -> ProcessRef:
        env = {"PATH": SAFE_PATH, "SLURMD_NODENAME": node}
        env.update(
            {k: v for k, v in os.environ.items() if k in _INHERITED or k.startswith("GLOBUS_SDK_")}
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "globus_tmp_epilog.drain",
                "--user",
                user.name,
                "--node",
                node,
                "--until",
                f"{until:.3f}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            env=env,
            cwd="/",
        )
        return ProcessRef.of(proc.pid)
