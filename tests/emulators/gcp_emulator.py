"""Emulator of the Globus Connect Personal (GCP) 3.2.x launcher, ``globusconnectpersonal``.

Why it exists: the project's Slurm hooks start, watch and stop one GCP per (node, user),
and tests cannot reach Globus. This module reproduces what ``docs/GCP.md`` records (with sources)
about the real Linux launcher -- its command line, exact messages and exit codes, the one
control socket per Unix user (``/tmp/globusconnect_<uid>.sock``), the foreground process
with a child, the status broadcast cadence, the config dir checks -- so that the hooks are
tested against the behaviour they will meet on a cluster, not against what they expect.

It is stdlib-only and Python 3.9 compatible because it runs as ordinary Unix users under
Debian's ``/usr/bin/python3``, started by clients that give it a clean environment.

Emulator-only additions (not in real GCP, named so that nobody mistakes them for GCP):

* ``-emulator-info``: print a JSON description of the running instance (for tests);
* ``-emulator-transfer SECONDS``: make ``Transfer Status`` ``active`` for SECONDS;
* environment knobs ``GCP_EMULATOR_*`` (see :class:`Settings`), including failure modes.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import fcntl
import json
import os
import re
import selectors
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

GCP_VERSION = "3.2.6"

# Messages of the real launcher, reproduced byte for byte (docs/GCP.md#messages-and-exit-codes).
MSG_ROOT = "Running Globus Connect Personal as root is not supported"
MSG_ANOTHER = "Another Globus Connect Personal is currently running"
MSG_NOT_RUNNING = "No Globus Connect Personal connected to Globus Online Service"
MSG_RUNNING = "Globus Connect Personal is currently running and connected to Globus Online"
MSG_STOP_SENT = "Sending stop signal... Done"
STATUS_LINE = "Globus Online:   {state}"  # three spaces, as the real one prints
TRANSFER_LINE = "Transfer Status: {transfer}"

STATES = ("connected", "connecting", "paused", "disconnected")
KEY_FILES = ("ftp-key2.pem", "client-key.pem", "relay-anonymous-key.pem")
DEFAULT_CONFIG_PATHS = "~/,0,1"
DEFAULT_SOCKET_DIR = "/tmp"

RELAY_ROLE = "relaytool"
GRIDFTP_ROLE = "globus-gridftp-server"
CHILD_FLAG = "--emulator-child"

USAGE = """\
usage: globusconnectpersonal [options]
  -setup [KEY] [--setup-key KEY]  register this install with an endpoint (setup key)
  -start                          run Globus Connect Personal in the foreground
  -debug                          like -start, with log lines on stdout
  -trace                          like -debug, with protocol traces
  -stop                           ask the running Globus Connect Personal to stop
  -status                         print the connection and transfer status
  -pause / -unpause               pause or resume the running Globus Connect Personal
  -version                        print the version
  -dir DIR                        configuration directory (default ~/.globusonline)
  -restrict-paths RULES           exported paths, e.g. rw~/,r/data,n~/private
  -shared-paths RULES             shareable paths, same syntax
emulator only:
  -emulator-info                  print the running instance as JSON
  -emulator-transfer SECONDS      make Transfer Status active for SECONDS
