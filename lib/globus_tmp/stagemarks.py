"""A node-local mark that a job declared a stage-out: the Epilog reads no home without it.

A declaration (``stage-out --at-exit``) is a record in the user's dir, in the home: the
Epilog of every job used to list it (a step as the user), so a slow or hung home file
system held every job's end. Now a declaration first leaves an empty file,
``<state_dir>/declared/<user>/<job>`` (layout: :mod:`globus_tmp.nodestate`), and the
Epilog and the private-/tmp exit look in the home only for a job that has one.

Everything here runs as the user (the CLI, or a step of the hooks dropped to the user):
``declared/<user>`` is the user's own directory, so root never looks inside it (a user
could mount something there that hangs whoever looks). The steps only ``lstat``,
``unlink`` and ``rename`` names in that one node-local directory.

- :func:`write_mark` (the CLI, before the home record): refuses a directory that is not
  the user's own real directory, or is missing (the Prolog did not run here, or an
  older version did), with one line naming the fix; the declaration then fails whole.
- :func:`has_mark` (the private-/tmp exit: is there something to hold for?) and
  :func:`take_mark` (the Epilog: looked at, so consumed).
- :func:`sweep_marks` (``globus-tmp-admin reconcile``): marks of jobs no longer in the
  node's job set (their Epilog never ran) are first renamed ``<job>.orphan`` (which the
  Epilog still finds: an Epilog can come late) and removed :data:`ORPHAN_AGE` later.

A mark proves nothing: the records in the home decide what is submitted. A forged mark
(made without declaring) costs one look in the user's own home, as that user.
"""

from __future__ import annotations

import os
import stat
import time

from .errors import GlobusTmpError

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Protocol

    from .config import Config
    from .job import UserIdentity

    class StageMarks(Protocol):
        """The steps as the user around marks (tests hand the lifecycle a fake)."""

        def look(self, user: UserIdentity, job_id: str, timeout: float, take: bool) -> bool:
            """Whether the job has a mark (``take``: and remove it); node-local only."""

        def declared(self, user: UserIdentity, job_id: str, timeout: float) -> int:
            """The job's declarations waiting for its end here: read in the home."""

        def sweep(self, user: UserIdentity, keep: list[str], timeout: float) -> int:
            """Orphan, then remove, marks of jobs not in ``keep``."""


MARK_STEP = 5.0
"""Seconds for the step that looks for a mark: a few file-system calls in a node-local
directory, plus a fork. Past it the home is read after all (see :func:`declared_here`)."""
ORPHAN = ".orphan"
ORPHAN_AGE = 86400.0
"""Seconds a mark of a job gone from the job set is kept (as ``<job>.orphan``, its
ctime set by the rename) before reconcile removes it: an Epilog delayed by a slurmd
that could not be reached still finds it within that time."""
_SWEEP_MAX = 4096
"""Names one sweep looks at: the step stays short whatever the user puts there."""


class MarkError(GlobusTmpError):
    """The mark of a declaration cannot be written; nothing was declared."""


def write_mark(marks: str, job_id: str, node: str) -> bool:
    """Create the mark of ``job_id`` in ``marks`` (the caller's ``declared/<user>``);
    whether this call created it. Refuses unless ``marks`` is a real directory of the
    caller's own (another user's directory, or a symlink to one, is never written)."""
    fd = _open_dir(marks, node)
    try:
        try:
            made = os.open(
                job_id,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=fd,
            )
        except FileExistsError:
            return False  # an earlier declaration of the job made it
        except OSError as exc:
            raise MarkError(
                f"cannot write {marks}/{job_id} ({exc.strerror}); nothing declared: ask your "
                "admin to check state_dir on this node"
            ) from None
        os.close(made)
        return True
    finally:
        os.close(fd)


def drop_mark(marks: str, job_id: str) -> None:
    """Remove the mark :func:`write_mark` made when the declaration it was for failed."""
    try:
        os.unlink(os.path.join(marks, job_id))
    except OSError:
        pass


def has_mark(marks: str, job_id: str) -> bool:
    """Whether ``job_id`` has a mark (plain or orphaned); a missing directory has none."""
    for name in (job_id, job_id + ORPHAN):  # this order: reconcile renames one into the other
        try:
            os.lstat(os.path.join(marks, name))
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            return False
        return True
    return False


def take_mark(marks: str, job_id: str) -> bool:
    """Remove the marks of ``job_id``; whether there was one. A name that cannot be
    removed (the user made a directory of it) counts as a mark: the home decides."""
    found = False
    for name in (job_id, job_id + ORPHAN):
        try:
            os.unlink(os.path.join(marks, name))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            pass
        found = True
    return found


