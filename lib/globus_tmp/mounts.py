"""Bind mounts, through libc: the standard library has no ``mount(2)`` (nor
``renameat2``, whose ``RENAME_NOREPLACE`` the hold needs: :func:`rename_noreplace`).

Used by root only, on targets whose every component root owns (see
:mod:`globus_tmp.privatetmp`), so no user can redirect a mount with a symlink.

Whether a path is a mount point is read from the mount table (``/proc/self/mountinfo``),
never guessed from ``st_dev``: a bind of a directory of the same file system (a job's
``/tmp`` bound below the state dir, both on one disk) has the parent's ``st_dev``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re

from .boundedio import read_bounded

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
MOUNTINFO = "/proc/self/mountinfo"
MOUNTINFO_LIMIT = 16 << 20
"""Enough for a node with tens of thousands of mounts (a line is about 150 bytes)."""

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_void_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def bind(source: str, target: str, read_only: bool = False) -> None:
    """Bind ``source`` at ``target`` (not recursive), kept out of other namespaces;
    ``read_only``: nothing written through it (a bind takes its flags only from a
    remount of itself)."""
    _check(_libc.mount(source.encode(), target.encode(), None, MS_BIND, None), "bind", target)
    _check(_libc.mount(None, target.encode(), None, MS_PRIVATE, None), "make private", target)
    if read_only:
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        _check(_libc.mount(None, target.encode(), None, flags, None), "read-only", target)


def unmount(target: str) -> bool:
    """Detach whatever is mounted at ``target``; False if nothing was."""
    if _libc.umount2(target.encode(), MNT_DETACH) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):  # not a mount point, or no such path
        return False
    raise OSError(err, f"umount {target}: {os.strerror(err)}")


def rename_noreplace(source: os.PathLike[str] | str, target: os.PathLike[str] | str) -> None:
    """``rename`` that fails (EEXIST) instead of replacing an existing ``target``: a
    plain rename of a directory onto an empty one replaces it without a word."""
    src, dst = os.fsencode(source), os.fsencode(target)
    rc = _libc.renameat2(_AT_FDCWD, src, _AT_FDCWD, dst, _RENAME_NOREPLACE)
    _check(rc, f"rename {os.fsdecode(src)} ->", os.fsdecode(dst))


def _check(rc: int, what: str, target: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what} {target}: {os.strerror(err)}")


_ESCAPE = re.compile(rb"\\([0-7]{3})")


def mount_points(table: str | None = None) -> list[str]:
    """Every mount point in this mount namespace, as the kernel spells it (no symlink
    in it; ``\\040``-style escapes undone). Raises OSError if the table cannot be read
    (or is larger than :data:`MOUNTINFO_LIMIT`)."""
    points = []
    for line in read_bounded(table or MOUNTINFO, MOUNTINFO_LIMIT).splitlines():
        fields = line.split(b" ")
        if len(fields) > 4:
            raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), fields[4])
            points.append(os.fsdecode(raw))
    return points


def is_mount_point(path: str, table: str | None = None) -> bool:
    """Whether something is mounted at ``path`` (after resolving its symlinks, as the
    table does); False if the table cannot be read."""
    real = os.path.realpath(path)
    try:
        return real in mount_points(table)
    except OSError:
        return False