"""


class UsageError(Exception):
    """A bad command line or a bad ``GCP_EMULATOR_*`` value: report it and exit non-zero."""


class ConfigError(Exception):
    """The config dir is unusable; GCP refuses to start with a message and exit 1."""


class AnotherInstanceRunning(Exception):
    """A live instance of this Unix user already answers on the control socket."""


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Mode:
    """A failure mode, chosen by ``GCP_EMULATOR_MODE`` so tests can exercise error paths.

    ``normal``, ``exit-at-once``, ``never-connect``, ``crash-after=N`` (SIGKILLs itself
    after N seconds, leaving the socket behind), ``disconnect-after=N`` (state becomes
    ``disconnected`` after N seconds, as when the relay connection drops), and two
    faults a supervisor must survive: ``ignore-stop`` (``-stop`` is acknowledged and
    SIGTERM ignored: only SIGKILL ends it) and ``leave-children`` (its helper children
    outlive it, as a hung GridFTP child of a killed GCP would).
    """

    name: str = "normal"
    seconds: float = 0.0

    def __str__(self) -> str:
        return f"{self.name}={self.seconds:g}" if self.name.endswith("-after") else self.name


def parse_mode(text: str) -> Mode:
    """Parse ``GCP_EMULATOR_MODE``; unknown values fail loudly so a typo is not ``normal``."""
    text = text.strip() or "normal"
    if text in ("normal", "exit-at-once", "never-connect", "ignore-stop", "leave-children"):
        return Mode(text)
    name, sep, value = text.partition("=")
    if sep and name in ("crash-after", "disconnect-after"):
        return Mode(name, _non_negative_float(value, "GCP_EMULATOR_MODE"))
    raise UsageError(f"GCP_EMULATOR_MODE: unknown mode {text!r}")


def _non_negative_float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{what}: not a number: {text!r}") from None
    if not value >= 0:  # also rejects NaN
        raise UsageError(f"{what}: must be >= 0: {text!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Emulator knobs, read from the environment (clients start GCP via wrapper scripts).

    ``GCP_EMULATOR_CONNECT_DELAY`` (2.0 s in ``connecting`` before ``connected``),
    ``GCP_EMULATOR_STATUS_INTERVAL`` (5.0 s between status broadcasts, like real GCP),
    ``GCP_EMULATOR_STOP_DELAY`` (1.0 s between ``-stop`` and the instance's exit),
    ``GCP_EMULATOR_MODE`` (see :class:`Mode`),
    ``GCP_EMULATOR_SETUP_ENDPOINT_ID`` (endpoint id that ``-setup`` "redeems" a key for),
    ``GCP_EMULATOR_SOCKET_DIR`` (where ``globusconnect_<uid>.sock`` lives; default /tmp),
    ``GCP_EMULATOR_CALL_LOG`` (if set, every invocation appends one JSON line there),
    ``GCP_EMULATOR_GLOBUS_API`` (URL of tests/emulators/globus_api: -setup redeems keys
    there, and a running instance connects out to it and serves transfers).
    """

    connect_delay: float = 2.0
    status_interval: float = 5.0
    stop_delay: float = 1.0
    mode: Mode = field(default_factory=Mode)
    socket_dir: str = DEFAULT_SOCKET_DIR
    setup_endpoint_id: str | None = None
    globus_api: str | None = None
    call_log: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        def number(name: str, default: float) -> float:
            raw = env.get(name, "").strip()
            return _non_negative_float(raw, name) if raw else default

        interval = number("GCP_EMULATOR_STATUS_INTERVAL", 5.0)
        if interval <= 0:
            raise UsageError("GCP_EMULATOR_STATUS_INTERVAL: must be > 0")
        return cls(
            connect_delay=number("GCP_EMULATOR_CONNECT_DELAY", 2.0),
            status_interval=interval,
            stop_delay=number("GCP_EMULATOR_STOP_DELAY", 1.0),
            mode=parse_mode(env.get("GCP_EMULATOR_MODE", "normal")),
            socket_dir=env.get("GCP_EMULATOR_SOCKET_DIR") or DEFAULT_SOCKET_DIR,
            setup_endpoint_id=env.get("GCP_EMULATOR_SETUP_ENDPOINT_ID") or None,
            globus_api=env.get("GCP_EMULATOR_GLOBUS_API") or None,
            call_log=env.get("GCP_EMULATOR_CALL_LOG") or None,
        )

    def socket_path(self, uid: int) -> str:
        """One socket per Unix user per host, whatever ``-dir`` says (as in real GCP)."""
        return os.path.join(self.socket_dir, f"globusconnect_{uid}.sock")


# --------------------------------------------------------------------------- command line


@dataclass
class Options:
    """The parsed command line; ``command`` is the one action asked for."""

    command: str | None = None
    config_dir: str | None = None
    setup_key: str | None = None
    restrict_paths: str | None = None
    shared_paths: str | None = None
    debug: bool = False
    trace: bool = False
    transfer_seconds: float = 0.0


_SIMPLE_COMMANDS = {
    "-start": "start",
    "-stop": "stop",
    "-status": "status",
    "-pause": "pause",
    "-unpause": "unpause",
    "-version": "version",
    "-help": "help",
    "--help": "help",
    "-h": "help",
    "-emulator-info": "emulator-info",
}
_VALUE_OPTIONS = {
    "-dir": "config_dir",
    "--dir": "config_dir",
    "-setup-key": "setup_key",
    "--setup-key": "setup_key",
    "-restrict-paths": "restrict_paths",
    "-shared-paths": "shared_paths",
}


def parse_args(args: Sequence[str]) -> Options:
    """Parse GCP's single-dash long options (argparse would mangle ``-setup KEY``)."""
    opts = Options()

    def set_command(name: str) -> None:
        if opts.command not in (None, name):
            raise UsageError(f"conflicting commands: -{opts.command} and -{name}")
        opts.command = name

    i = 0
    while i < len(args):
        arg = args[i]
        if arg in _SIMPLE_COMMANDS:
            set_command(_SIMPLE_COMMANDS[arg])
        elif arg == "-debug":
            set_command("start")
            opts.debug = True
        elif arg == "-trace":
            set_command("start")
            opts.debug = opts.trace = True
        elif arg == "-setup":
            set_command("setup")
            # Older form: ``-setup KEY``.
            if i + 1 < len(args) and not args[i + 1].startswith("-"):
                opts.setup_key = args[i + 1]
                i += 1
        elif arg == "-emulator-transfer":
            set_command("emulator-transfer")
            if i + 1 >= len(args):
                raise UsageError("-emulator-transfer needs SECONDS")
            opts.transfer_seconds = _non_negative_float(args[i + 1], "-emulator-transfer")
            i += 1
        elif arg in _VALUE_OPTIONS:
            if i + 1 >= len(args):
                raise UsageError(f"{arg} needs a value")
            setattr(opts, _VALUE_OPTIONS[arg], args[i + 1])
            i += 1
        else:
            raise UsageError(f"unknown option {arg!r}")
        i += 1
    if opts.setup_key is not None and opts.command not in (None, "setup"):
        raise UsageError("--setup-key is only valid with -setup")
    if opts.setup_key is not None:
        opts.command = "setup"
    return opts


