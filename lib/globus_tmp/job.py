"""Who and where: the job user and the job, as the hooks and the CLI see them.

slurmd gives the Prolog and Epilog an environment built from scratch (no PATH, no
HOME): the job and user come from ``SLURM_JOB_*`` variables, checked against the
password database so a bad value is caught before anything runs as that user.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .errors import JobContextError

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from typing import Any


@dataclass(frozen=True)
class UserIdentity:
    """A Unix user as the privilege drop needs it."""

    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def from_uid(cls, uid: int) -> UserIdentity:
        return cls._lookup(pwd.getpwuid, uid, f"uid {uid}")

    @classmethod
    def from_name(cls, name: str) -> UserIdentity:
        return cls._lookup(pwd.getpwnam, name, f"user '{name}'")

    @classmethod
    def _lookup(
        cls, getter: Callable[[Any], pwd.struct_passwd], key: Any, what: str
    ) -> UserIdentity:
        try:
            pw = getter(key)
        except KeyError:
            raise JobContextError(f"{what} is not in the password database") from None
        return cls(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir)

    @classmethod
    def current(cls) -> UserIdentity:
        return cls.from_uid(os.getuid())


@dataclass(frozen=True)
class JobContext:
    """One job on one node, for one user."""

    job_id: str
    node: str
    user: UserIdentity
    nodelist: str = ""
    """``SLURM_JOB_NODELIST`` (a Slurm hostlist such as ``n[1-4]``)."""

    @classmethod
    def from_hook_env(cls, env: Mapping[str, str]) -> JobContext:
        """Build the context of a Prolog/Epilog from slurmd's environment."""
        job_id = env.get("SLURM_JOB_ID", "")
        if not job_id.isdigit():
            raise JobContextError(
                f"SLURM_JOB_ID is {job_id!r}, not a job id: run this as a Slurm Prolog/Epilog"
            )
        name = env.get("SLURM_JOB_USER", "")
        uid_text = env.get("SLURM_JOB_UID", "")
        if name:
            user = UserIdentity.from_name(name)
        elif uid_text.isdigit():
            user = UserIdentity.from_uid(int(uid_text))
        else:
            raise JobContextError("neither SLURM_JOB_USER nor SLURM_JOB_UID is set")
        if uid_text and uid_text.isdigit() and int(uid_text) != user.uid:
            raise JobContextError(
                f"SLURM_JOB_UID={uid_text} does not match user {user.name} (uid {user.uid})"
            )
        if user.uid == 0:
            raise JobContextError("job runs as root; globus-tmp serves ordinary users only")
        return cls(job_id, node_name(env), user, env.get("SLURM_JOB_NODELIST", ""))


def node_name(env: Mapping[str, str]) -> str:
    """This node's Slurm name: ``SLURMD_NODENAME`` (set in hooks and job steps)."""
    name = env.get("SLURMD_NODENAME")
    if name:
        return name
    return os.uname().nodename.split(".", 1)[0]
