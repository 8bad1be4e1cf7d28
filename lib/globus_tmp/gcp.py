"""Globus Connect Personal's command line: the only module that knows it.

Facts this relies on (docs/GCP.md, with sources): ``-start`` runs in the foreground until stopped;
one instance per Unix user per host, reached through ``/tmp/globusconnect_<uid>.sock``
whatever ``-dir`` says, so ``-status`` and ``-stop`` find it without a dir; ``-status``
waits for the next status broadcast (up to ~5 s); ``-stop`` returns before the process
exits. GCP refuses root: every call here runs as the job user.
Facts: docs/GCP.md#command-line (and its messages, timings, control socket, config dir).

GCP has no machine-readable output: the texts matched below (:data:`NOT_RUNNING`,
:data:`ANOTHER_RUNNING`, ``-status``'s two lines) are its documented protocol, quoted
in docs/GCP.md#messages-and-exit-codes, and the only place where text decides anything.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .boundedio import read_tail
from .commands import CommandResult, run_bounded
from .errors import (
    CommandNotStarted,
    CommandTimedOut,
    ControlSocketSquatted,
    GcpAlreadyRunning,
    GcpCommandFailed,
    GcpCommandTimedOut,
    GcpError,
    GcpNotStarted,
    GcpSetupKeyRefused,
)
from .privileges import report_progress, restore_limits
from .process import ProcessRef

NOT_RUNNING = "No Globus Connect Personal connected"
"""What ``-status`` and ``-stop`` print (exit 1) when no instance runs (docs/GCP.md)."""
ANOTHER_RUNNING = "Another Globus Connect Personal is currently running"
"""What ``-start`` prints (exit 1) when the user's instance already runs (docs/GCP.md)."""
SETUP_KEY_REFUSED = re.compile(r"Setup Code \S+ not found")
"""What ``-setup`` prints (non-zero exit) for a used or expired key (docs/GCP.md)."""
CONTROL_SOCKET = "/tmp/globusconnect_{uid}.sock"

__all__ = ["ControlSocket", "GcpAlreadyRunning", "GcpCommand", "GcpStatus"]


@dataclass(frozen=True)
class GcpStatus:
    """What ``-status`` says: ``Globus Online:   <online>`` / ``Transfer Status: <transfer>``."""

    online: str
    transfer: str

    @property
    def connected(self) -> bool:
        return self.online == "connected"

    @property
    def transfer_active(self) -> bool:
        return self.transfer == "active"

    @classmethod
    def parse(cls, text: str) -> GcpStatus:
        fields = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip().lower()] = value.strip().lower()
        online = fields.get("globus online")
        transfer = fields.get("transfer status")
        if online is None or transfer is None:
            raise GcpError(f"cannot parse 'globusconnectpersonal -status' output: {text.strip()!r}")
        return cls(online, transfer)


def launcher_problem(gcp_path: str) -> str | None:
    """Why ``gcp_path`` cannot be run (one line with the fix), or None. Asked as the user
    before each call, and by root before a start: only root's answer is the site's."""
    if not os.path.isfile(gcp_path) or not os.access(gcp_path, os.X_OK):
        return f"gcp_path {gcp_path} is missing or not executable; fix gcp_path in globus-tmp.conf"
    return None