def resolve_config_dir(config_dir: str | None) -> Path:
    """``-dir DIR`` (default ``~/.globusonline``); ``~`` works without HOME via pwd."""
    return Path(os.path.abspath(os.path.expanduser(config_dir or "~/.globusonline")))


# --------------------------------------------------------------------------- config dir


@dataclass(frozen=True)
class ExportedPath:
    """One exported path: ``access`` is ``rw``, ``r`` or ``n`` (denied)."""

    path: str
    access: str
    sharing: bool

    def as_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "expanded": os.path.expanduser(self.path),
            "access": self.access,
            "rw": int(self.access == "rw"),
            "sharing": int(self.sharing),
        }


_ESCAPE = re.compile(r"%(2[Cc]|25)")


def unescape_path(text: str) -> str:
    """Undo config-paths escaping (``%2C`` -> ``,``, ``%25`` -> ``%``) in one pass."""
    return _ESCAPE.sub(lambda m: "%" if m.group(1) == "25" else ",", text)


def parse_config_paths(text: str, source: str = "config-paths") -> list[ExportedPath]:
    """Parse ``lta/config-paths`` CSV lines ``PATH,SHARING,RW``.

    Stricter than real GCP may be: a malformed line stops the start with a message, so
    tests catch a hook that writes the file wrongly instead of exporting something odd.
    """
    result: list[ExportedPath] = []
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        fields = [f.strip() for f in row]
        if len(fields) != 3 or not fields[0] or not {fields[1], fields[2]} <= {"0", "1"}:
            raise ConfigError(
                f"{source}:{lineno}: invalid line {','.join(row)!r}: expected PATH,SHARING,RW"
            )
        result.append(
            ExportedPath(
                path=unescape_path(fields[0]),
                access="rw" if fields[2] == "1" else "r",
                sharing=fields[1] == "1",
            )
        )
    return result


def parse_path_rules(text: str, option: str) -> list[tuple[str, str]]:
    """Parse ``-restrict-paths``/``-shared-paths`` rules such as ``rw~/,r/data,n~/x``."""
    rules: list[tuple[str, str]] = []
    for raw in text.split(","):
        rule = raw.strip()
        if not rule:
            continue
        for access in ("rw", "r", "n"):
            if rule.startswith(access) and len(rule) > len(access):
                rules.append((access, unescape_path(rule[len(access) :])))
                break
        else:
            raise ConfigError(f"{option}: invalid rule {rule!r} (expected rPATH, rwPATH or nPATH)")
    return rules


def load_paths(lta: Path, opts: Options) -> tuple[list[ExportedPath], str]:
    """Exported paths, read once at start as real GCP does; returns (paths, source)."""
    if opts.restrict_paths is not None:
        shared = _shared_set(opts.shared_paths)
        paths = [
            ExportedPath(p, access, access != "n" and p in shared)
            for access, p in parse_path_rules(opts.restrict_paths, "-restrict-paths")
        ]
        return paths, "command-line"
    config_paths = lta / "config-paths"
    try:
        text = config_paths.read_text(encoding="utf-8")
        source = "config-paths"
    except FileNotFoundError:
        # Real GCP writes the default (the whole home, read-write) when the file is missing.
        text = DEFAULT_CONFIG_PATHS + "\n"
        source = "default"
        with contextlib.suppress(OSError):
            config_paths.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {config_paths}: {exc.strerror}") from None
    paths = parse_config_paths(text, str(config_paths))
    if opts.shared_paths is not None:
        shared = _shared_set(opts.shared_paths)
        paths = [ExportedPath(p.path, p.access, p.path in shared) for p in paths]
        source += "+command-line"
    return paths, source


def _shared_set(text: str | None) -> set[str]:
    if text is None:
        return set()
    return {p for access, p in parse_path_rules(text, "-shared-paths") if access != "n"}


