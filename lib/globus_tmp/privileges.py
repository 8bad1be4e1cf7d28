"""Run a function as the job user: the one audited place where root becomes someone else.

Root must never read or write a user-controlled path (a symlink planted in a home
directory would turn that into a write anywhere), and GCP refuses to run as root. So
everything that touches the user's files or runs GCP goes through :func:`run_as`: fork,
drop to the user (supplementary groups, gid, uid), clean environment with ``HOME``,
resource limits, run the function, and send its result back through a pipe. A fork
costs far less than a new interpreter and keeps the hot path cheap.

Only plain data crosses back: one JSON document per line, at most ``MAX_ANSWER``
bytes in all. A child that the user could tamper with (``ptrace`` once it is the
user's) can then at worst lie in data root checks, never run code in root (pickle
would). Errors cross as an allow-listed kind, a message and the error's fields
(:meth:`~globus_tmp.errors.GlobusTmpError.fields`), checked again on arrival, and marked as the
user's doing (:func:`~globus_tmp.errors.mark_user_side`), as is a step that dies, hangs
or garbles its answer: the user can make it do any of these. A step can report
progress before its result (:func:`report_progress`, e.g. "GCP started, pid N"), so
root learns what the step did even when it has to kill the step at its bound.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import time
from collections.abc import Callable, Mapping

from . import errors
from .errors import GlobusTmpError, PrivilegeError, mark_user_side
from .job import UserIdentity

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from typing import Any, ParamSpec

    ProgressSink = Callable[[Any], None]
    P = ParamSpec("P")

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_ANSWER = 1 << 20
"""The most a step as the user may send back (bytes)."""

# Variables handed through to the user's side: where Slurm's config is (for squeue) and
# where the Globus services are (globus-sdk's documented overrides). Nothing else from
# slurmd's environment reaches user code.
_PASS_THROUGH_PREFIXES = ("GLOBUS_SDK_",)
_PASS_THROUGH = ("SLURM_CONF", "TZ")

# Soft limits of a step as the user: a step reads small files and talks to Globus; a
# runaway one must not take the node's memory. GCP gets the limits back (restore_limits).
_STEP_LIMITS = {
    resource.RLIMIT_AS: 2 << 30,
    resource.RLIMIT_CORE: 0,
    resource.RLIMIT_FSIZE: 256 << 20,
}
_saved_limits: dict[int, tuple[int, int]] = {}

_progress: ProgressSink | None = None


def report_progress(data: Any) -> None:
    """Tell root, before the step ends, something it must know even if the step is killed."""
    if _progress is not None:
        _progress(data)


def restore_limits() -> None:
    """Give a process started by a step the limits the step itself had from root."""
    for which, limits in _saved_limits.items():
        try:
            resource.setrlimit(which, limits)
        except (ValueError, OSError):
            pass


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


def run_as(
    user: UserIdentity, timeout: float, fn: Callable[P, Any], *args: P.args, **kwargs: P.kwargs
) -> Any:
    """Run ``fn(*args, **kwargs)`` as ``user``; its JSON result (or its error, raised here).

    When the caller already is ``user`` (the CLI, the TaskProlog) the function runs in
    this process. As root it runs in a forked child that drops privileges for good;
    the child is killed if it has not answered within ``timeout`` seconds.

    The arguments are checked against ``fn``'s signature; the result is ``Any``
    because it is ``fn``'s result after a JSON round trip (a tuple comes back a list),
    which the caller must check like any data from the user's side.
    """
    return run_as_reporting(user, timeout, None, fn, *args, **kwargs)


def run_as_away_from_home(
    user: UserIdentity, timeout: float, fn: Callable[P, Any], *args: P.args, **kwargs: P.kwargs
) -> Any:
    """:func:`run_as` for a step that must not touch the home: its child starts in
    ``/``, not in the home (``HOME`` is still set, for nothing), so a hung home file
    system cannot hold it before it even begins (``chdir`` there would block)."""
    return _run_step(user, timeout, None, False, fn, lambda: fn(*args, **kwargs))


def run_as_reporting(
    user: UserIdentity,
    timeout: float,
    on_progress: ProgressSink | None,
    fn: Callable[P, Any],
    *args: P.args,
    **kwargs: P.kwargs,
) -> Any:
    """:func:`run_as`, passing what the step tells with :func:`report_progress` to
    ``on_progress`` as it comes (root learns it even if the step is then killed)."""
    return _run_step(user, timeout, on_progress, True, fn, lambda: fn(*args, **kwargs))


def _run_step(
    user: UserIdentity,
    timeout: float,
    on_progress: ProgressSink | None,
    in_home: bool,
    fn: Callable[..., Any],
    step: Callable[[], Any],
) -> Any:
    global _progress
    euid = os.geteuid()
    if euid == user.uid:
        previous, _progress = _progress, on_progress
        try:
            return json.loads(json.dumps(step()))  # the contract of a fork
        finally:
            _progress = previous
    if euid != 0:
        raise PrivilegeError(f"cannot act as {user.name}: running as uid {euid}, not root")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child; its effects are tested
        os.close(read_fd)
        _child(user, write_fd, step, in_home)
    os.close(write_fd)
    what = f"step as {user.name} ({getattr(fn, '__name__', 'fn')})"
    try:
        return _receive(read_fd, time.monotonic() + timeout, what, on_progress)
    except TimeoutError:
        _kill(pid)
        raise mark_user_side(
            PrivilegeError(f"{what} did not finish within {timeout:.0f} s")
        ) from None
    finally:
        os.close(read_fd)
        _kill(pid)
        _reap(pid, time.monotonic() + 5)


def _receive(fd: int, deadline: float, what: str, on_progress: ProgressSink | None) -> Any:
    buffer = b""
    total = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            raise TimeoutError
        chunk = os.read(fd, 65536)
        if not chunk:
            raise mark_user_side(PrivilegeError(f"{what} died without an answer"))
        total += len(chunk)
        if total > MAX_ANSWER:
            raise mark_user_side(
                PrivilegeError(f"{what} sent more than {MAX_ANSWER} bytes; ignored")
            )
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            message = _decode(line, what)
            if "progress" in message:
                if on_progress is not None:
                    on_progress(message["progress"])
                continue
            if "result" in message:
                return message["result"]
            raise mark_user_side(_error_from(message.get("error"), what))


def _decode(line: bytes, what: str) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError:
        raise mark_user_side(PrivilegeError(f"{what} sent an unreadable answer")) from None
    if not isinstance(message, dict):
        raise mark_user_side(PrivilegeError(f"{what} sent an unreadable answer"))
    return message


_ERROR_KINDS: dict[str, type[GlobusTmpError]] = {
    cls.__name__: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, GlobusTmpError)
}


def _kind_of(exc: GlobusTmpError) -> str:
    """The allow-listed class nearest to ``exc``'s own (a GlobusApiError crosses as the
    RemoteApiError it is, with its status and code)."""
    for cls in type(exc).__mro__:
        if _ERROR_KINDS.get(cls.__name__) is cls:
            return cls.__name__
    return GlobusTmpError.__name__  # pragma: no cover - GlobusTmpError is in the list


def _error_from(doc: Any, what: str) -> GlobusTmpError:
    """The error a child reported: an allow-listed class with the child's message and
    whichever of its fields are well-typed."""
    if not isinstance(doc, dict):
        return PrivilegeError(f"{what} sent an unreadable answer")
    cls = _ERROR_KINDS.get(str(doc.get("kind")), PrivilegeError)
    fields = doc.get("fields")
    return cls.rebuild(
        str(doc.get("message", ""))[:2000], fields if isinstance(fields, dict) else {}
    )


def _child(user: UserIdentity, write_fd: int, step: Callable[[], Any], in_home: bool) -> None:
    global _progress

    def send(message: dict[str, Any]) -> None:
        data = memoryview(json.dumps(message).encode() + b"\n")
        while data:
            data = data[os.write(write_fd, data) :]

    status = 0
    try:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(0)
        os.setgroups(os.getgrouplist(user.name, user.gid))
        os.setgid(user.gid)
        os.setuid(user.uid)
        if os.getuid() != user.uid or os.geteuid() != user.uid:
            raise PrivilegeError(f"privilege drop to {user.name} did not stick")
        _limit_resources()
        os.umask(0o077)
        env = user_environment(user, os.environ)
        os.environ.clear()
        os.environ.update(env)
        try:
            os.chdir(user.home if in_home else "/")
        except OSError:
            os.chdir("/")
        _progress = lambda data: send({"progress": data})  # noqa: E731
        message: dict[str, Any] = {"result": step()}
    except GlobusTmpError as exc:
        report = {"kind": _kind_of(exc), "message": str(exc), "fields": exc.fields()}
        message = {"error": report}
    except BaseException as exc:
        text = f"as {user.name}: {type(exc).__name__}: {exc}"
        message = {"error": {"kind": "PrivilegeError", "message": text}}
    try:
        try:
            send(message)
        except (TypeError, ValueError) as exc:
            send({"error": {"kind": "PrivilegeError", "message": f"unsendable result: {exc}"}})
    except OSError:
        status = 1
    os._exit(status)


def _limit_resources() -> None:
    for which, soft in _STEP_LIMITS.items():
        try:
            old_soft, hard = resource.getrlimit(which)
            _saved_limits[which] = (old_soft, hard)
            cap = soft if hard == resource.RLIM_INFINITY else min(soft, hard)
            if old_soft == resource.RLIM_INFINITY or old_soft > cap:
                resource.setrlimit(which, (cap, hard))
        except (ValueError, OSError):
            continue


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int, deadline: float) -> None:
    """Collect the child, waiting at most until ``deadline`` (a child stuck in the kernel
    on a dead file system may not die at once; it is left to init when we exit)."""
    pause = 0.0002  # a killed child is gone within a millisecond or so: poll fast first
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done or time.monotonic() >= deadline:
            return
        time.sleep(pause)
        pause = min(pause * 2, 0.01)
