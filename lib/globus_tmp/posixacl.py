"""A directory only root and one user may enter: mode 0700 plus a POSIX ACL entry.

Slurm keeps a job's private ``/tmp`` private through its root-owned 0700 parent; the
export that lets the user's GCP reach it must not open a way around that. A directory
owned by the user could be swapped (a symlink where root binds), one of the user's
groups could be shared with others, so the export root stays root's, 0700, and one
access-ACL entry lets the user (and GCP, which runs as the user) in.

The ACL is written as the ``system.posix_acl_access`` attribute in the kernel's own
format (``include/uapi/linux/posix_acl_xattr.h``): no ``setfacl`` to run, no library.
A file system without ACLs refuses the attribute (``EOPNOTSUPP``): the caller then
exports nothing rather than something others can read.
"""

from __future__ import annotations

import os
import struct

_XATTR = "system.posix_acl_access"
_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_UNDEFINED_ID = 0xFFFFFFFF
READ_EXECUTE = 0o5


def only_root_and(uid: int, perms: int = READ_EXECUTE) -> bytes:
    """The ACL ``user::rwx, user:<uid>:<perms>, group::---, mask::<perms>, other::---``."""
    entries = (
        (_USER_OBJ, 0o7, _UNDEFINED_ID),
        (_USER, perms, uid),
        (_GROUP_OBJ, 0, _UNDEFINED_ID),
        (_MASK, perms, _UNDEFINED_ID),
        (_OTHER, 0, _UNDEFINED_ID),
    )
    return struct.pack("<I", _VERSION) + b"".join(struct.pack("<HHI", *e) for e in entries)


def restrict_to(path: str, uid: int) -> None:
    """Make ``path`` (a directory root owns) enterable by root and ``uid`` only; a no-op
    when it already is. Raises OSError (e.g. EOPNOTSUPP: no ACLs there)."""
    wanted = only_root_and(uid)
    try:
        if os.getxattr(path, _XATTR, follow_symlinks=False) == wanted:
            return
    except OSError:
        pass  # no ACL yet (ENODATA), or none possible: setxattr says which
    os.chmod(path, 0o700, follow_symlinks=False)
    os.setxattr(path, _XATTR, wanted, follow_symlinks=False)


def allowed_uids(path: str) -> set[int]:
    """The uids a named-user ACL entry of ``path`` lets in (for checks and tests)."""
    try:
        data = os.getxattr(path, _XATTR, follow_symlinks=False)
    except OSError:
        return set()
    out = set()
    for off in range(4, len(data) - 7, 8):
        tag, perms, ident = struct.unpack_from("<HHI", data, off)
        if tag == _USER and perms:
            out.add(ident)
    return out