def sweep_marks(marks: str, keep: list[str], max_age: float = ORPHAN_AGE) -> int:
    """Marks of jobs not in ``keep`` (the node's job set of the user): rename a plain
    one ``<job>.orphan``, remove an orphan orphaned more than ``max_age`` seconds ago
    and any name that is no mark at all. How many names were renamed or removed."""
    try:
        entries = os.scandir(marks)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    done = 0
    now = time.time()
    kept = set(keep)
    with entries:
        for count, entry in enumerate(entries):
            if count >= _SWEEP_MAX:
                break
            name = entry.name
            job = name[: -len(ORPHAN)] if name.endswith(ORPHAN) else name
            if job in kept:
                continue
            path = os.path.join(marks, name)
            try:
                if job.isdigit() and job == name:
                    os.rename(path, path + ORPHAN)
                elif job.isdigit() and now - os.lstat(path).st_ctime < max_age:
                    continue
                else:
                    os.unlink(path)
            except OSError:
                continue
            done += 1
    return done


def _open_dir(marks: str, node: str) -> int:
    try:
        fd = os.open(marks, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MarkError(
            f"{marks} is missing: the globus-tmp Prolog did not run for this job on {node} "
            "(or an older version did); nothing declared: ask your admin to install "
            "globus-tmp's Prolog on this node (globus-tmp-admin doctor)"
        ) from None
    except OSError as exc:
        raise MarkError(
            f"{marks}: {exc.strerror} (not a directory, or a symlink); nothing declared: "
            "ask your admin to remove it, the next Prolog makes it again"
        ) from None
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise MarkError(
            f"{marks} belongs to uid {st.st_uid}, not you (uid {os.geteuid()}); nothing "
            "declared: ask your admin to remove it, the next Prolog makes it again"
        )
    return fd


def declared_here(
    steps: StageMarks,
    user: UserIdentity,
    job_id: str,
    budget: Callable[[], float],
    take: bool,
    predates: bool,
    log_error: Callable[[str], None],
) -> int:
    """How many stage-outs the job declared for its end on this node, reading the home
    only when the job has a mark, or may have declared without one (``predates``: added
    before marks existed here), or its mark cannot be looked at.

    A mark step that fails or times out (the user's own doing: a mount over their marks
    directory, a stopped step) is no answer, and "no declaration" is not safe to assume:
    losing a declared stage-out is worse than a slower Epilog, so the home is read,
    within what is left of ``budget()``. ``take``: the Epilog consumes the mark; the
    private-/tmp exit leaves it for the Epilog. Raises what the home step raises.
    """
    try:
        marked = steps.look(user, job_id, min(MARK_STEP, budget()), take)
    except GlobusTmpError as exc:
        log_error(f"job {job_id}'s stage-out mark not looked at ({exc}); reading the user_dir")
        marked = True
    if not marked and not predates:
        return 0
    return steps.declared(user, job_id, budget())


class ForkedStageMarks:
    """:class:`StageMarks` for real users: each call one step as the user (a fork, no
    exec); the mark steps import nothing and start in ``/``, not in the home (a hung
    home would hold even their ``chdir``); the home step is what it always was."""

    def __init__(self, cfg: Config, node: str, marks_dir: Callable[[str], Path]) -> None:
        self.cfg = cfg
        self.node = node
        self.marks_dir = marks_dir

    def look(self, user: UserIdentity, job_id: str, timeout: float, take: bool) -> bool:
        from .privileges import run_as_away_from_home

        marks = str(self.marks_dir(user.name))
        look = take_mark if take else has_mark
        answer = run_as_away_from_home(user, timeout, look, marks, job_id)
        return answer is not False  # the step is the user's: only a plain "no" is no

    def declared(self, user: UserIdentity, job_id: str, timeout: float) -> int:
        from .privileges import run_as
        from .slurmconf import cluster_name
        from .stageout import declared_count

        where = (self.cfg.user_dir_for(user), user.home, cluster_name(self.cfg, os.environ))
        answer = run_as(user, timeout, declared_count, *where, job_id, self.node)
        return answer if type(answer) is int else 1  # unusable: let the submission decide

    def sweep(self, user: UserIdentity, keep: list[str], timeout: float) -> int:
        from .privileges import run_as_away_from_home

        marks = str(self.marks_dir(user.name))
        answer = run_as_away_from_home(user, timeout, sweep_marks, marks, keep)
        return answer if type(answer) is int else 0