def check_config_dir(config_dir: Path, uid: int) -> str:
    """Check the config dir like GCP does before starting; return the endpoint id.

    Raises :class:`ConfigError` for a dir that was never set up, one owned by another
    user, or key files readable by group/others (GCP rejects those, like ssh does).
    """
    lta = config_dir / "lta"
    client_id = lta / "client-id.txt"
    if not client_id.is_file():
        raise ConfigError(
            f"Globus Connect Personal is not set up: {client_id} not found. "
            "Run 'globusconnectpersonal -setup' first."
        )
    for path in (config_dir, lta):
        if os.stat(path).st_uid != uid:
            raise ConfigError(
                f"Configuration directory {path} is not owned by the current user (uid {uid})"
            )
    for name in KEY_FILES:
        key = lta / name
        try:
            st = os.stat(key)
        except FileNotFoundError:
            continue
        if st.st_uid != uid:
            raise ConfigError(f"Key file {key} is not owned by the current user (uid {uid})")
        if st.st_mode & 0o077:
            raise ConfigError(
                f"Permissions {stat.S_IMODE(st.st_mode):04o} for {key} are too open: "
                "key files must not be accessible by group or others"
            )
    try:
        text = client_id.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {client_id}: {exc.strerror}") from None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise ConfigError(f"{client_id} does not hold an endpoint id: {text[:80]!r}") from None


# --------------------------------------------------------------------------- control socket


def request(path: str, command: str, timeout: float) -> list[str] | None:
    """Send one command line to the instance; return its reply lines.

    None means "no Globus Connect Personal": no socket, a stale one, or the instance
    went away before answering (all of which the real client reports the same way).
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(command.encode("utf-8") + b"\n")
            chunks: list[bytes] = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
    except OSError:  # ENOENT, ECONNREFUSED, EACCES, timeout, reset...
        return None
    lines = b"".join(chunks).decode("utf-8", "replace").splitlines()
    return lines or None


def instance_answers(path: str) -> bool:
    """True if a live process listens on ``path`` (connect succeeds; a stale file refuses)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(path)
            return True
    except OSError:  # ENOENT, ECONNREFUSED (stale file), ENOTSOCK-like refusals
        return False


# --------------------------------------------------------------------------- processes


_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


