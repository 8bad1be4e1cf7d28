"""Reading files someone else controls: regular files only, a few KiB, never blocking.

A user can put a FIFO where a file is expected (``open`` then waits for a writer
forever), a sparse file of hundreds of MiB (a plain ``read()`` takes it all into
memory), or a symlink. Every read of a user-controlled file (pool entries, the lease
registry, GCP's log) and of node state goes through :func:`read_bounded`, which opens
without following a final symlink and without blocking, checks the file type on the
open descriptor, and reads at most ``limit`` bytes.
"""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from pathlib import Path

SMALL = 4096
"""Enough for an id file (``client-id.txt``)."""
STATE = 1 << 20
"""Enough for a registry or a state file of any sane size."""


class FileTooLarge(OSError):
    """The file holds more than the caller is willing to read."""


def _open_regular(path: Path | str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return fd


def read_bounded(path: Path | str, limit: int = SMALL) -> bytes:
    """The whole content of the regular file ``path``; :class:`FileTooLarge` past ``limit``."""
    fd = _open_regular(path)
    try:
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise FileTooLarge(f"{path} is larger than {limit} bytes")
    return b"".join(chunks)


def read_text_bounded(path: Path | str, limit: int = SMALL) -> str:
    return read_bounded(path, limit).decode("utf-8", errors="replace")


def read_tail(path: Path | str, offset: int = 0, limit: int = 16384) -> str:
    """At most the last ``limit`` bytes of ``path`` after ``offset`` (a log's tail)."""
    fd = _open_regular(path)
    try:
        size = os.fstat(fd).st_size
        start = max(offset, size - limit)
        os.lseek(fd, start, os.SEEK_SET)
        data = os.read(fd, limit)
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace")
