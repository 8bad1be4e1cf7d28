"""Tests of the Globus Connect Personal emulator (tests/emulators), against docs/GCP.md.

Why: the hooks' tests trust this emulator to behave like real GCP, so its own behaviour
(messages, exit codes, the per-user socket, timing, process tree, failure modes) is
pinned here. Tests run as root and run the emulator as throwaway users (``gtemu``,
``gtemu2``, created if missing) through wrapper scripts and a clean environment, the way
the Slurm hooks will run it. Every process started here is killed in a finalizer.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import gcp_config_dir
import gcp_emulator as emu
import pytest

EMULATOR_DIR = Path(__file__).resolve().parent


LAUNCHER = EMULATOR_DIR / "globusconnectpersonal"
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"
# Unusual fixed uids so that these users do not collide with other tests' users.
USERS = {"gtemu": 47301, "gtemu2": 47302}
FAST = {
    "GCP_EMULATOR_CONNECT_DELAY": "0.3",
    "GCP_EMULATOR_STATUS_INTERVAL": "0.2",
    "GCP_EMULATOR_STOP_DELAY": "0.3",
}

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users"),
]


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: Path

    @property
    def socket(self) -> Path:
        return Path(f"/tmp/globusconnect_{self.uid}.sock")


def _ensure_user(name: str, uid: int) -> User:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "-m", "-u", str(uid), "-U", "-s", "/bin/sh", name],
            check=True,
            capture_output=True,
        )
        pw = pwd.getpwnam(name)
    return User(name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))


def _alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie waiting for init to reap it counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _wait_for(predicate: Any, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class Started:
    """A foreground instance started by a test, with its output files."""

    proc: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path
    files: list[IO[bytes]] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def wait(self, timeout: float = 5.0) -> int:
        return self.proc.wait(timeout=timeout)


class Harness:
    """Runs the emulator as a test user, with knobs set by wrapper scripts."""

    def __init__(self, base: Path, launcher: Path) -> None:
        self.base = base
        self.launcher = launcher
        self.started: list[Started] = []
        self._n = 0

    def _name(self, prefix: str) -> Path:
        self._n += 1
        return self.base / f"{prefix}{self._n}"

    def wrapper(self, **knobs: str) -> Path:
        """A shell script that sets GCP_EMULATOR_* and execs the launcher (clients give
        GCP a clean environment, so knobs cannot come from the caller's environment)."""
        env = {**FAST, **knobs}
        path = self._name("gcp-wrapper-")
        lines = ["#!/bin/sh"]
        lines += [f"export {k}='{v}'" for k, v in env.items()]
        lines.append(f'exec "{self.launcher}" "$@"')
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o755)
        return path

    def config_dir(self, user: User, endpoint_id: str | None = None) -> tuple[Path, str]:
        path = self._name("cfg-")
        return path, gcp_config_dir.create_config_dir(path, user.uid, user.gid, endpoint_id)

    def _popen_kwargs(self, user: User | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"env": {"PATH": CLEAN_PATH}, "cwd": str(self.base)}
        if user is not None:
            kwargs.update(user=user.uid, group=user.gid, extra_groups=[])
        return kwargs

    def run(
        self,
        user: User | None,
        args: Sequence[str],
        wrapper: Path | None = None,
        timeout: float = 20.0,
        close_stdin: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        program = str(wrapper or self.wrapper())
        cmd = [program, *args]
        if close_stdin:
            cmd = ["/bin/sh", "-c", 'exec "$0" "$@" <&-', program, *args]
        return subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL if not close_stdin else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            **self._popen_kwargs(user),
        )

    def start(self, user: User, args: Sequence[str], wrapper: Path | None = None) -> Started:
        out_path, err_path = self._name("out-"), self._name("err-")
        out, err = open(out_path, "wb"), open(err_path, "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [str(wrapper or self.wrapper()), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            **self._popen_kwargs(user),
        )
        started = Started(proc, out_path, err_path, [out, err])
        self.started.append(started)
        return started

    def start_ready(self, user: User, args: Sequence[str], wrapper: Path | None = None) -> Started:
        started = self.start(user, args, wrapper)
        # Wait until something answers: a stale socket file may already be there.
        _wait_for(
            lambda: emu.instance_answers(str(user.socket)) or started.proc.poll() is not None,
            what="control socket",
        )
        assert started.proc.poll() is None, started.stderr
        return started

    def info(self, user: User, wrapper: Path | None = None) -> dict[str, Any]:
        result = self.run(user, ["-emulator-info"], wrapper)
        assert result.returncode == 0, result
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def status(self, user: User, wrapper: Path | None = None) -> tuple[str, str]:
        result = self.run(user, ["-status"], wrapper)
        assert result.returncode == 0, result
        lines = result.stdout.splitlines()
        assert len(lines) == 2, result.stdout
        assert lines[0].startswith("Globus Online:   "), lines
        assert lines[1].startswith("Transfer Status: "), lines
        return lines[0].split()[-1], lines[1].split()[-1]

    def stop(self, user: User, started: Started) -> None:
        result = self.run(user, ["-stop"])
        assert result.returncode == 0, result
        assert started.wait() == 0
        _wait_for(lambda: not user.socket.exists(), what="socket removal")

    def cleanup(self) -> None:
        for started in self.started:
            if started.proc.poll() is None:
                with_pgid = started.proc.pid
                try:
                    os.killpg(with_pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            started.proc.wait(timeout=10)
            for f in started.files:
                f.close()


def _remove_stale_socket(user: User) -> None:
    """A socket left by an aborted run would make -start refuse; a live one is an error."""
    if user.socket.exists():
        if emu.instance_answers(str(user.socket)):
            pytest.fail(f"a GCP instance of {user.name} is already running ({user.socket})")
        user.socket.unlink()


@pytest.fixture(scope="module")
def users() -> dict[str, User]:
    return {name: _ensure_user(name, uid) for name, uid in USERS.items()}


@pytest.fixture()
def user(users: dict[str, User]) -> User:
    return users["gtemu"]


@pytest.fixture()
def user2(users: dict[str, User]) -> User:
    return users["gtemu2"]


@pytest.fixture()
def h(users: dict[str, User]) -> Iterator[Harness]:
    base = Path(tempfile.mkdtemp(prefix="gcpemu-", dir="/tmp"))
    base.chmod(0o755)  # the test users must reach wrappers and config dirs in it
    for u in users.values():
        _remove_stale_socket(u)
    # the checkout may sit in a directory the test users cannot enter (CI clones into a
    # private temp dir): they run a world-readable copy, as the Slurm lab does
    launcher_dir = base / "emulators"
    shutil.copytree(EMULATOR_DIR, launcher_dir, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [launcher_dir, *launcher_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
    harness = Harness(base, launcher_dir / LAUNCHER.name)
    try:
        yield harness
    finally:
        harness.cleanup()
        for u in users.values():
            if u.socket.exists() and not emu.instance_answers(str(u.socket)):
                u.socket.unlink()
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- pure parsing


def test_parse_config_paths_escapes_and_errors() -> None:
    paths = emu.parse_config_paths("/tmp/a%2Cb,0,1\n\n/data/50%25%2C,1,0\n~/,0,1\n")
    assert [(p.path, p.access, p.sharing) for p in paths] == [
        ("/tmp/a,b", "rw", False),
        ("/data/50%,", "r", True),
        ("~/", "rw", False),
    ]
    assert emu.unescape_path("%252C") == "%2C"
    for bad in ("/tmp,0", "/tmp,2,1", ",0,1", "/tmp,0,1,1", "/tmp,,1"):
        with pytest.raises(emu.ConfigError):
            emu.parse_config_paths(bad + "\n")


def test_parse_args_forms() -> None:
    old = emu.parse_args(["-setup", "KEY1"])
    assert (old.command, old.setup_key) == ("setup", "KEY1")
    new = emu.parse_args(["-setup", "--setup-key", "KEY2", "-dir", "/x"])
    assert (new.command, new.setup_key, new.config_dir) == ("setup", "KEY2", "/x")
    debug = emu.parse_args(["-debug", "-dir", "/x"])
    assert (debug.command, debug.debug) == ("start", True)
    assert emu.parse_args(["-trace"]).trace
    assert emu.parse_args(["-emulator-transfer", "2.5"]).transfer_seconds == 2.5
    for bad in (["-start", "-stop"], ["-bogus"], ["-dir"], ["-emulator-transfer", "x"]):
        with pytest.raises(emu.UsageError):
            emu.parse_args(bad)
    assert emu.parse_mode("crash-after=1.5") == emu.Mode("crash-after", 1.5)
    with pytest.raises(emu.UsageError):
        emu.parse_mode("explode")


def test_create_config_dir_layout(h: Harness, user: User) -> None:
    path, endpoint_id = h.config_dir(user, "9f0c0c1e-1111-4222-8333-444455556666")
    assert endpoint_id == "9f0c0c1e-1111-4222-8333-444455556666"
    lta = path / "lta"
    assert (lta / "client-id.txt").read_text().strip() == endpoint_id
    names = {
        "client-id.txt", "gridmap", "config", "ftp-cert2.pem", "ftp-key2.pem",
        "client-key.pem", "relay-anonymous-key.pem", "relay-known-hosts.txt", "register.log",
    }  # fmt: skip
    assert {p.name for p in lta.iterdir()} == names
    for p in (path, lta, *lta.iterdir()):
        st = p.stat()
        assert (st.st_uid, st.st_gid) == (user.uid, user.gid), p
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert stat.S_IMODE(lta.stat().st_mode) == 0o700
    for key in gcp_config_dir.KEY_FILES:
        assert stat.S_IMODE((lta / key).stat().st_mode) == 0o600
    _, random_id = h.config_dir(user)
    assert random_id != endpoint_id and len(random_id) == 36


# --------------------------------------------------------------------------- the CLI


def test_version_and_root_refusal(h: Harness, user: User) -> None:
    result = h.run(user, ["-version"])
    assert result.returncode == 0
    assert result.stdout == f"Globus Connect Personal {emu.GCP_VERSION} (emulator)\n"
    cfg, _ = h.config_dir(user)
    for args in (["-start", "-dir", str(cfg)], ["-setup", "KEY"], ["-status"], ["-stop"]):
        result = h.run(None, args)  # as root
        assert result.returncode == 1, args
        assert result.stderr == emu.MSG_ROOT + "\n"


def test_nothing_running(h: Harness, user: User) -> None:
    for args in (["-status"], ["-stop"], ["-pause"], ["-unpause"], ["-emulator-info"]):
        result = h.run(user, args)
        assert result.returncode == 1, args
        assert result.stdout == emu.MSG_NOT_RUNNING + "\n"


def test_start_status_stop_lifecycle(h: Harness, user: User) -> None:
    cfg, endpoint_id = h.config_dir(user)
    wrapper = h.wrapper(GCP_EMULATOR_CONNECT_DELAY="1.0", GCP_EMULATOR_STOP_DELAY="1.0")
    started = h.start_ready(user, ["-start", "-dir", str(cfg)], wrapper)

    st = user.socket.lstat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == user.uid

    assert h.status(user, wrapper) == ("connecting", "idle")
    _wait_for(lambda: h.status(user, wrapper)[0] == "connected", what="connected")
    result = h.run(user, ["-status"], wrapper)
    assert result.stdout == "Globus Online:   connected\nTransfer Status: idle\n"

    info = h.info(user, wrapper)
    assert info["pid"] == started.proc.pid
    assert (info["uid"], info["endpoint_id"]) == (user.uid, endpoint_id)
    assert info["config_dir"] == str(cfg)
    assert info["python"] == "/usr/bin/python3"  # clean PATH -> Debian's python3
    assert [(p["path"], p["sharing"], p["rw"]) for p in info["paths"]] == [("~/", 0, 1)]
    assert info["paths_source"] == "default"
    assert (cfg / "lta" / "config-paths").read_text() == "~/,0,1\n"
    [relay] = info["children"]
    assert relay["role"] == "relaytool"
    assert _alive(relay["pid"])

    t0 = time.monotonic()
    result = h.run(user, ["-stop"], wrapper)
    elapsed = time.monotonic() - t0
    assert result.returncode == 0
    assert result.stdout == f"{emu.MSG_RUNNING}\n{emu.MSG_STOP_SENT}\n"
    assert elapsed < 0.9  # returns at once, before the instance exits
    assert started.proc.poll() is None and user.socket.exists()
    assert started.wait() == 0
    assert not user.socket.exists()
    _wait_for(lambda: not _alive(relay["pid"]), what="relay child exit")
    assert started.stdout == "" and started.stderr == ""  # -start prints nothing


def test_status_waits_for_next_broadcast(h: Harness, user: User) -> None:
    cfg, _ = h.config_dir(user)
    wrapper = h.wrapper(GCP_EMULATOR_STATUS_INTERVAL="1.0", GCP_EMULATOR_CONNECT_DELAY="0")
    started = h.start_ready(user, ["-start", "-dir", str(cfg)], wrapper)
    h.status(user, wrapper)  # returns just after a broadcast
    t0 = time.monotonic()
    h.status(user, wrapper)
    assert 0.6 < time.monotonic() - t0 < 1.8
    h.stop(user, started)


def test_one_instance_per_user_whatever_dir(h: Harness, user: User, user2: User) -> None:
    cfg1, ep1 = h.config_dir(user)
    cfg2, _ = h.config_dir(user)
    first = h.start_ready(user, ["-start", "-dir", str(cfg1)])
    second = h.run(user, ["-start", "-dir", str(cfg2)])
    assert second.returncode == 1
    assert second.stderr == emu.MSG_ANOTHER + "\n" and second.stdout == ""
    # -status/-stop reach the user's one instance, even with another -dir.
    assert h.run(user, ["-status", "-dir", str(cfg2)]).returncode == 0
    assert h.info(user)["endpoint_id"] == ep1
    # Another user gets an instance of its own on the same host.
    cfg3, ep3 = h.config_dir(user2)
    other = h.start_ready(user2, ["-start", "-dir", str(cfg3)])
    assert h.info(user2)["endpoint_id"] == ep3
    h.stop(user, first)
    assert other.proc.poll() is None
    h.stop(user2, other)


def test_concurrent_starts_one_wins(h: Harness, user: User) -> None:
    cfg, _ = h.config_dir(user)
    starts = [h.start(user, ["-start", "-dir", str(cfg)]) for _ in range(4)]
    _wait_for(lambda: sum(s.proc.poll() is not None for s in starts) == 3, what="3 losers")
    losers = [s for s in starts if s.proc.poll() is not None]
    assert all(s.proc.returncode == 1 and s.stderr == emu.MSG_ANOTHER + "\n" for s in losers)
    [winner] = [s for s in starts if s.proc.poll() is None]
    assert h.info(user)["pid"] == winner.proc.pid
    h.stop(user, winner)


def test_sigkill_leaves_socket_then_start_cleans_it(h: Harness, user: User) -> None:
    cfg, _ = h.config_dir(user)
    started = h.start_ready(user, ["-start", "-dir", str(cfg)])
    [relay] = h.info(user)["children"]
    started.proc.kill()
    assert started.wait() == -signal.SIGKILL
    assert user.socket.exists()  # left behind, as by real GCP
    _wait_for(lambda: not _alive(relay["pid"]), what="orphaned child exit")
    assert h.run(user, ["-status"]).stdout == emu.MSG_NOT_RUNNING + "\n"
    again = h.start_ready(user, ["-start", "-dir", str(cfg)])
    assert h.info(user)["pid"] == again.proc.pid
    h.stop(user, again)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_clean_exit(h: Harness, user: User, signum: int) -> None:
    cfg, _ = h.config_dir(user)
    started = h.start_ready(user, ["-start", "-dir", str(cfg)])
    [relay] = h.info(user)["children"]
    started.proc.send_signal(signum)
    assert started.wait() == 0
    assert not user.socket.exists()
    _wait_for(lambda: not _alive(relay["pid"]), what="child exit")
    assert started.stderr == ""


def test_child_death_is_reported(h: Harness, user: User) -> None:
    cfg, _ = h.config_dir(user)
    started = h.start_ready(user, ["-start", "-dir", str(cfg)])
    [relay] = h.info(user)["children"]
    os.kill(relay["pid"], signal.SIGTERM)
    assert started.wait() == 1
    assert "relaytool" in started.stderr
    assert not user.socket.exists()


def test_config_dir_checks(h: Harness, user: User) -> None:
    def refused(cfg: Path, needle: str) -> None:
        result = h.run(user, ["-start", "-dir", str(cfg)])
        assert result.returncode == 1
        assert needle in result.stderr, result.stderr
        assert not user.socket.exists()

    missing = h.base / "never-set-up"
    refused(missing, "client-id.txt")

    loose, _ = h.config_dir(user)
    (loose / "lta" / "relay-anonymous-key.pem").chmod(0o640)
    refused(loose, "relay-anonymous-key.pem")

    foreign, _ = h.config_dir(user)
    os.chown(foreign / "lta", 0, 0)
    os.chmod(foreign / "lta", 0o755)
    refused(foreign, "not owned")

    bad_paths, _ = h.config_dir(user)
    (bad_paths / "lta" / "config-paths").write_text("/tmp,yes,1\n")
    refused(bad_paths, "config-paths")


def test_config_paths_and_overrides(h: Harness, user: User) -> None:
    cfg, _ = h.config_dir(user)
    (cfg / "lta" / "config-paths").write_text("/tmp/a%2Cb,0,1\n/data/x%25y,1,0\n")
    started = h.start_ready(user, ["-start", "-dir", str(cfg)])
    info = h.info(user)
    assert [(p["path"], p["sharing"], p["rw"]) for p in info["paths"]] == [
        ("/tmp/a,b", 0, 1),
        ("/data/x%y", 1, 0),
    ]
    assert info["paths_source"] == "config-paths"
    h.stop(user, started)

    args = ["-restrict-paths", "rw/tmp,r/data,n/secret", "-shared-paths", "r/data"]
    started = h.start_ready(user, ["-start", "-dir", str(cfg), *args])
    info = h.info(user)
    assert [(p["path"], p["access"], p["sharing"]) for p in info["paths"]] == [
        ("/tmp", "rw", 0),
        ("/data", "r", 1),
        ("/secret", "n", 0),
    ]
    assert info["paths_source"] == "command-line"
    h.stop(user, started)


def test_default_dir_is_home_globusonline(h: Harness, user: User) -> None:
    cfg = user.home / ".globusonline"
    shutil.rmtree(cfg, ignore_errors=True)
    try:
        endpoint_id = gcp_config_dir.create_config_dir(cfg, user.uid, user.gid)
        started = h.start_ready(user, ["-start"])  # no HOME in the environment either
        info = h.info(user)
        assert (info["config_dir"], info["endpoint_id"]) == (str(cfg), endpoint_id)
        assert info["paths"][0]["expanded"] == f"{user.home}/"
        h.stop(user, started)
    finally:
        shutil.rmtree(cfg, ignore_errors=True)


def test_pause_unpause(h: Harness, user: User) -> None:
    cfg, _ = h.config_dir(user)
    started = h.start_ready(user, ["-start", "-dir", str(cfg)])
    result = h.run(user, ["-pause"])
    assert result.returncode == 0
    assert result.stdout == f"{emu.MSG_RUNNING}\nSending pause signal... Done\n"
    assert h.status(user) == ("paused", "idle")
    assert h.run(user, ["-unpause"]).returncode == 0
    assert h.status(user)[0] in ("connecting", "connected")
    _wait_for(lambda: h.status(user)[0] == "connected", what="reconnect")
    h.stop(user, started)


def test_transfer_status_active_and_extended(h: Harness, user: User) -> None:
    cfg, _ = h.config_dir(user)
    started = h.start_ready(user, ["-start", "-dir", str(cfg)])
    assert h.run(user, ["-emulator-transfer", "0.8"]).returncode == 0
    assert h.status(user)[1] == "active"
    roles = {c["role"]: c["pid"] for c in h.info(user)["children"]}
    assert set(roles) == {"relaytool", "globus-gridftp-server"}
    assert h.run(user, ["-emulator-transfer", "1.6"]).returncode == 0  # extends
    time.sleep(1.0)
    assert h.status(user)[1] == "active"
    _wait_for(lambda: h.status(user)[1] == "idle", timeout=5, what="idle")
    assert not _alive(roles["globus-gridftp-server"])
    h.stop(user, started)


def test_mode_exit_at_once(h: Harness, user: User) -> None:
    cfg, _ = h.config_dir(user)
    result = h.run(user, ["-start", "-dir", str(cfg)], h.wrapper(GCP_EMULATOR_MODE="exit-at-once"))
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert not user.socket.exists()


def test_mode_never_connect_and_disconnect(h: Harness, user: User) -> None:
    cfg, _ = h.config_dir(user)
    wrapper = h.wrapper(GCP_EMULATOR_MODE="never-connect", GCP_EMULATOR_CONNECT_DELAY="0")
    started = h.start_ready(user, ["-start", "-dir", str(cfg)], wrapper)
    time.sleep(0.3)
    assert h.status(user, wrapper) == ("connecting", "idle")
    h.stop(user, started)

    wrapper = h.wrapper(GCP_EMULATOR_MODE="disconnect-after=0.4", GCP_EMULATOR_CONNECT_DELAY="0")
    started = h.start_ready(user, ["-start", "-dir", str(cfg)], wrapper)
    _wait_for(lambda: h.status(user, wrapper)[0] == "disconnected", what="disconnected")
    h.stop(user, started)


def test_mode_crash_after(h: Harness, user: User) -> None:
    cfg, _ = h.config_dir(user)
    wrapper = h.wrapper(GCP_EMULATOR_MODE="crash-after=0.5")
    started = h.start_ready(user, ["-start", "-dir", str(cfg)], wrapper)
    [relay] = h.info(user, wrapper)["children"]
    assert started.wait() == -signal.SIGKILL
    assert user.socket.exists()
    _wait_for(lambda: not _alive(relay["pid"]), what="child exit")
    again = h.start_ready(user, ["-start", "-dir", str(cfg)])
    h.stop(user, again)


def test_debug_logs_on_stdout(h: Harness, user: User) -> None:
    cfg, _ = h.config_dir(user)
    started = h.start_ready(user, ["-debug", "-dir", str(cfg)])
    _wait_for(lambda: "state: connected" in started.stdout, what="debug log")
    h.stop(user, started)
    assert "stop requested" in started.stdout


def test_setup(h: Harness, user: User) -> None:
    cfg = h.base / "setup-dir"
    cfg.mkdir()
    os.chown(cfg, user.uid, user.gid)

    crashed = h.run(user, ["-setup", "--setup-key", "K1", "-dir", str(cfg)], close_stdin=True)
    assert crashed.returncode == 1 and "Traceback" in crashed.stderr
    assert not (cfg / "lta").exists()

    unknown = h.run(user, ["-setup", "--setup-key", "K1", "-dir", str(cfg)])
    assert unknown.returncode == 1
    assert "Setup Code K1 not found" in unknown.stderr

    endpoint_id = "0b2d4f6e-aaaa-4bbb-8ccc-123456789abc"
    wrapper = h.wrapper(GCP_EMULATOR_SETUP_ENDPOINT_ID=endpoint_id)
    ok = h.run(user, ["-setup", "--setup-key", "K2", "-dir", str(cfg)], wrapper)
    assert ok.returncode == 0, ok
    lta = cfg / "lta"
    assert (lta / "client-id.txt").read_text().strip() == endpoint_id
    assert stat.S_IMODE((lta / "relay-anonymous-key.pem").stat().st_mode) == 0o600
    assert (lta / "client-id.txt").stat().st_uid == user.uid

    again = h.run(user, ["-setup", "--setup-key", "K3", "-dir", str(cfg)], wrapper)
    assert again.returncode == 1 and "already set up" in again.stderr

    started = h.start_ready(user, ["-start", "-dir", str(cfg)])
    assert h.info(user)["endpoint_id"] == endpoint_id
    h.stop(user, started)

    old_form_dir = h.base / "setup-old"
    old_form_dir.mkdir()
    os.chown(old_form_dir, user.uid, user.gid)
    old = h.run(user, ["-setup", "K4", "-dir", str(old_form_dir)], wrapper)
    assert old.returncode == 0, old
    assert (old_form_dir / "lta" / "client-id.txt").exists()


def test_copied_elsewhere_and_symlinked(h: Harness, user: User) -> None:
    copy = h.base / "opt" / "lab" / "emulators"
    shutil.copytree(EMULATOR_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (h.base / "opt").chmod(0o755)
    link_dir = h.base / "bin"
    link_dir.mkdir(mode=0o755)
    (link_dir / "globusconnectpersonal").symlink_to(copy / "globusconnectpersonal")
    h.launcher = link_dir / "globusconnectpersonal"
    cfg, _ = h.config_dir(user)
    started = h.start_ready(user, ["-start", "-dir", str(cfg)])
    assert h.status(user)[1] == "idle"
    h.stop(user, started)


def test_call_log(h: Harness, user: User) -> None:
    log = h.base / "calls.jsonl"
    log.touch()
    os.chown(log, user.uid, user.gid)
    wrapper = h.wrapper(GCP_EMULATOR_CALL_LOG=str(log))
    h.run(user, ["-status", "-dir", "/nowhere"], wrapper)
    [entry] = [json.loads(line) for line in log.read_text().splitlines()]
    assert entry["argv"] == ["-status", "-dir", "/nowhere"]
    assert entry["uid"] == user.uid