class GcpCommand:
    """Runs the ``globusconnectpersonal`` launcher named by ``gcp_path``, as the caller."""

    def __init__(self, gcp_path: str, call_timeout: float = 15.0) -> None:
        self.gcp_path = gcp_path
        self.call_timeout = call_timeout

    def _check_launcher(self) -> None:
        problem = launcher_problem(self.gcp_path)
        if problem:
            raise GcpError(problem)

    def _run(
        self, *args: str, timeout: float | None = None, stdin_pipe: bool = False
    ) -> CommandResult:
        self._check_launcher()
        wait = self.call_timeout if timeout is None else timeout
        try:
            return run_bounded([self.gcp_path, *args], wait, stdin_pipe=stdin_pipe)
        except CommandTimedOut as exc:
            raise GcpCommandTimedOut(
                f"'globusconnectpersonal {_shown(args)}' gave no answer in {wait:.0f} s",
                command=_hide_key(exc.command),
                timeout=exc.timeout,
                output=exc.output,
            ) from None
        except CommandNotStarted as exc:
            raise GcpNotStarted(
                f"cannot run {self.gcp_path}: {exc.reason}",
                command=_hide_key(exc.command),
                reason=exc.reason,
            ) from None

    def _failed(self, what: str, res: CommandResult) -> GcpCommandFailed:
        return GcpCommandFailed(
            f"'{what}' failed (exit {res.returncode}): {res.last_line()}",
            command=_hide_key(res.command),
            returncode=res.returncode,
            output=res.output[-2000:],
        )

    def status(self, timeout: float | None = None) -> GcpStatus | None:
        """The running instance's status, or None when none runs.

        ``-status`` talks to whatever listens on the control socket: an answer is only
        believed when the socket and the process behind it are the caller's own.
        """
        ControlSocket(os.getuid()).check_not_squatted()
        res = self._run("-status", timeout=timeout)
        if res.returncode != 0:
            if NOT_RUNNING in res.output:
                return None
            raise self._failed("-status", res)
        return GcpStatus.parse(res.stdout)

    def setup(self, setup_key: str, config_dir: Path, timeout: float = 120.0) -> None:
        """``-setup --setup-key KEY -dir DIR``: register ``config_dir`` with its endpoint.

        GCP's setup crashes without an open stdin, so it gets an (empty) pipe, never
        a closed descriptor.
        """
        args = ("-setup", "--setup-key", setup_key, "-dir", str(config_dir))
        try:
            res = self._run(*args, timeout=timeout, stdin_pipe=True)
        except GcpCommandTimedOut:
            raise GcpCommandTimedOut(
                f"'-setup' gave no answer in {timeout:.0f} s",
                command=_hide_key([self.gcp_path, *args]),
                timeout=timeout,
            ) from None
        if res.returncode != 0 or not (config_dir / "lta" / "client-id.txt").exists():
            failed = self._failed("-setup", res)
            if SETUP_KEY_REFUSED.search(res.output):
                raise GcpSetupKeyRefused(
                    str(failed),
                    command=failed.command,
                    returncode=failed.returncode,
                    output=failed.output,
                )
            raise failed

    def request_stop(self) -> bool:
        """Ask the running instance to stop; True if one was running. Does not wait."""
        ControlSocket(os.getuid()).check_not_squatted()
        res = self._run("-stop")
        if res.returncode == 0:
            return True
        if NOT_RUNNING in res.output:
            return False
        raise self._failed("-stop", res)

    def start(
        self, config_dir: Path, log_path: Path, timeout: float, wait: bool = True
    ) -> ProcessRef:
        """Start GCP detached and (``wait``) wait until it says ``connected``; its
        ProcessRef. Without ``wait`` it returns once GCP is spawned: whether it connects
        is :meth:`wait_connected`'s to find out, later and elsewhere.

        Detached means: a new session (slurmd kills the hook's process group on a
        timeout), stdio to the instance log, no inherited descriptors (slurmd waits
        for every holder of the hook's output pipe).
        """
        self._check_launcher()
        control = ControlSocket(os.getuid())
        if control.state() == ControlSocket.LIVE:
            raise GcpAlreadyRunning(f"{ANOTHER_RUNNING} (its control socket answers)")
        control.check_not_squatted()
        deadline = time.monotonic() + timeout
        log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"=== globus-tmp: {time.ctime()}: {self.gcp_path} -dir {config_dir} -start\n")
            log.flush()
            offset = log.tell()
            try:
                proc = subprocess.Popen(
                    [self.gcp_path, "-dir", str(config_dir), "-start"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    preexec_fn=restore_limits,
                )
            except OSError as exc:
                raise GcpNotStarted(
                    f"cannot run {self.gcp_path}: {exc.strerror}",
                    command=[self.gcp_path, "-start"],
                    reason=exc.strerror or str(exc),
                ) from None
        ref = ProcessRef.of(proc.pid)
        report_progress({"spawned": {"pid": ref.pid, "start_ticks": ref.start_ticks}})
        if not wait:
            return ref
        try:
            self.wait_connected(ref, log_path, deadline, offset)
        except GcpError:
            ref.kill_tree(os.getuid())
            proc.wait()
            raise
        return ref

    def wait_connected(
        self, ref: ProcessRef, log_path: Path, deadline: float, offset: int = 0
    ) -> None:
        """Return once GCP ``ref`` says ``connected``; :class:`GcpError` if it exits first
        or ``deadline`` (monotonic) passes. ``offset``: where its lines start in its log."""
        last = "no status yet"
        timeout = max(deadline - time.monotonic(), 0)
        while True:
            if not ref.alive():
                said = _log_tail(log_path, offset) or "(nothing)"
                if ANOTHER_RUNNING in said:
                    raise GcpAlreadyRunning(said)
                raise GcpError(f"GCP exited before it connected: {said}; log: {log_path}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise GcpError(
                    f"GCP did not connect within {timeout:.0f} s (last status: {last}); "
                    f"log: {log_path}"
                )
            try:
                status = self.status(timeout=min(left, self.call_timeout))
            except GcpError as exc:
                status, last = None, str(exc)
            if status is not None:
                last = status.online
                # the answer may come from another instance while ours is failing
                if status.connected and ref.alive():
                    return
            time.sleep(min(0.2, max(left, 0)))


class ControlSocket:
    """GCP's control socket of one user, ``/tmp/globusconnect_<uid>.sock``, checked.

    Any user can bind that path for someone else (``/tmp`` is world-writable): the
    victim's GCP then cannot start, and ``-status`` would believe the squatter. So a
    socket counts only when the file is a socket owned by the user **and** the process
    listening on it is the user's (``SO_PEERCRED``).
    """

    ABSENT = "absent"
    LIVE = "live"  # the user's own instance answers
    STALE = "stale"  # the user's socket file, nobody listens (left by a SIGKILL)
    SQUATTED = "squatted"  # someone else's file or listener

    def __init__(self, uid: int, path: str | None = None) -> None:
        self.uid = uid
        self.path = path or CONTROL_SOCKET.format(uid=uid)

    def state(self) -> str:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return self.ABSENT
        except OSError:
            return self.SQUATTED
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != self.uid:
            return self.SQUATTED
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            try:
                sock.connect(self.path)
            except OSError:
                return self.STALE
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, peer_uid, _gid = struct.unpack("3i", creds)
        return self.LIVE if peer_uid == self.uid else self.SQUATTED

    def owner(self) -> int | None:
        try:
            return os.lstat(self.path).st_uid
        except OSError:
            return None

    def check_not_squatted(self) -> None:
        if self.state() == self.SQUATTED:
            raise ControlSocketSquatted(
                f"GCP's control socket {self.path} is held by uid {self.owner()}, not "
                f"uid {self.uid}; the next Prolog removes it (ask an admin if it returns)"
            )

    def clear_if_squatted(self) -> bool:
        """As root: remove the path when it is not the user's; True if it was removed.

        ``unlink`` never follows a symlink, and the name is the user's by convention,
        so removing what someone else put there harms no one.
        """
        if self.state() != self.SQUATTED:
            return False
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        except OSError as exc:  # e.g. a directory: another user's doing, not the site's
            raise ControlSocketSquatted(
                f"GCP's control socket path {self.path} is taken by uid {self.owner()} and "
                f"cannot be removed ({exc.strerror}); ask an admin to remove it"
            ) from None
        return True


def find_pool_instances(uid: int, endpoints_dir: str) -> list[dict[str, Any]]:
    """GCPs of ``uid`` started from a config dir in the pool (run **as the user**).

    Used when node state lost track of a GCP (a start killed after GCP was spawned):
    the instance is recognised by its ``-dir`` argument and taken over or stopped,
    never started twice. Reading another process's argv can hang on a FUSE mapping,
    so this runs in a bounded step as the user, who owns those processes.
    """
    import psutil

    prefix = endpoints_dir.rstrip(os.sep) + os.sep
    matches: dict[int, tuple[psutil.Process, str]] = {}
    for proc in psutil.process_iter(["uids", "cmdline"]):
        try:
            if proc.info["uids"] is None or proc.info["uids"].real != uid:
                continue
            argv: list[str] = proc.info["cmdline"] or []
            if "-start" not in argv or "-dir" not in argv:
                continue
            i = argv.index("-dir")
            dir_arg = argv[i + 1] if i + 1 < len(argv) else ""
            if dir_arg.startswith(prefix):
                matches[proc.pid] = (proc, dir_arg)
        except (psutil.Error, ValueError):
            continue
    found = []
    for proc, found_dir in matches.values():
        try:
            if proc.ppid() in matches:
                continue  # the launcher's own child: the leader is what counts
            ref = ProcessRef.of(proc.pid)
        except (psutil.Error, ProcessLookupError):
            continue
        found.append({"pid": ref.pid, "start_ticks": ref.start_ticks, "config_dir": found_dir})
    return found


def _shown(args: tuple[str, ...]) -> str:
    return " ".join(_hide_key(args))


def _hide_key(argv: tuple[str, ...] | list[str]) -> list[str]:
    """``argv`` with a setup key masked: errors are logged and cross to root."""
    out = list(argv)
    for i, word in enumerate(out[:-1]):
        if word == "--setup-key":
            out[i + 1] = "***"
    return out


def _log_tail(path: Path, offset: int, limit: int = 400) -> str:
    try:
        text = read_tail(path, offset)
    except OSError:
        return ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-3:])[-limit:]