def _prctl(option: int, value: int | bytes) -> None:
    """Best-effort prctl(2); the pipe EOF remains the guarantee if this is unavailable."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(option, value, 0, 0, 0)


def child_main(args: Sequence[str]) -> int:
    """Body of the helper children standing for GCP's relaytool/GridFTP processes.

    They exist so clients learn that GCP is a process tree. A child never outlives its
    parent: it blocks on a pipe whose write end only the parent holds (EOF when the
    parent dies, even by SIGKILL), and also asks for PR_SET_PDEATHSIG.
    """
    role = args[0] if args else "child"
    parent = int(args[1]) if len(args) > 1 else 0
    stay = len(args) > 2 and args[2] == "stay"
    _prctl(_PR_SET_NAME, role.encode()[:15])
    if stay:  # GCP_EMULATOR_MODE=leave-children: outlive the parent until killed
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with contextlib.suppress(OSError):
            while os.read(0, 4096):
                pass
        while True:
            signal.pause()
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if parent and os.getppid() != parent:
        return 0  # the parent died before PDEATHSIG was armed
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal ^C is for the parent
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    return 0


class Child:
    """A helper child process and the pipe that keeps it alive."""

    def __init__(self, role: str, stay: bool = False) -> None:
        self.role = role
        executable = sys.executable or "/usr/bin/python3"
        argv = [executable, "-I", os.path.realpath(__file__), CHILD_FLAG, role, str(os.getpid())]
        self.proc = subprocess.Popen(
            [*argv, "stay"] if stay else argv,
            stdin=subprocess.PIPE,
            close_fds=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Close the pipe (the child exits on EOF), then reap it; kill if it lingers."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------- the instance


class Log:
    """``-debug``/``-trace`` log lines on stdout; silent otherwise, like ``-start``."""

    def __init__(self, debug: bool, trace: bool) -> None:
        self.debug_enabled = debug
        self.trace_enabled = trace

    def _write(self, level: str, message: str) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        with contextlib.suppress(OSError, ValueError):
            print(f"{stamp},{int(now * 1000) % 1000:03d} {level} {message}", flush=True)

    def debug(self, message: str) -> None:
        if self.debug_enabled:
            self._write("DEBUG", message)

    def trace(self, message: str) -> None:
        if self.trace_enabled:
            self._write("TRACE", message)


@dataclass
class _Client:
    sock: socket.socket
    buffer: bytearray = field(default_factory=bytearray)
    waiting_status: bool = False


class Instance:
    """The foreground GCP process: owns the control socket, the state and its children.

    Single-threaded: one selector loop serves the socket, signals (through the wakeup
    fd) and timers (connect, status broadcast, stop, crash, end of transfer), so it
    sleeps until something is due and never busy-waits.
    """

    def __init__(
        self,
        settings: Settings,
        config_dir: Path,
        endpoint_id: str,
        paths: list[ExportedPath],
        paths_source: str,
        log: Log,
    ) -> None:
        self.settings = settings
        self.config_dir = config_dir
        self.endpoint_id = endpoint_id
        self.paths = paths
        self.paths_source = paths_source
        self.log = log
        self.uid = os.getuid()
        self.socket_path = settings.socket_path(self.uid)
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.connect_at = self.started + settings.connect_delay
        self.next_broadcast = self.started + settings.status_interval
        mode = settings.mode
        self.crash_at = self.started + mode.seconds if mode.name == "crash-after" else None
        self.disconnect_at = (
            self.started + mode.seconds if mode.name == "disconnect-after" else None
        )
        self.paused = False
        self.stop_at: float | None = None
        self.transfer_until = 0.0
        self.relay: Child | None = None
        self.gridftp: Child | None = None
        self.listener: socket.socket | None = None
        self.socket_ino: int | None = None
        self.clients: dict[int, _Client] = {}
        self.selector = selectors.DefaultSelector()
        self.signal_received: int | None = None
        self.sigchld = False
        self.exit_code = 0
        self.last_state = ""
        self.link: Any = None

    # ----------------------------------------------------------------- state

    def state(self, now: float) -> str:
        if self.paused:
            return "paused"
        if self.disconnect_at is not None and now >= self.disconnect_at:
            return "disconnected"
        if self.settings.mode.name == "never-connect" or now < self.connect_at:
            return "connecting"
        if self.settings.globus_api and (self.link is None or not self.link.connected):
            return "connecting"
        return "connected"

    def _open_link(self) -> None:
        """Reach the Globus service (the API emulator) once the connect delay is over, as
        GCP reaches Globus only when it connects: until then Globus queues its tasks."""
        from globus_api.link import GcpLink  # sibling package, its light part

        assert self.settings.globus_api
        self.link = GcpLink(
            self.settings.globus_api,
            self.endpoint_id,
            [(p.path, p.access) for p in self.paths],
            paused=self.paused,
            log=self.log.debug,
            info={"host": socket.gethostname(), "version": GCP_VERSION},
        ).start()

    def transfer_status(self) -> str:
        """``active`` only while a GridFTP child exists, as in real GCP."""
        return "active" if self.gridftp is not None and self.gridftp.alive() else "idle"

    def info(self, now: float) -> dict[str, object]:
        children = [c for c in (self.relay, self.gridftp) if c is not None and c.alive()]
        return {
            "emulator": "gcp_emulator",
            "version": GCP_VERSION,
            "pid": os.getpid(),
            "uid": self.uid,
            "gid": os.getgid(),
            "config_dir": str(self.config_dir),
            "lta_dir": str(self.config_dir / "lta"),
            "endpoint_id": self.endpoint_id,
            "socket": self.socket_path,
            "paths": [p.as_json() for p in self.paths],
            "paths_source": self.paths_source,
            "state": self.state(now),
            "transfer_status": self.transfer_status(),
            "children": [{"pid": c.pid, "role": c.role} for c in children],
            "mode": str(self.settings.mode),
            "stopping": self.stop_at is not None,
            "started_at": self.started_wall,
            "debug": self.log.debug_enabled,
            "python": sys.executable,
        }

    # ----------------------------------------------------------------- socket

    def bind(self) -> None:
        """Claim the per-user control socket, atomically.

        The socket is bound under a temporary name and hard-linked to its real name, so
        two simultaneous starts cannot both win. A file that exists but where nobody
        listens (left by a SIGKILL) is unlinked first, as real GCP does.
        """
        final = self.socket_path
        tmp = f"{final}.{os.getpid()}.new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            listener.bind(tmp)
        finally:
            os.umask(old_umask)
        try:
            os.chmod(tmp, 0o600)  # only the owner (and root) may talk to it
            listener.listen(64)
            self.socket_ino = os.stat(tmp).st_ino
            for _ in range(10):
                try:
                    os.link(tmp, final)
                    break
                except FileExistsError:
                    if instance_answers(final):
                        raise AnotherInstanceRunning from None
                    self.log.debug(f"removing stale control socket {final}")
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(final)
            else:
                raise AnotherInstanceRunning
        except BaseException:
            listener.close()
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        listener.setblocking(False)
        self.listener = listener

    def _unlink_socket(self) -> None:
        """Remove the socket only if it is still ours (never another instance's)."""
        with contextlib.suppress(OSError):
            if os.stat(self.socket_path).st_ino == self.socket_ino:
                os.unlink(self.socket_path)

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.log.debug(f"accept failed: {exc}")
                return
            conn.setblocking(False)
            self.clients[conn.fileno()] = _Client(conn)
            self.selector.register(conn, selectors.EVENT_READ, "client")

    def _close_client(self, client: _Client) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(client.sock)
        self.clients.pop(client.sock.fileno(), None)
        client.sock.close()

    def _reply(self, client: _Client, lines: Sequence[str]) -> None:
        payload = "".join(f"{line}\n" for line in lines).encode("utf-8")
        self.log.trace(f"reply: {payload!r}")
        try:
            client.sock.settimeout(2.0)
            client.sock.sendall(payload)
        except OSError:
            pass
        self._close_client(client)

    def _read_client(self, client: _Client, now: float) -> None:
        try:
            data = client.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_client(client)  # includes -status callers that gave up
            return
        if client.waiting_status:
            return
        client.buffer += data
        if b"\n" not in client.buffer:
            if len(client.buffer) > 4096:
                self._close_client(client)
            return
        line = bytes(client.buffer.split(b"\n", 1)[0]).decode("utf-8", "replace").strip()
        self.log.trace(f"request: {line!r}")
        self._handle(client, line, now)

    def _handle(self, client: _Client, line: str, now: float) -> None:
        command, _, arg = line.partition(" ")
        command = command.upper()
        if command == "PING":
            self._reply(client, [f"PONG {os.getpid()}"])
        elif command == "STATUS":
            client.waiting_status = True  # answered at the next broadcast
        elif command == "STOP":
            if self.stop_at is None and self.settings.mode.name != "ignore-stop":
                self.stop_at = now + self.settings.stop_delay
                self.log.debug("stop requested")
            self._reply(client, ["OK"])
        elif command == "PAUSE":
            self.paused = True
            if self.link is not None:
                self.link.set_paused(True)
            self._reply(client, ["OK"])
        elif command == "UNPAUSE":
            if self.paused:
                self.paused = False
                self.connect_at = now + self.settings.connect_delay  # reconnects
                if self.link is not None:
                    self.link.set_paused(False)
            self._reply(client, ["OK"])
        elif command == "INFO":
            self._reply(client, [json.dumps(self.info(now), sort_keys=True)])
        elif command == "TRANSFER":
            try:
                seconds = _non_negative_float(arg.strip(), "TRANSFER")
            except UsageError as exc:
                self._reply(client, [f"ERR {exc}"])
                return
            self._start_transfer(now, seconds)
            self._reply(client, ["OK"])
        else:
            self._reply(client, [f"ERR unknown command {command!r}"])

    def _broadcast(self, now: float) -> None:
        message = f"STATUS {self.state(now)} {self.transfer_status()}"
        waiting = [c for c in self.clients.values() if c.waiting_status]
        if waiting:
            self.log.trace(f"broadcast: {message}")
        for client in waiting:
            self._reply(client, [message])

    # ----------------------------------------------------------------- children

    def _start_transfer(self, now: float, seconds: float) -> None:
        self.transfer_until = max(self.transfer_until, now + seconds)
        if seconds > 0 and (self.gridftp is None or not self.gridftp.alive()):
            self.gridftp = Child(GRIDFTP_ROLE)
            self.log.debug(f"transfer started, {GRIDFTP_ROLE} pid {self.gridftp.pid}")

    def _reap(self) -> None:
        self.sigchld = False
        if self.gridftp is not None and not self.gridftp.alive():
            self.log.debug(f"{GRIDFTP_ROLE} exited")
            self.gridftp = None
        if self.relay is not None and not self.relay.alive() and self.stop_at is None:
            # Real GCP stays silent unless its child dies.
            code = self.relay.proc.returncode
            with contextlib.suppress(OSError, ValueError):
                print(
                    f"Globus Connect Personal: {RELAY_ROLE} (pid {self.relay.pid}) exited "
                    f"unexpectedly with status {code}; exiting",
                    file=sys.stderr,
                    flush=True,
                )
            self.exit_code = 1
            self.stop_at = time.monotonic()

    # ----------------------------------------------------------------- main loop

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGCHLD:
            self.sigchld = True
        else:
            self.signal_received = signum

    def _next_deadline(self, now: float) -> float:
        deadlines = [self.next_broadcast, now + (0.5 if self.link is not None else 60.0)]
        if now < self.connect_at:
            deadlines.append(self.connect_at)
        for moment in (self.stop_at, self.crash_at, self.disconnect_at):
            if moment is not None:
                deadlines.append(moment)
        if self.gridftp is not None:
            deadlines.append(self.transfer_until)
        return min(deadlines)

    def _timers(self, now: float) -> bool:
        """Run what is due; return False when the instance must exit."""
        connectable = self.settings.mode.name != "never-connect" and now >= self.connect_at
        if self.settings.globus_api and self.link is None and connectable:
            self._open_link()
        state = self.state(now)
        if state != self.last_state:
            self.log.debug(f"state: {state}")
            self.last_state = state
        if self.crash_at is not None and now >= self.crash_at:
            print(
                "Globus Connect Personal: emulated crash (GCP_EMULATOR_MODE=crash-after)",
                file=sys.stderr,
                flush=True,
            )
            os.kill(os.getpid(), signal.SIGKILL)
        if self.link is not None:
            if self.disconnect_at is not None and now >= self.disconnect_at:
                self.link.stop(notify=False)  # the relay connection dropped
            elif self.link.busy or now - self.link.last_activity < 1.0:
                self._start_transfer(now, 2.0)  # file operations run in a GridFTP child
        if self.gridftp is not None and now >= self.transfer_until:
            self.gridftp.stop()
            self.gridftp = None
            self.log.debug("transfer finished")
        if now >= self.next_broadcast:
            self._broadcast(now)
            while self.next_broadcast <= now:
                self.next_broadcast += self.settings.status_interval
        return not (self.stop_at is not None and now >= self.stop_at)

    def run(self) -> int:
        """Serve until stopped (``-stop``, SIGTERM/SIGINT) or the relay child dies."""
        assert self.listener is not None
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old_handlers: dict[int, Any] = {}
        try:
            signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                old_handlers[signum] = signal.signal(signum, self._on_signal)
            self.selector.register(self.listener, selectors.EVENT_READ, "listener")
            self.selector.register(wake_r, selectors.EVENT_READ, "wakeup")
            self.relay = Child(RELAY_ROLE, stay=self.settings.mode.name == "leave-children")
            if self.settings.mode.name == "ignore-stop":
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.log.debug(
                f"Globus Connect Personal {GCP_VERSION} (emulator) pid {os.getpid()} "
                f"endpoint {self.endpoint_id} config {self.config_dir}"
            )
            while True:
                now = time.monotonic()
                if not self._timers(now):
                    break
                timeout = max(0.0, self._next_deadline(now) - now)
                for key, _ in self.selector.select(timeout):
                    if key.data == "listener":
                        self._accept()
                    elif key.data == "wakeup":
                        with contextlib.suppress(OSError):
                            while wake_r.recv(512):
                                pass
                    else:
                        client = self.clients.get(key.fd)
                        if client is not None:
                            self._read_client(client, time.monotonic())
                if self.signal_received is not None:
                    self.log.debug(f"signal {self.signal_received} received, exiting")
                    break
                if self.sigchld:
                    self._reap()
            return self.exit_code
        finally:
            self._shutdown()
            signal.set_wakeup_fd(-1)
            for number, handler in old_handlers.items():
                if handler is not None:
                    signal.signal(number, handler)
            wake_r.close()
            wake_w.close()

    def _shutdown(self) -> None:
        self._unlink_socket()
        if self.listener is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(self.listener)
            self.listener.close()
        for client in list(self.clients.values()):
            self._close_client(client)
        if self.link is not None:
            self.link.stop(notify=True)
        for child in (self.gridftp, self.relay):
            if child is not None:
                child.stop()
        self.gridftp = self.relay = None
        self.selector.close()
        self.log.debug("exited")


# --------------------------------------------------------------------------- setup


class SetupKeyRedeemer(Protocol):
    """Turns a setup key into an endpoint id; the seam for a later HTTP redemption."""

    def redeem(self, setup_key: str) -> str | None:
        """Return the endpoint id the key was issued for, or None if unknown/used."""
        ...


@dataclass(frozen=True)
class EnvSetupKeyRedeemer:
    """Stand-in until a Transfer API emulator exists: every key maps to one endpoint id."""

    endpoint_id: str | None

    def redeem(self, setup_key: str) -> str | None:
        return self.endpoint_id


@dataclass(frozen=True)
class HttpSetupKeyRedeemer:
    url: str

    def redeem(self, setup_key: str) -> str | None:
        from globus_api.client import redeem_setup_key  # sibling package, its light part

        return redeem_setup_key(self.url, setup_key)


def make_redeemer(settings: Settings) -> SetupKeyRedeemer:
    """Choose how ``-setup`` redeems keys (a future HTTP redeemer plugs in here)."""
    if settings.globus_api:
        return HttpSetupKeyRedeemer(settings.globus_api)
    return EnvSetupKeyRedeemer(settings.setup_endpoint_id)


def stdin_usable() -> bool:
    """Real setup needs an open, readable stdin; closed/write-only stdin crashes it."""
    try:
        flags = fcntl.fcntl(0, fcntl.F_GETFL)
    except OSError:
        return False
    return (flags & os.O_ACCMODE) != os.O_WRONLY


def _setup_crash() -> int:
    """The unhelpful crash real GCP shows without stdin (docs/GCP.md#command-line), emulated."""
    sys.stderr.write(
        "Traceback (most recent call last):\n"
        '  File "gc-ctrl.py", line 1, in <module>\n'
        '  File "gc-ctrl.py", line 1, in setup\n'
        "OSError: [Errno 9] Bad file descriptor\n"
        "(gcp_emulator: -setup needs an open stdin)\n"
    )
    sys.stderr.flush()
    return 1


def cmd_setup(opts: Options, settings: Settings, redeemer: SetupKeyRedeemer | None = None) -> int:
    """``-setup --setup-key KEY -dir DIR`` / ``-setup KEY``: write DIR/lta for the endpoint."""
    if not stdin_usable():
        return _setup_crash()
    config_dir = resolve_config_dir(opts.config_dir)
    lta = config_dir / "lta"
    if (lta / "client-id.txt").exists():
        print(
            f"Globus Connect Personal is already set up in {lta}; "
            "remove it or use another -dir to set up again",
            file=sys.stderr,
        )
        return 1
    if opts.setup_key is None:
        print(
            "gcp_emulator: interactive setup (login) is not emulated; use --setup-key KEY",
            file=sys.stderr,
        )
        return 1
    try:
        endpoint_id = (redeemer or make_redeemer(settings)).redeem(opts.setup_key)
    except OSError as exc:
        print(f"Could not reach Globus: {exc}", file=sys.stderr)
        return 1
    if endpoint_id is None:
        print(f"Setup Code {opts.setup_key} not found", file=sys.stderr)
        return 1
    sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
    from gcp_config_dir import create_config_dir  # sibling module, stdlib-only

    create_config_dir(config_dir, os.getuid(), os.getgid(), endpoint_id)
    print(f"Configuration directory: {lta}")
    print("Done!")
    return 0


# --------------------------------------------------------------------------- commands


def cmd_start(opts: Options, settings: Settings) -> int:
    """``-start``/``-debug``/``-trace``: check the config, claim the socket, serve."""
    if settings.mode.name == "exit-at-once":
        print(
            "Globus Connect Personal: emulated start failure (GCP_EMULATOR_MODE=exit-at-once)",
            file=sys.stderr,
            flush=True,
        )
        return 1
    config_dir = resolve_config_dir(opts.config_dir)
    log = Log(opts.debug, opts.trace)
    try:
        endpoint_id = check_config_dir(config_dir, os.getuid())
        paths, source = load_paths(config_dir / "lta", opts)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr, flush=True)
        return 1
    instance = Instance(settings, config_dir, endpoint_id, paths, source, log)
    try:
        instance.bind()
    except AnotherInstanceRunning:
        print(MSG_ANOTHER, file=sys.stderr, flush=True)
        return 1
    except OSError as exc:
        print(f"cannot create control socket {instance.socket_path}: {exc}", file=sys.stderr)
        return 1
    return instance.run()


