"""Running an external command with a bound that holds: the one way lib/ does it.

``subprocess.run(timeout=...)`` kills only the child it started, then waits for its
pipes to close: a grandchild that ignores SIGTERM and keeps stdout open (a launcher
script's daemon, a hung ``ssh``) makes the call outlive its bound, and a hook past its
bound is killed by slurmd with the node drained. So :func:`run_bounded` starts the
command in a session of its own, and at the bound signals the whole process group
(SIGTERM, then SIGKILL after a short grace), reaps the leader, and stops reading: it
returns or raises within ``timeout + grace`` and a little more, whatever the command
does. Output is read as it comes and kept up to a limit, so a chatty command cannot
fill the pipe (and block) nor our memory.

Not for long-lived children: GCP's ``-start`` (:mod:`globus_tmp.gcp`) and the detached
drain (:mod:`globus_tmp.drain`) are started and left running on purpose.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import CommandFailed, CommandNotStarted, CommandTimedOut

OUTPUT_LIMIT = 1 << 20
"""The most of each of stdout and stderr kept (bytes); the rest is read and dropped."""
GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL to the command's process group at the bound,
and how long output is still read after the command itself has exited."""


@dataclass(frozen=True)
class CommandResult:
    """How a command ended: its argv, exit status (negative: killed by that signal)
    and what it printed, decoded as UTF-8 (undecodable bytes replaced)."""

    command: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    truncated: bool = False
    """More than :data:`OUTPUT_LIMIT` was printed on stdout or stderr."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def output(self) -> str:
        """stdout and stderr together, for messages and for protocol text a tool may
        print on either."""
        return self.stdout + self.stderr

    def last_line(self) -> str:
        """The last line of stderr (stdout when stderr is empty): what a tool that
        failed says about why."""
        lines = (self.stderr or self.stdout).strip().splitlines()
        return lines[-1] if lines else "(no output)"

    def check(self) -> CommandResult:
        """This result, or :class:`CommandFailed` when the command exited non-zero."""
        if self.returncode != 0:
            raise CommandFailed(
                f"{_name(self.command)} failed (exit {self.returncode}): {self.last_line()}",
                command=self.command,
                returncode=self.returncode,
                output=_tail(self.output),
            )
        return self


def run_bounded(
    argv: Sequence[str],
    timeout: float,
    *,
    check: bool = False,
    stdin_pipe: bool = False,
    env: Mapping[str, str] | None = None,
    output_limit: int = OUTPUT_LIMIT,
    grace: float = GRACE,
) -> CommandResult:
    """Run ``argv`` (no shell) to its end or for at most ``timeout`` seconds.

    stdin is ``/dev/null``, or with ``stdin_pipe`` an empty pipe (a tool that crashes
    on a closed stdin still reads end-of-file). Raises :class:`CommandNotStarted` when
    it cannot run, :class:`CommandTimedOut` at the bound (the process group killed),
    and with ``check`` :class:`CommandFailed` on a non-zero exit.
    """
    command = tuple(argv)
    try:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
            env=None if env is None else dict(env),
        )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CommandNotStarted(
            f"cannot run {command[0] if command else '(nothing)'}: {reason}",
            command=command,
            reason=reason,
        ) from None
    if proc.stdin is not None:
        proc.stdin.close()
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    kept = {out_fd: bytearray(), err_fd: bytearray()}
    truncated = timed_out = False
    exited_at: float | None = None
    try:
        with selectors.DefaultSelector() as sel:
            for fd in kept:
                os.set_blocking(fd, False)
                sel.register(fd, selectors.EVENT_READ)
            while True:
                now = time.monotonic()
                if exited_at is None and proc.poll() is not None:
                    exited_at = now
                if not sel.get_map():  # end-of-file on both: the exit is due
                    if exited_at is None:
                        timed_out = not _wait(proc, deadline - now)
                    break
                # once it has exited, whoever still holds its pipes gets ``grace``, no more
                stop = deadline if exited_at is None else min(deadline, exited_at + grace)
                if now >= stop:
                    timed_out = exited_at is None
                    break
                for key, _ in sel.select(min(stop - now, 0.1)):
                    fd = int(key.fd)
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        sel.unregister(fd)
                        continue
                    room = max(output_limit - len(kept[fd]), 0)
                    truncated = truncated or len(chunk) > room
                    kept[fd] += chunk[:room]
    except BaseException:  # SIGALRM's HookTimeout, Ctrl-C: leave nothing behind
        _signal_group(proc.pid, signal.SIGKILL)
        _wait(proc, 1.0)
        proc.stdout.close()
        proc.stderr.close()
        raise
    if timed_out:
        _kill_group(proc, grace)
    proc.stdout.close()
    proc.stderr.close()
    stdout = kept[out_fd].decode("utf-8", errors="replace")
    stderr = kept[err_fd].decode("utf-8", errors="replace")
    if timed_out:
        raise CommandTimedOut(
            f"{_name(command)} gave no answer within {timeout:g} s",
            command=command,
            timeout=timeout,
            output=_tail(stdout + stderr),
        )
    assert proc.returncode is not None
    result = CommandResult(command, proc.returncode, stdout, stderr, truncated)
    return result.check() if check else result


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the command's process group, SIGKILL whatever is left after ``grace``,
    and reap the leader (bounded: a process stuck in the kernel is left to init)."""
    pgid = proc.pid  # start_new_session: the leader's pid is the group's id
    _signal_group(pgid, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end:
        proc.poll()  # a zombie leader still counts as a member of its group
        if proc.returncode is not None and not _signal_group(pgid, 0):
            return
        time.sleep(0.02)
    _signal_group(pgid, signal.SIGKILL)
    _wait(proc, grace)


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False when the group has no process left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed user: it is there, just not ours to signal
        return True
    return True


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Reap the command within ``timeout``; whether it had ended."""
    try:
        proc.wait(max(timeout, 0))
    except subprocess.TimeoutExpired:
        return False
    return True


def _name(command: Sequence[str]) -> str:
    return "'" + " ".join(command[:2]) + ("'" if len(command) <= 2 else " ...'")


def _tail(text: str, limit: int = 2000) -> str:
    return text[-limit:]
