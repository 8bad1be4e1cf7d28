"""File operations on a local path (stat, list, read, write, mkdir, checksum, ...).

Shared by served collections (run in the service) and by :class:`GcpLink` (run inside the
GCP emulator, as the GCP's user), so both report the same stat/listing shapes and errors.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Mapping
from typing import Any, Optional

from .common import JSONDict
from .errors import OpError


def _os_error(exc: OSError, path: str) -> OpError:
    """Translate an OSError into the error codes Transfer uses in task events."""
    if isinstance(exc, FileNotFoundError):
        return OpError("FILE_NOT_FOUND", f"No such file or directory: {path}")
    if isinstance(exc, PermissionError):
        return OpError("PERMISSION_DENIED", f"Permission denied: {path}")
    if isinstance(exc, IsADirectoryError):
        return OpError("IS_A_DIRECTORY", f"Is a directory: {path}")
    if isinstance(exc, NotADirectoryError):
        return OpError("NOT_A_DIRECTORY", f"Not a directory: {path}")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OpError("QUOTA_EXCEEDED", f"No space left on device: {path}")
    return OpError("IO_ERROR", f"{exc.strerror or exc}: {path}")


def _owner_names(st: os.stat_result) -> tuple[str, str]:
    try:
        import pwd

        user = pwd.getpwuid(st.st_uid).pw_name
    except (ImportError, KeyError):
        user = str(st.st_uid)
    try:
        import grp

        group = grp.getgrgid(st.st_gid).gr_name
    except (ImportError, KeyError):
        group = str(st.st_gid)
    return user, group


def stat_path(path: str) -> JSONDict:
    """Stat without following a final symlink: type, size, mtime, permissions, owner."""
    try:
        lst = os.lstat(path)
        if stat.S_ISLNK(lst.st_mode):
            try:
                st = os.stat(path)
            except OSError:
                kind = "invalid_symlink"
                st = lst
            else:
                kind = "link"
        else:
            st = lst
            kind = "dir" if stat.S_ISDIR(lst.st_mode) else "file"
    except OSError as exc:
        raise _os_error(exc, path) from None
    user, group = _owner_names(st)
    return {
        "name": os.path.basename(path.rstrip("/")) or "/",
        "type": kind,
        "size": st.st_size,
        "mtime": st.st_mtime,
        "permissions": f"{stat.S_IMODE(st.st_mode):04o}",
        "user": user,
        "group": group,
        "link_target": os.readlink(path) if kind in ("link", "invalid_symlink") else None,
    }


def list_path(path: str) -> list[JSONDict]:
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        raise _os_error(exc, path) from None
    entries = []
    for name in names:
        with contextlib.suppress(OpError):  # vanished between listdir and lstat
            entries.append(stat_path(os.path.join(path, name)))
    return entries


def read_chunk(path: str, offset: int, length: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)
    except OSError as exc:
        raise _os_error(exc, path) from None


def write_chunk(path: str, offset: int, data: bytes, truncate: bool) -> None:
    """Write ``data`` at ``offset`` (idempotent, so a resumed chunk can be written twice)."""
    try:
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else 0)
        fd = os.open(path, flags, 0o644)
        try:
            os.lseek(fd, offset, os.SEEK_SET)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        finally:
            os.close(fd)
    except OSError as exc:
        raise _os_error(exc, path) from None


def make_dirs(path: str, exist_ok: bool = True) -> None:
    """``mkdir -p``; with ``exist_ok`` false an existing path is ``EXISTS`` (what Transfer's
    mkdir answers), while tasks create their destination directories idempotently."""
    try:
        os.makedirs(path, exist_ok=exist_ok)
    except FileExistsError:
        raise OpError("EXISTS", f"Path already exists: {path}") from None
    except OSError as exc:
        raise _os_error(exc, path) from None


def remove_path(path: str) -> None:
    """Delete a file, symlink or empty directory (a DELETE task removes contents first)."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            os.rmdir(path)
        else:
            os.unlink(path)
    except OSError as exc:
        raise _os_error(exc, path) from None


def rename_path(path: str, new_path: str) -> None:
    """Rename within one endpoint; an existing target is ``EXISTS`` (no overwrite)."""
    try:
        if os.path.lexists(new_path):
            raise OpError("EXISTS", f"Path already exists: {new_path}")
        os.rename(path, new_path)
    except OSError as exc:
        raise _os_error(exc, path) from None


def checksum_path(path: str, algorithm: str) -> str:
    algo = algorithm.lower().replace("-", "")
    if algo not in ("sha256", "md5", "sha1", "sha512"):
        raise OpError("UNSUPPORTED_CHECKSUM", f"Unsupported checksum algorithm {algorithm}")
    digest = hashlib.new(algo)
    try:
        with open(path, "rb") as handle:
            while True:
                block = handle.read(1024 * 1024)
                if not block:
                    break
                digest.update(block)
    except OSError as exc:
        raise _os_error(exc, path) from None
    return digest.hexdigest()


def set_mtime(path: str, mtime: float) -> None:
    try:
        os.utime(path, (mtime, mtime))
    except OSError as exc:
        raise _os_error(exc, path) from None


def run_file_op(fs_path: str, op: str, args: Mapping[str, Any], data: Optional[bytes]) -> Any:
    """Execute one file operation on a local path; used by both kinds of endpoint."""
    if op == "stat":
        return stat_path(fs_path)
    if op == "list":
        return list_path(fs_path)
    if op == "mkdir":
        make_dirs(fs_path, bool(args.get("exist_ok", True)))
        return None
    if op == "delete":
        remove_path(fs_path)
        return None
    if op == "rename":
        rename_path(fs_path, str(args["new_path"]))
        return None
    if op == "read":
        return read_chunk(fs_path, int(args["offset"]), int(args["length"]))
    if op == "write":
        write_chunk(fs_path, int(args["offset"]), data or b"", bool(args.get("truncate")))
        return None
    if op == "checksum":
        return checksum_path(fs_path, str(args.get("algorithm", "sha256")))
    if op == "utime":
        set_mtime(fs_path, float(args["mtime"]))
        return None
    raise OpError("UNSUPPORTED", f"unknown operation {op!r}")


WRITE_OPS = frozenset({"write", "mkdir", "utime", "delete", "rename"})
