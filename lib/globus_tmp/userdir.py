"""Whether a user may trust their ``user_dir``: checked as that user, before each use.

What is in ``user_dir`` acts with the user's rights: the Epilog submits the stage-out
records there with the user's tokens (kept there too), and GCP runs from the pool
entries there. If someone else can write it, or a directory above it, they can plant a
record, swap an entry or read the tokens. So every step as the user that reads or
writes it first checks, with that user's own eyes (:func:`check_user_dir` compares
owners with this process's uid):

- ``user_dir`` itself is the user's directory;
- it and every directory above it, up to the user's home (or up to ``/`` when it is
  not below the home), belong to the user or root and cannot be written by group or
  others, like OpenSSH's ``StrictModes``. A root-owned directory with the sticky bit
  (``/scratch`` at 1777) is allowed above it: others may create names there but never
  rename or remove the user's; the worst another user can do is create the user's
  directory first, which the ownership check then refuses;
- a symlink on the way (as configured) belongs to the user or root, and the directory
  holding it passes the same checks (a symlink cannot be changed, only replaced by
  whoever may write that directory).

Paths are checked after symlinks are resolved (``realpath``), which is what every
later call reaches. A missing ``user_dir`` is no danger to a step that only reads (it
finds nothing); the CLI, which creates it, creates the missing directories itself
(mode 0700) and checks again (:func:`ensure_user_dir`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import UserDirError

_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def check_user_dir(user_dir: Path, home: str) -> Path:
    """``user_dir`` when this process's user may trust it; :class:`UserDirError` (one
    line naming the fix) when not. Run as the user: no file is opened."""
    if not user_dir.is_absolute():  # "~" of a user without a home in the password file
        raise UserDirError(
            f"user_dir {user_dir} is not an absolute path (is your home set?); ask your admin"
        )
    home = home if os.path.isabs(home) else "/"  # no home: every parent up to / counts
    uid = os.geteuid()
    real_home = os.path.realpath(home)
    top = home if _within(str(user_dir), home) else "/"
    dirs: dict[str, bool] = {}  # real directory -> whether it is user_dir itself
    for prefix in _prefixes(str(user_dir), top)[1:]:  # the top is in the chain below
        try:
            st = os.lstat(prefix)
        except FileNotFoundError:
            break  # not created yet: nothing below it exists either
        except OSError as exc:
            raise UserDirError(
                f"user_dir {user_dir}: cannot check {prefix}: {exc.strerror}"
            ) from None
        if stat.S_ISLNK(st.st_mode):
            _check_owner(user_dir, prefix, st, uid, allow_root=True)
            dirs.update(dict.fromkeys(_chain(os.path.dirname(prefix), real_home), False))
    dirs.update(dict.fromkeys(_chain(str(user_dir), real_home), False))
    dirs[os.path.realpath(user_dir)] = True
    for path, itself in dirs.items():
        _check_dir(user_dir, path, uid, itself)
    return user_dir


def ensure_user_dir(user_dir: Path, home: str) -> Path:
    """:func:`check_user_dir`, creating what is missing first (0700, as the user) and
    checking again: the directories made here are then provably this user's, even
    below a directory where others may create names."""
    check_user_dir(user_dir, home)
    missing = []
    path = user_dir
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass  # someone was quicker: the check below says whose it is
        except OSError as exc:
            raise UserDirError(
                f"user_dir {user_dir}: cannot create {path}: {exc.strerror}"
            ) from None
    return check_user_dir(user_dir, home)


def _within(path: str, top: str) -> bool:
    top = top.rstrip("/") or "/"
    return path == top or path.startswith(top if top == "/" else f"{top}/")


def _prefixes(path: str, top: str) -> list[str]:
    """``top`` and each longer prefix of ``path`` down to ``path`` itself (as written)."""
    rest = path[len(top.rstrip("/")) :].strip("/") if _within(path, top) else path.strip("/")
    out = [top]
    for part in rest.split("/") if rest else []:
        out.append(os.path.join(out[-1], part))
    return out


def _chain(path: str, real_home: str) -> list[str]:
    """The real directory of ``path`` (or its nearest existing ancestor) and every real
    directory above it, up to ``real_home`` when it is below it, else up to ``/``."""
    real = os.path.realpath(path)
    while not os.path.lexists(real) and real != "/":
        real = os.path.dirname(real)
    top = real_home if _within(real, real_home) else "/"
    out = [real]
    while out[-1] != top and out[-1] != "/":
        out.append(os.path.dirname(out[-1]))
    return out


def _check_dir(user_dir: Path, path: str, uid: int, itself: bool) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return  # user_dir not created yet: its existing ancestors are checked
    except OSError as exc:
        raise UserDirError(f"user_dir {user_dir}: cannot check {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UserDirError(f"user_dir {user_dir}: {path} is not a directory; remove it")
    _check_owner(user_dir, path, st, uid, allow_root=not itself)
    sticky_root = st.st_uid == 0 and st.st_mode & stat.S_ISVTX and not itself
    if st.st_mode & _OTHERS_WRITE and not sticky_root:
        raise UserDirError(
            f"user_dir {user_dir}: {path} can be written by group or others, so nothing in "
            f"it can be trusted: 'chmod go-w {path}'"
        )


def _check_owner(user_dir: Path, path: str, st: os.stat_result, uid: int, allow_root: bool) -> None:
    if st.st_uid == uid or (allow_root and st.st_uid == 0):
        return
    whose = "you or root" if allow_root else "you"
    raise UserDirError(
        f"user_dir {user_dir}: {path} belongs to uid {st.st_uid}, not {whose} (uid {uid}), "
        "so nothing in it is used: remove it or ask your admin to"
    )