def _command(settings: Settings, line: str, timeout: float = 10.0) -> list[str] | None:
    return request(settings.socket_path(os.getuid()), line, timeout)


def cmd_status(settings: Settings) -> int:
    """Wait for the next status broadcast (up to one interval), print two lines."""
    reply = _command(settings, "STATUS", settings.status_interval + 10.0)
    parts = reply[0].split() if reply else []
    if len(parts) != 3 or parts[0] != "STATUS":
        print(MSG_NOT_RUNNING)
        return 1
    print(STATUS_LINE.format(state=parts[1]))
    print(TRANSFER_LINE.format(transfer=parts[2]))
    return 0


def cmd_signal(settings: Settings, command: str, verb: str) -> int:
    """``-stop``/``-pause``/``-unpause``: returns at once, without waiting for the effect."""
    reply = _command(settings, command)
    if not reply or reply[0] != "OK":
        print(MSG_NOT_RUNNING)
        return 1
    print(MSG_RUNNING)
    print(f"Sending {verb} signal... Done")
    return 0


def cmd_emulator(settings: Settings, line: str) -> int:
    reply = _command(settings, line)
    if not reply:
        print(MSG_NOT_RUNNING)
        return 1
    if reply[0].startswith("ERR"):
        print(reply[0], file=sys.stderr)
        return 1
    print(reply[0])
    return 0


