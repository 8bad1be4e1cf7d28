"""Bind mounts, through libc: the standard library has no ``mount(2)``.

Used by root only, on targets whose every component root owns (see
:mod:`globus_tmp.privatetmp`), so no user can redirect a mount with a symlink.
"""

from __future__ import annotations

import ctypes
import errno
import os

MS_BIND = 4096
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_void_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def bind(source: str, target: str) -> None:
    """Bind ``source`` at ``target`` (not recursive), kept out of other namespaces."""
    _check(_libc.mount(source.encode(), target.encode(), None, MS_BIND, None), "bind", target)
    _check(_libc.mount(None, target.encode(), None, MS_PRIVATE, None), "make private", target)


def unmount(target: str) -> bool:
    """Detach whatever is mounted at ``target``; False if nothing was."""
    if _libc.umount2(target.encode(), MNT_DETACH) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):  # not a mount point, or no such path
        return False
    raise OSError(err, f"umount {target}: {os.strerror(err)}")


def _check(rc: int, what: str, target: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what} {target}: {os.strerror(err)}")
