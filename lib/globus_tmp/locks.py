"""An exclusive lock on a file, with a timeout: ``flock(2)``, nothing more.

Every hook takes a lock, and the join path runs for every job: the ``filelock``
package cost about 18 ms of imports per hook here (``bench/hot_paths.py``), more than
the rest of the join path's own work, for the same ``flock`` call. ``flock`` locks
belong to the open file, are dropped by the kernel when the holder dies (a killed hook
never leaves a lock behind), and work on NFS through lock emulation.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from .errors import LockTimeout

__all__ = ["FlockFile", "LockTimeout", "append_shared"]


class FlockFile:
    """An exclusive ``flock`` on ``path`` (created if missing, never through a symlink)."""

    def __init__(self, path: Path, mode: int = 0o600) -> None:
        self.path = path
        self.mode = mode
        self._fd: int | None = None

    def acquire(self, timeout: float) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, self.mode)
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockTimeout(
                        f"waited {timeout:.0f} s for the lock {self.path}",
                        path=str(self.path),
                        timeout=timeout,
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the lock
            self._fd = None


def append_shared(path: Path, data: bytes, timeout: float) -> bool:
    """Append ``data`` to ``path`` in one ``write`` (``O_APPEND``: appenders never
    interleave) under a *shared* ``flock``, so that whoever holds it exclusively (to read
    and empty the file, :mod:`globus_tmp.metrics`) never loses a line. False, with
    nothing written, if the lock did not come within ``timeout``."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        os.write(fd, data)
        return True
    finally:
        os.close(fd)
