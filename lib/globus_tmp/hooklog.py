"""One line per hook decision, where an admin looks: syslog, the node's hook log, stderr.

Every line carries the hook, job, node and user, so ``grep`` on one of them tells a
job's whole story on a node. Logging never raises: a full disk must not fail a hook.
"""

from __future__ import annotations

import os
import sys
import syslog
import time
from pathlib import Path

# str.translate with a table: no ``re`` import on the hooks' hot path
_ESCAPES = {
    code: (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
}


def escape_control(text: str) -> str:
    """``text`` with every control character written as ``\\xNN`` / ``\\uNNNN``.

    Log lines carry user-derived text (pool entry names, GCP's output, Globus errors):
    a ``\\r``, a newline or an ANSI escape in it must not forge or hide lines.
    """
    return text.translate(_ESCAPES)


class HookLog:
    def __init__(self, hook: str, log_file: Path | None = None, to_stderr: bool = True) -> None:
        self.hook = hook
        self.log_file = log_file
        self.to_stderr = to_stderr
        self.context = ""
        self.facility = syslog.LOG_DAEMON
        """``syslog_facility``, set by :meth:`configure`."""

    def configure(self, log_file: Path, facility: str) -> None:
        """Where lines go once the configuration is known (``log_file``, ``syslog_facility``)."""
        self.log_file = log_file
        self.facility = getattr(syslog, f"LOG_{facility.upper()}", syslog.LOG_DAEMON)

    def bind(self, **fields: object) -> None:
        """Set the fields (job, node, user) every later line carries."""
        self.context = " ".join(f"{k}={v}" for k, v in fields.items())

    def info(self, message: str) -> None:
        self._emit(syslog.LOG_INFO, message)

    def error(self, message: str) -> None:
        self._emit(syslog.LOG_ERR, message)

    def _emit(self, priority: int, message: str) -> None:
        line = (
            f"{self.hook} {self.context}: {message}" if self.context else f"{self.hook}: {message}"
        )
        line = escape_control(line)
        try:
            syslog.openlog("globus-tmp", syslog.LOG_PID, self.facility)
            syslog.syslog(priority, line)
        except OSError:
            pass
        if self.log_file is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            data = f"{stamp} [{os.getpid()}] {line}\n".encode()
            try:
                fd = os.open(
                    self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644
                )
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
            except OSError:
                pass
        if self.to_stderr:
            try:
                print(f"globus-tmp: {line}", file=sys.stderr, flush=True)
            except OSError:
                pass