def _record_call(args: Sequence[str]) -> None:
    """Append this invocation to ``GCP_EMULATOR_CALL_LOG`` so tests see how clients call."""
    target = os.environ.get("GCP_EMULATOR_CALL_LOG")
    if not target:
        return
    entry = {
        "time": time.time(),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "uid": os.getuid(),
        "argv": list(args),
        "cwd": os.getcwd() if os.path.exists(".") else None,
        "env_keys": sorted(os.environ),
    }
    with contextlib.suppress(OSError):
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, (json.dumps(entry) + "\n").encode("utf-8"))
        finally:
            os.close(fd)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``globusconnectpersonal`` launcher; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [CHILD_FLAG]:
        return child_main(args[1:])
    _record_call(args)
    try:
        settings = Settings.from_env(os.environ)
        opts = parse_args(args)
    except UsageError as exc:
        print(f"globusconnectpersonal: {exc}", file=sys.stderr)
        print(USAGE, file=sys.stderr, end="")
        return 1
    if opts.command is None or opts.command == "help":
        print(USAGE, end="", file=sys.stdout if opts.command else sys.stderr)
        return 0 if opts.command else 1
    if opts.command == "version":
        print(f"Globus Connect Personal {GCP_VERSION} (emulator)")
        return 0
    if os.geteuid() == 0:
        print(MSG_ROOT, file=sys.stderr)
        return 1
    if opts.command == "start":
        return cmd_start(opts, settings)
    if opts.command == "setup":
        return cmd_setup(opts, settings)
    if opts.command == "status":
        return cmd_status(settings)
    if opts.command in ("stop", "pause", "unpause"):
        return cmd_signal(settings, opts.command.upper(), opts.command)
    if opts.command == "emulator-info":
        return cmd_emulator(settings, "INFO")
    if opts.command == "emulator-transfer":
        return cmd_emulator(settings, f"TRANSFER {opts.transfer_seconds}")
    raise AssertionError(opts.command)


if __name__ == "__main__":
    sys.exit(main())
