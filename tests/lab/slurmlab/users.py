"""The lab's job users: their accounts, homes and clean environments, commands run as them.

The users are real Unix accounts with homes under /home (shared by every node, as on a
cluster with shared homes): the hooks run GCP as them, and their pools and tokens live in
their homes.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

from .layout import ENDPOINT_CLI, LabBase
from .shell import run


class LabUsers(LabBase):
    """The test users (``gtalice``...): accounts, environments, commands run as them."""

    def ensure_users(self) -> None:
        """Create the test users (idempotent), homes under /home as on a shared-home cluster."""
        for user in self.users:
            try:
                pwd.getpwnam(user)
            except KeyError:
                run(
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
            "PATH": f"{self.venv_bin}:{self.slurm.path}",
            "SLURM_CONF": str(self.slurm_conf),
        }
        env.update(extra or {})
        return env

    def user_dir(self, user: str) -> Path:
        """The user's globus-tmp dir (``user_dir = "~/.globus-tmp"``): pool, tokens, logs."""
        return self.home(user) / ".globus-tmp"

    def pool_dir(self, user: str) -> Path:
        return self.home(user) / ".globus-tmp" / "endpoints"

    def run_as(
        self,
        user: str,
        argv: Sequence[str],
        *,
        check: bool = False,
        timeout: float = 120,
        env: Optional[Mapping[str, str]] = None,
        input: Optional[str] = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on the host as ``user`` (a login node: the host's /tmp, no job);
        also how jobs are submitted (``sbatch``, ``srun``), so they inherit this environment.

        Clean environment (:meth:`user_env`: the lab venv first on PATH, ``SLURM_CONF``
        set, so the CLI finds the lab's globus-tmp.conf), from the user's home.
        """
        envargs = [f"{k}={v}" for k, v in self.user_env(user, env).items()]
        return run(
            ["runuser", "-u", user, "--", "env", "-i", *envargs, *argv],
            check=check,
            timeout=timeout,
            cwd=self.home(user),
            input=input,
        )

    def endpoint_cli(
        self, user: str, *args: str, check: bool = False, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``globus-tmp-endpoint ARGS`` run as ``user`` on the host (e.g. ``setup``, ``list``)."""
        return self.run_as(
            user, [str(self.venv_bin / ENDPOINT_CLI), *args], check=check, timeout=timeout
        )

    def clear_job_outputs(self) -> None:
        """Remove the ``lab-*.out`` job outputs from the users' homes."""
        for user in self.users:
            with contextlib.suppress(KeyError):
                for f in self.home(user).glob("lab-*.out"):
                    f.unlink()
