"""Run a function as the job user: the one audited place where root becomes someone else.

Root must never read or write a user-controlled path (a symlink planted in a home
directory would turn that into a write anywhere), and GCP refuses to run as root. So
everything that touches the user's files or runs GCP goes through :func:`run_as`: fork,
drop to the user (supplementary groups, gid, uid), clean environment with ``HOME``, run
the function, and send its result back through a pipe. A fork costs far less than a new
interpreter and keeps the hot path cheap.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import time
from collections.abc import Mapping
from typing import Any, Callable, TypeVar

from .errors import GlobusTmpError, PrivilegeError
from .job import UserIdentity

T = TypeVar("T")

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"

# Variables handed through to the user's side: where Slurm's config is (for squeue) and
# where the Globus services are (globus-sdk's documented overrides). Nothing else from
# slurmd's environment reaches user code.
_PASS_THROUGH_PREFIXES = ("GLOBUS_SDK_",)
_PASS_THROUGH = ("SLURM_CONF", "TZ")


def user_environment(user: UserIdentity, inherited: Mapping[str, str]) -> dict[str, str]:
    """The clean environment a process of ``user`` gets from us."""
    env = {
        "HOME": user.home,
        "USER": user.name,
        "LOGNAME": user.name,
        "SHELL": "/bin/sh",
        "PATH": SAFE_PATH,
        "LANG": "C.UTF-8",
    }
    for key, value in inherited.items():
        if key in _PASS_THROUGH or key.startswith(_PASS_THROUGH_PREFIXES):
            env[key] = value
    return env


def run_as(user: UserIdentity, timeout: float, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` as ``user`` and return its result (or raise its exception).

    When the caller already is ``user`` (the CLI, the TaskProlog) the function runs in
    this process. As root it runs in a forked child that drops privileges for good;
    the child is killed if it has not answered within ``timeout`` seconds.
    """
    euid = os.geteuid()
    if euid == user.uid:
        return fn(*args)
    if euid != 0:
        raise PrivilegeError(f"cannot act as {user.name}: running as uid {euid}, not root")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child; its effects are tested
        os.close(read_fd)
        _child(user, write_fd, fn, args)
    os.close(write_fd)
    try:
        payload = _read_all(read_fd, time.monotonic() + timeout)
    except TimeoutError:
        _kill(pid)
        raise PrivilegeError(
            f"step as {user.name} ({getattr(fn, '__name__', 'fn')}) did not finish "
            f"within {timeout:.0f} s"
        ) from None
    finally:
        os.close(read_fd)
        _reap(pid)
    if not payload:
        raise PrivilegeError(f"step as {user.name} died without an answer")
    ok, value = pickle.loads(payload)
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


def _child(
    user: UserIdentity, write_fd: int, fn: Callable[..., Any], args: tuple[Any, ...]
) -> None:
    status = 0
    try:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(0)
        os.setgroups(os.getgrouplist(user.name, user.gid))
        os.setgid(user.gid)
        os.setuid(user.uid)
        if os.getuid() != user.uid or os.geteuid() != user.uid:
            raise PrivilegeError(f"privilege drop to {user.name} did not stick")
        os.umask(0o077)
        env = user_environment(user, os.environ)
        os.environ.clear()
        os.environ.update(env)
        try:
            os.chdir(user.home)
        except OSError:
            os.chdir("/")
        result: tuple[bool, Any] = (True, fn(*args))
    except GlobusTmpError as exc:
        result = (False, exc)
    except BaseException as exc:
        result = (False, PrivilegeError(f"as {user.name}: {type(exc).__name__}: {exc}"))
    try:
        data = pickle.dumps(result)
    except Exception as exc:
        data = pickle.dumps((False, PrivilegeError(f"unpicklable result: {exc}")))
    try:
        view = memoryview(data)
        while view:
            written = os.write(write_fd, view)
            view = view[written:]
    except OSError:
        status = 1
    os._exit(status)


def _read_all(fd: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            raise TimeoutError
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
