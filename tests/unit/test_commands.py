"""run_bounded: the bound holds whatever the command and its children do."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from globus_tmp import errors
from globus_tmp.commands import CommandResult, run_bounded
from globus_tmp.errors import (
    CommandError,
    CommandFailed,
    CommandNotStarted,
    CommandTimedOut,
    GcpCommandFailed,
    GcpCommandTimedOut,
    GcpError,
    GlobusTmpError,
    RemoteApiError,
)
from globus_tmp.gcp import NOT_RUNNING, GcpCommand
from globus_tmp.job import UserIdentity
from globus_tmp.privileges import run_as

PY = sys.executable

# The leader forks a grandchild; both ignore SIGTERM, the grandchild keeps the leader's
# stdout (and stderr) open and prints its pid, and both sleep far past any bound.
STUBBORN = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pid = os.fork()
if pid == 0:
    print(os.getpid(), flush=True)
    if len(sys.argv) > 1:
        open(sys.argv[1], "w").write(str(os.getpid()))
    time.sleep(120)
    os._exit(0)
time.sleep(120)
"""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except (ProcessLookupError, FileNotFoundError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie init has yet to reap


def test_output_and_status() -> None:
    res = run_bounded([PY, "-c", "import sys; print('out'); print('err', file=sys.stderr)"], 10)
    assert res == CommandResult(res.command, 0, "out\n", "err\n")
    assert res.ok and res.output == "out\nerr\n" and res.last_line() == "err"
    res = run_bounded([PY, "-c", "raise SystemExit(3)"], 10)
    assert res.returncode == 3 and not res.ok and res.last_line() == "(no output)"


def test_check_raises_with_fields() -> None:
    argv = [PY, "-c", "import sys; print('why', file=sys.stderr); sys.exit(4)"]
    with pytest.raises(CommandFailed) as caught:
        run_bounded(argv, 10, check=True)
    exc = caught.value
    assert (exc.command, exc.returncode, exc.output) == (argv, 4, "why\n")
    assert exc.exit_code == 1 and "exit 4" in str(exc)


def test_not_started() -> None:
    with pytest.raises(CommandNotStarted) as caught:
        run_bounded(["/nonexistent/globus-tmp-tool"], 10)
    assert caught.value.command == ["/nonexistent/globus-tmp-tool"]
    assert caught.value.reason == os.strerror(2)


def test_timeout_kills_the_whole_group_even_a_grandchild_holding_the_pipe() -> None:
    started = time.monotonic()
    with pytest.raises(CommandTimedOut) as caught:
        run_bounded([PY, "-c", STUBBORN], 1.0, grace=0.5)
    took = time.monotonic() - started
    assert took < 1.0 + 0.5 + 1.5, f"the call outlived its bound: {took:.1f} s"
    exc = caught.value
    assert exc.timeout == 1.0 and exc.command[:2] == [PY, "-c"]
    grandchild = int(exc.output.split()[0])  # printed before the bound
    deadline = time.monotonic() + 2
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _gone(grandchild), "the grandchild that ignores SIGTERM survived"


def test_an_exception_during_the_wait_leaves_nothing_running(tmp_path: Path) -> None:
    """The hook's SIGALRM backstop (or Ctrl-C) ends the wait: the group dies with it."""

    class Alarm(Exception):
        pass

    def on_alarm(signum: int, frame: object) -> None:
        raise Alarm

    pid_file = tmp_path / "pid"
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with pytest.raises(Alarm):
            run_bounded([PY, "-c", STUBBORN, str(pid_file)], 30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 2
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _gone(grandchild)


def test_exit_does_not_wait_for_a_grandchild_holding_the_pipe() -> None:
    """The command itself ended: its answer counts; a leftover holding the pipe gets the
    grace, not the whole bound."""
    script = (
        "import os, time\nif os.fork() == 0:\n    time.sleep(30)\n    os._exit(0)\nprint('done')"
    )
    started = time.monotonic()
    res = run_bounded([PY, "-c", script], 20, grace=0.5)
    assert time.monotonic() - started < 5
    assert res.returncode == 0 and res.stdout == "done\n"


def test_output_is_bounded() -> None:
    res = run_bounded(
        [PY, "-c", "import sys; sys.stdout.write('x' * 300000)"], 10, output_limit=1000
    )
    assert res.returncode == 0 and res.stdout == "x" * 1000 and res.truncated


def test_stdin_is_devnull_or_an_empty_pipe() -> None:
    probe = "import os, stat; print(stat.S_ISFIFO(os.fstat(0).st_mode), os.read(0, 10))"
    assert run_bounded([PY, "-c", probe], 10).stdout == "False b''\n"
    assert run_bounded([PY, "-c", probe], 10, stdin_pipe=True).stdout == "True b''\n"


def test_fields_survive_a_report_and_bad_ones_do_not() -> None:
    """What crosses from a step as the user (privileges) is rebuilt from fields, and a
    lying step cannot make root believe ill-typed ones."""
    exc = GcpCommandFailed("'-stop' failed", command=["gcp", "-stop"], returncode=1, output="x")
    again = GcpCommandFailed.rebuild(str(exc), exc.fields())
    assert isinstance(again, GcpCommandFailed)
    assert (again.command, again.returncode, again.output) == (["gcp", "-stop"], 1, "x")
    forged = GcpCommandFailed.rebuild("forged", {"command": "rm -rf /", "returncode": "1"})
    assert type(forged) is GcpError and str(forged) == "forged"
    plain = CommandTimedOut.rebuild("late", {"command": ["a"], "timeout": 2})
    assert isinstance(plain, CommandTimedOut) and plain.timeout == 2.0
    assert type(CommandTimedOut.rebuild("late", {"command": ["a"], "timeout": True})) is (
        GlobusTmpError
    )
    assert type(CommandTimedOut.rebuild("late", {})) is GlobusTmpError


def _exit_5() -> None:
    run_bounded(["/bin/sh", "-c", "echo no >&2; exit 5"], 10, check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: run_as forks and drops to nobody")
def test_a_steps_error_keeps_its_fields_across_the_fork() -> None:
    with pytest.raises(CommandFailed) as caught:
        run_as(UserIdentity.from_name("nobody"), 20, _exit_5)
    exc = caught.value
    assert isinstance(exc, CommandError)
    assert (exc.command, exc.returncode, exc.output) == (
        ["/bin/sh", "-c", "echo no >&2; exit 5"],
        5,
        "no\n",
    )


def _globus_refused() -> None:
    from globus_tmp.globusapi import GlobusApiError

    raise GlobusApiError("task_list: 403 PermissionDenied", 403, "PermissionDenied")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: run_as forks and drops to nobody")
def test_an_error_outside_the_list_crosses_as_its_nearest_listed_class() -> None:
    with pytest.raises(RemoteApiError) as caught:
        run_as(UserIdentity.from_name("nobody"), 20, _globus_refused)
    exc = caught.value
    assert type(exc) is RemoteApiError and str(exc) == "task_list: 403 PermissionDenied"
    assert (exc.http_status, exc.code) == (403, "PermissionDenied")


def _launcher(tmp_path: Path, body: str) -> str:
    path = tmp_path / "globusconnectpersonal"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_gcp_calls_raise_gcp_errors_with_fields(tmp_path: Path) -> None:
    not_running = _launcher(tmp_path, f'echo "{NOT_RUNNING} to Globus Online Service"; exit 1')
    assert GcpCommand(not_running).status() is None
    assert GcpCommand(not_running).request_stop() is False
    broken = _launcher(tmp_path, "echo 'it broke' >&2; exit 2")
    with pytest.raises(GcpCommandFailed) as failed:
        GcpCommand(broken).status()
    assert failed.value.returncode == 2 and failed.value.command == [broken, "-status"]
    assert str(failed.value) == "'-status' failed (exit 2): it broke"
    with pytest.raises(GcpCommandFailed) as setup:
        GcpCommand(broken).setup("SECRET-KEY", tmp_path / "cfg")
    assert "SECRET-KEY" not in setup.value.command and "***" in setup.value.command
    hung = _launcher(tmp_path, "sleep 60")
    with pytest.raises(GcpCommandTimedOut) as late:
        GcpCommand(hung, call_timeout=0.5).status()
    assert isinstance(late.value, GcpError) and late.value.timeout == 0.5


def _own_init(kind: type[GlobusTmpError]) -> bool:
    """Whether ``kind`` or a class between it and GlobusTmpError defines ``__init__``."""
    return any("__init__" in vars(c) for c in kind.__mro__[: kind.__mro__.index(GlobusTmpError)])


@pytest.mark.parametrize("fields", [{}, {"command": 1, "returncode": [], "timeout": "x"}])
def test_every_error_kind_can_be_rebuilt_from_any_report(fields: dict[str, object]) -> None:
    """A step may name any class of the allow-list with any fields: root always gets
    an error of that family, never a crash."""
    kinds: list[type[GlobusTmpError]] = [
        c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, GlobusTmpError)
    ]
    assert len(kinds) > 15
    for kind in kinds:
        rebuilt = kind.rebuild("said", fields)
        assert isinstance(rebuilt, GlobusTmpError) and str(rebuilt) == "said"
        assert isinstance(rebuilt, kind) or _own_init(kind)
