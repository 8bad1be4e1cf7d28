"""Measuring and deleting a held ``/tmp`` tree from root, by directory descriptors.

Why root: the tree is the user's, and a user can make parts of it unreadable to
themselves (``chmod 000 /tmp/d``). Measured as the user, such a directory counted 0
bytes (``hold_max_bytes`` bypassed); deleted as the user, it could not be emptied, so
root's ``rmdir`` failed and the data stayed on disk for good. Root reads and removes
through a mode-000 directory (``CAP_DAC_OVERRIDE``), so the walk runs as root, and
only once the user can no longer reach the tree by any path: the caller has moved it
into the hold, whose parent is root's, mode 0700, and passes that parent and the
tree's name (the tree itself is opened from the parent's descriptor).

Why it cannot be led astray:

- every directory is opened relative to its parent's descriptor with ``O_NOFOLLOW |
  O_DIRECTORY`` and every entry is looked at with ``fstatat(AT_SYMLINK_NOFOLLOW)``;
  ``unlinkat`` removes a symlink, never its target. So the walk never leaves the tree
  through a symlink, whatever the user planted.
- it never crosses a mount: an entry on another file system (``st_dev``) or one that is
  a mount point in the mount table (a bind of the same file system keeps its
  ``st_dev``) is neither counted nor entered nor removed, and is reported.
- it returns to a parent whose descriptor it had closed (below) through ``..`` of the
  child, and goes on only if that is the very directory (``st_dev``, ``st_ino``) it
  had opened on the way down.

Bounds (a tree can be 100,000 directories deep and millions wide):

- descriptors: the walk is a loop over an explicit stack, never a recursion on the
  Python stack; at most :data:`MAX_OPEN` directory descriptors are open (plus the
  parent's and one that ``scandir`` duplicates). Deeper, the descriptor of the
  shallowest open level is closed and reopened through ``..`` on the way back up: two
  opens per level at most, whatever the depth.
- memory: per level of the current path, a small frame (name, device, inode, the
  names of its subdirectories not yet visited); while measuring, the inodes seen with
  more than one link. At most :data:`MAX_PENDING` names and inodes in all: past it,
  measuring gives up (cannot be measured), deleting reads the directory again once its
  names are done (what it removed is gone, so the next read goes on from there).
- time: a deadline (``time.monotonic()``), checked at every entry. Past it, measuring
  says the tree cannot be measured, deleting stops and says what it has left.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from dataclasses import dataclass

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from pathlib import Path

MAX_OPEN = 64
"""Directory descriptors the walk keeps open at most (the process limit is often 1024)."""
MAX_PENDING = 1_000_000
"""Names and inodes the walk remembers at most (about 100 MiB of Python objects)."""

_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_Key = tuple[int, int]  # (st_dev, st_ino)


@dataclass(frozen=True)
class Measured:
    """The allocated size of a tree, or why it cannot be known."""

    size: int | None
    """Bytes allocated (``st_blocks * 512``, each inode once); None: cannot be measured."""
    reason: str = ""
    """Why ``size`` is None, or what it leaves out (mount points not crossed)."""


@dataclass(frozen=True)
class Removed:
    """What deleting a tree did."""

    gone: bool
    """The tree, its top directory included, no longer exists."""
    removed: int
    """Entries removed (files, links, directories)."""
    left: int = 0
    """Entries known to be left (not counting what a stopped walk never reached)."""
    reason: str = ""
    """Why something is left."""


class _Stop(Exception):
    """The walk ends early; the message says why."""


class _Frame:
    """One directory on the current path."""

    __slots__ = ("dev", "fd", "ino", "kept", "more", "name", "pending")

    def __init__(self, name: str, fd: int, st: os.stat_result) -> None:
        self.name = name
        self.fd = fd  # -1 while closed to bound the descriptors
        self.dev, self.ino = st.st_dev, st.st_ino
        self.pending: list[str] = []  # subdirectories still to visit
        self.more = False  # deleting: names left unread (MAX_PENDING); read again
        self.kept: set[str] | None = None  # deleting: names that stay (not read again)


class _Walk:
    """Depth-first over the directories of one tree, bounded as the module says.
    Subclasses say what a directory's entries are for (:meth:`scan`) and what leaving a
    directory does (:meth:`leave`)."""

    def __init__(self, parent_fd: int, name: str, deadline: float, mounts: set[_Key]) -> None:
        self.parent_fd = parent_fd
        self.name = name
        self.deadline = deadline
        self.mounts = mounts
        self.dev = -1
        self.remembered = 0  # pending names (and linked inodes) held in memory
        self.skipped_mounts = 0
        self.stack: list[_Frame] = []
        self.lowest_open = 0  # frames from this index on have their descriptor open

    def run(self) -> None:
        self.tick()
        fd = os.open(self.name, _DIR_FLAGS, dir_fd=self.parent_fd)
        st = os.fstat(fd)
        self.dev = st.st_dev
        top = _Frame(self.name, fd, st)
        self.stack.append(top)
        try:
            self.enter(st)
            self.scan(top)
            while self.stack:
                self.step()
        finally:
            for frame in self.stack:
                if frame.fd >= 0:
                    os.close(frame.fd)

    def step(self) -> None:
        """Visit the next subdirectory of the deepest directory, or leave it."""
        self.tick()
        top = self.stack[-1]
        if top.pending:
            name = top.pending.pop()
            self.remembered -= 1
            child = self.descend(top, name)
            if child is not None:
                self.stack.append(child)
                self.bound_descriptors()
                self.scan(child)
        elif top.more:
            top.more = False
            self.scan(top)
        else:
            self.stack.pop()
            parent_fd = self.ascend(top)
            self.leave(top, parent_fd)

    def descend(self, top: _Frame, name: str) -> _Frame | None:
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=top.fd)
        except OSError as exc:
            self.cannot_open(top, name, exc)
            return None
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        if self.is_mount(st):  # mounted since it was read
            os.close(fd)
            self.skip_mount(top, name)
            return None
        return _Frame(name, fd, st)

    def bound_descriptors(self) -> None:
        """Close the shallowest open descriptor past :data:`MAX_OPEN` (reopened through
        ``..`` on the way back up)."""
        if len(self.stack) - self.lowest_open > MAX_OPEN:
            frame = self.stack[self.lowest_open]
            os.close(frame.fd)
            frame.fd = -1
            self.lowest_open += 1

    def ascend(self, child: _Frame) -> int:
        """The descriptor of ``child``'s parent (reopened through ``..`` if it was
        closed); ``child``'s own is closed."""
        try:
            if not self.stack:
                return self.parent_fd
            parent = self.stack[-1]
            if parent.fd < 0:
                fd = os.open("..", _DIR_FLAGS, dir_fd=child.fd)
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != (parent.dev, parent.ino):
                    os.close(fd)
                    raise _Stop("the tree changed under the walk (a directory was moved)")
                parent.fd = fd
                self.lowest_open = len(self.stack) - 1
            return parent.fd
        finally:
            os.close(child.fd)
            child.fd = -1

    def is_mount(self, st: os.stat_result) -> bool:
        return st.st_dev != self.dev or (st.st_dev, st.st_ino) in self.mounts

    def remember(self, frame: _Frame, name: str) -> None:
        frame.pending.append(name)
        self.remembered += 1

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise _Stop("its time ran out")

    def mounts_note(self) -> str:
        n = self.skipped_mounts
        return f"{n} mount point(s) inside not crossed" if n else ""

    # what a walk does: see the subclasses

    def enter(self, st: os.stat_result) -> None:
        """The top directory's own entry."""

    def scan(self, frame: _Frame) -> None:
        raise NotImplementedError

    def leave(self, frame: _Frame, parent_fd: int) -> None:
        """``frame`` is done; ``parent_fd`` is its parent's descriptor."""

    def cannot_open(self, top: _Frame, name: str, exc: OSError) -> None:
        raise _Stop(f"{name}: {exc.strerror}")

    def skip_mount(self, top: _Frame, name: str) -> None:
        self.skipped_mounts += 1


class _Measure(_Walk):
    """Adds up allocated bytes; any surprise (an error, too much to remember) means the
    tree cannot be measured."""

    def __init__(self, parent_fd: int, name: str, deadline: float, mounts: set[_Key]) -> None:
        super().__init__(parent_fd, name, deadline, mounts)
        self.size = 0
        self.linked: set[_Key] = set()

    def enter(self, st: os.stat_result) -> None:
        self.size += st.st_blocks * 512

    def scan(self, frame: _Frame) -> None:
        with os.scandir(frame.fd) as entries:
            for entry in entries:
                self.tick()
                name = entry.name
                st = os.stat(name, dir_fd=frame.fd, follow_symlinks=False)
                if self.is_mount(st):
                    self.skipped_mounts += 1
                    continue
                if stat.S_ISDIR(st.st_mode):
                    self.remember(frame, name)
                elif st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    if key in self.linked:
                        continue  # a hard link of an inode already counted
                    self.linked.add(key)
                    self.remembered += 1
                self.size += st.st_blocks * 512
                if self.remembered > MAX_PENDING:
                    raise _Stop(f"more than {MAX_PENDING} directories and linked files")


class _Remove(_Walk):
    """Unlinks every entry and removes every directory bottom-up; what cannot go stays,
    is counted, and is not tried again in this walk."""

    def __init__(self, parent_fd: int, name: str, deadline: float, mounts: set[_Key]) -> None:
        super().__init__(parent_fd, name, deadline, mounts)
        self.removed = 0
        self.left = 0
        self.first_error = ""

    def scan(self, frame: _Frame) -> None:
        with os.scandir(frame.fd) as entries:
            for entry in entries:
                self.tick()
                name = entry.name
                if frame.kept is not None and name in frame.kept:
                    continue
                if not entry.is_dir(follow_symlinks=False):
                    self.unlink(frame, name)  # a file mounted on fails with EBUSY: kept
                    continue
                try:
                    st = os.stat(name, dir_fd=frame.fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue  # gone meanwhile (another walk of the same hold)
                if self.is_mount(st):
                    self.skip_mount(frame, name)
                elif not stat.S_ISDIR(st.st_mode):
                    self.unlink(frame, name)  # replaced meanwhile
                elif self.remembered >= MAX_PENDING and frame.pending:
                    frame.more = True  # read the rest once these are done
                    return
                else:
                    self.remember(frame, name)

    def unlink(self, frame: _Frame, name: str) -> None:
        try:
            os.unlink(name, dir_fd=frame.fd)
        except FileNotFoundError:
            return
        except OSError as exc:
            self.keep(frame, name, f"{name}: {exc.strerror}")
            return
        self.removed += 1

    def leave(self, frame: _Frame, parent_fd: int) -> None:
        try:
            os.rmdir(frame.name, dir_fd=parent_fd)
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY or not self.left:  # else: what it keeps says why
                self.note(f"{frame.name}: {exc.strerror}")
            if self.stack:
                self.keep(self.stack[-1], frame.name, "")
            else:
                self.left += 1
            return
        self.removed += 1

    def cannot_open(self, top: _Frame, name: str, exc: OSError) -> None:
        if not isinstance(exc, FileNotFoundError):
            self.keep(top, name, f"{name}: {exc.strerror}")

    def skip_mount(self, top: _Frame, name: str) -> None:
        super().skip_mount(top, name)
        self.keep(top, name, "")

    def keep(self, frame: _Frame, name: str, why: str) -> None:
        if frame.kept is None:
            frame.kept = set()
        frame.kept.add(name)
        self.left += 1
        self.note(why)
        if self.left > MAX_PENDING:
            raise _Stop(f"more than {MAX_PENDING} entries cannot be removed")

    def note(self, why: str) -> None:
        if why and not self.first_error:
            self.first_error = why


def measure(parent: Path, name: str, deadline: float) -> Measured:
    """The space the tree ``parent/name`` takes, as root; ``parent`` must be root's and
    closed to others (the caller checks). None (with the reason) if it cannot be
    measured by ``deadline``: anything that cannot be measured is not held."""
    try:
        with _ParentDir(parent, name) as (parent_fd, mounts):
            walk = _Measure(parent_fd, name, deadline, mounts)
            walk.run()
    except _Stop as stop:
        return Measured(None, f"cannot be measured: {stop}")
    except OSError as exc:
        return Measured(None, f"cannot be measured: {exc.strerror or exc}")
    return Measured(walk.size, walk.mounts_note())


def remove(parent: Path, name: str, deadline: float) -> Removed:
    """Delete the tree ``parent/name`` as root, its top directory included, bottom-up,
    never outside it (module docstring); stops at ``deadline``. ``parent`` must be
    root's and closed to others (the caller checks)."""
    walk: _Remove | None = None
    try:
        with _ParentDir(parent, name) as (parent_fd, mounts):
            walk = _Remove(parent_fd, name, deadline, mounts)
            walk.run()
    except FileNotFoundError:
        if walk is None or walk.dev < 0:
            return Removed(True, 0)  # nothing there (already freed)
        return _stopped(walk, "an entry vanished under the walk")
    except _Stop as stop:
        return _stopped(walk, str(stop))
    except OSError as exc:
        return _stopped(walk, exc.strerror or str(exc))
    if walk.left:
        reasons = "; ".join(r for r in (walk.first_error, walk.mounts_note()) if r)
        return Removed(False, walk.removed, walk.left, reasons)
    return Removed(True, walk.removed)


def _stopped(walk: _Remove | None, why: str) -> Removed:
    if walk is None:
        return Removed(False, 0, 0, why)
    return Removed(False, walk.removed, walk.left, f"stopped: {why}; the rest is left")


class _ParentDir:
    """The parent's descriptor (opened without following a symlink) and the mount
    points inside ``parent/name`` as (st_dev, st_ino), for the span of a walk."""

    def __init__(self, parent: Path, name: str) -> None:
        if name in ("", ".", "..") or "/" in name:
            raise OSError(errno.EINVAL, f"'{name}' is not a name in {parent}")
        self.parent, self.name = parent, name
        self.fd = -1

    def __enter__(self) -> tuple[int, set[_Key]]:
        self.fd = os.open(self.parent, _DIR_FLAGS)
        try:
            return self.fd, _mounts_inside(os.path.join(self.parent, self.name))
        except BaseException:
            os.close(self.fd)
            raise

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _mounts_inside(tree: str) -> set[_Key]:
    """The roots of the mounts below ``tree`` in this namespace. Stops the walk if
    ``tree`` is a mount point itself (it would delete the mounted file system) or the
    mount table cannot be read (a missing table is no proof that the tree is gone)."""
    from .mounts import mount_points

    real = os.path.realpath(tree)
    found: set[_Key] = set()
    try:
        points = mount_points()
    except OSError as exc:
        raise _Stop(f"the mount table cannot be read ({exc.strerror or exc})") from None
    for point in points:
        if point == real:
            raise _Stop(f"{tree} is a mount point")
        if point.startswith(real + "/"):
            try:
                st = os.stat(point, follow_symlinks=False)
            except OSError:
                continue
            found.add((st.st_dev, st.st_ino))
    return found
