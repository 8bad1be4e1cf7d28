"""Node-local state: per user, the set of jobs on this node and the GCP serving them.

Slurm can skip an epilog (node down, slurmd killed) or run one twice, and prologs and
epilogs of different jobs run concurrently; so the state is a *set* of job ids, changed
under a lock and written atomically (temp file, fsync, rename), never a counter.

Layout under ``state_dir`` (root-owned, 0755, node-local: a reboot clears it):

- ``users/<user>.json``: the :class:`UserNodeState`, readable by all (the TaskProlog
  and ``globus-tmp-endpoint`` read it as the user, without a lock: rename is atomic);
- ``locks/<user>.jobs.lock``: held briefly, for every read-modify-write of the file;
- ``locks/<user>.gcp.lock``: held while GCP is started or stopped, so a user has at
  most one GCP on the node. Order: ``gcp`` before ``jobs``, never the reverse.
- ``declared/`` (root, 0711: users pass, none lists it) and ``declared/<user>/`` (the
  user's, 0700, made by every Prolog of the user's, :meth:`NodeStateStore.ensure_marks`):
  ``declared/<user>/<job>`` is the mark that the job declared a stage-out
  (:mod:`globus_tmp.stagemarks`), so the Epilog reads the home only for such a job.
  The only directory here a user may write; root makes it and never looks inside.
- ``declared.since``: root's, empty; its mtime is when ``declared/`` was made (the first
  run of a version with marks). A job added to the job set before it may have declared
  without a mark (an older ``stage-out``): its Epilog looks in the home anyway.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .boundedio import STATE, read_text_bounded
from .errors import StateError
from .locks import FlockFile, LockTimeout
from .phases import (
    STATE_VERSION,
    Phase,
    check_transition,
)
from .process import ProcessRef

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from typing import Any, Optional


MAX_TASKS = 64
"""The most task ids one answer from the user's side puts into node state: a job's
stage-outs submitted on a node (as many as a job may declare there: one task each) or a
drain's live tasks (one of them is witness enough that a transfer is live). At 36 bytes
an id this keeps a job's share of the state file to a few KiB."""
MAX_STAGE_TASKS = 16 * MAX_TASKS
"""The most stage-out task ids awaiting their outcome per user and node (about 45 KiB
with the holds' copies, far below the file's read bound, :data:`STATE`): ids that never
settle (forged ones do not) cannot grow the file until it is "started afresh" and its
job set and holds are forgotten."""
_HEX = frozenset("0123456789abcdefABCDEF")
MARKS = "declared"
MARKS_SINCE = "declared.since"
_STAMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def is_task_id(value: object) -> bool:
    """Whether ``value`` has the shape of a Globus task id (a UUID, 8-4-4-4-12 hex)."""
    if not isinstance(value, str) or len(value) != 36:
        return False
    parts = value.split("-")
    return [len(p) for p in parts] == [8, 4, 4, 4, 12] and all(set(p) <= _HEX for p in parts)


def accept_task_ids(values: Iterable[object], limit: int = MAX_TASKS) -> tuple[list[str], int]:
    """The distinct task ids among ``values`` that may enter node state (UUID-shaped, at
    most ``limit``, in order), and how many others were refused. The values come from
    a step as the user: the user's records or the user's child may say anything."""
    accepted: list[str] = []
    refused = 0
    for value in values:
        if is_task_id(value) and len(accepted) < limit:
            if value not in accepted:
                accepted.append(str(value))
        else:
            refused += 1
    return accepted, refused


@dataclass
class GcpInstance:
    """The GCP running for a user on this node."""

    pid: int
    start_ticks: int
    endpoint_id: str
    endpoint_name: str
    config_dir: str
    log_path: str
    since: float
    connected: Optional[float] = None
    """When GCP first said ``connected`` (``-status``); None while it is connecting: the
    Prolog does not wait for it (``start_wait``), a watcher records it."""

    @property
    def process(self) -> ProcessRef:
        return ProcessRef(self.pid, self.start_ticks)


@dataclass
class StartRecord:
    """What a start in progress has done so far, written as soon as root learns it.

    If the hook is killed mid-start, whoever looks next finds the lease to give back
    and the GCP process to stop, instead of an instance nobody knows about.
    """

    entry: Optional[str] = None
    pid: Optional[int] = None
    start_ticks: Optional[int] = None

    @property
    def process(self) -> ProcessRef | None:
        if self.pid is None or self.start_ticks is None:
            return None
        return ProcessRef(self.pid, self.start_ticks)


@dataclass
class HeldTmp:
    """A job's private ``/tmp``, moved out of Slurm's reach until its stage-out lands."""

    path: str
    size: int
    since: float
    tasks: Optional[list[str]] = None
    """The stage-out tasks reading it, once the job's Epilog has submitted them (None
    before); the hold is freed once they have all ended."""


@dataclass
class CancelHold:
    """A pool entry kept leased to this node after its drain gave up at ``linger_max``
    under tasks it could not cancel: Globus resumes a task through whichever node runs
    the entry next, from that node's ``/tmp``. Released once every task is cancelled
    or proven ended (the repair retries), at the latest at ``until``."""

    tasks: list[str]
    """The tasks not yet cancelled nor proven ended."""
    since: float
    """When the drain gave up."""
    until: float
    """When the hold ends anyway (see :data:`globus_tmp.taskcancel.HOLD_MAX`)."""
    next_try: float = 0.0
    tries: int = 1
    error: Optional[str] = None
    """Why the last cancel did not go through."""
    marked: bool = False
    """Whether the lease record says ``cancelling`` (other nodes then never take it)."""


@dataclass
class UserNodeState:
    """Everything this node knows about one user."""

    user: str
    uid: int
    jobs: dict[str, float] = field(default_factory=dict)
    """Job id -> when its prolog (or first sighting) added it."""
    phase: Phase = Phase.IDLE
    instance: Optional[GcpInstance] = None
    error: Optional[str] = None
    error_at: Optional[float] = None
    drain_pid: Optional[int] = None
    drain_start_ticks: Optional[int] = None
    drain_until: Optional[float] = None
    """Wall-clock time by which the drain must have stopped GCP (``linger_max``)."""
    drain_tasks: list[str] = field(default_factory=list)
    """Transfer tasks the API showed live on the endpoint when the drain began."""
    starting: Optional[StartRecord] = None
    watch_pid: Optional[int] = None
    watch_start_ticks: Optional[int] = None
    """The detached watcher that waits for the instance to connect (root, forked by the
    Prolog; see ``NodeLifecycle.watch_connect``)."""
    idle_until: Optional[float] = None
    """Wall-clock end of ``idle_linger`` after the last job: the drain keeps an idle GCP
    up until then, for the user's next job."""
    release_pending: list[str] = field(default_factory=list)
    """Leases of stopped instances not yet given back (a slow home); retried."""
    job_tmp: dict[str, str] = field(default_factory=dict)
    """Job id -> where the job's private ``/tmp`` is exported to GCP (job_container)."""
    holds: dict[str, HeldTmp] = field(default_factory=dict)
    """Job id -> a private ``/tmp`` kept past its job for a declared stage-out."""
    stage_tasks: list[str] = field(default_factory=list)
    """Stage-out tasks submitted from this node whose outcome is not yet recorded."""
    cancel_holds: dict[str, CancelHold] = field(default_factory=dict)
    """Pool entry -> tasks a drain that gave up could not cancel (the lease is kept)."""
    updated: float = 0.0
    recovered_from: Optional[str] = None
    """Set when the file on disk was unreadable and this state started afresh."""
    written_phase: Optional[Phase] = field(default=None, compare=False, repr=False)
    """The phase the state file has (as read, or as last written; a missing file is
    IDLE): where a write's transition starts from. None for a state built in memory,
    not read (a test's or a tool's prepared state). Not part of the document."""

    @property
    def drain(self) -> ProcessRef | None:
        if self.drain_pid is None or self.drain_start_ticks is None:
            return None
        return ProcessRef(self.drain_pid, self.drain_start_ticks)

    @drain.setter
    def drain(self, ref: ProcessRef | None) -> None:
        self.drain_pid = ref.pid if ref else None
        self.drain_start_ticks = ref.start_ticks if ref else None

    @property
    def watch(self) -> ProcessRef | None:
        if self.watch_pid is None or self.watch_start_ticks is None:
            return None
        return ProcessRef(self.watch_pid, self.watch_start_ticks)

    @watch.setter
    def watch(self, ref: ProcessRef | None) -> None:
        self.watch_pid = ref.pid if ref else None
        self.watch_start_ticks = ref.start_ticks if ref else None

    def clear_drain(self) -> None:
        self.drain, self.drain_until, self.drain_tasks = None, None, []
        self.idle_until = None

    def cancels_due(self, now: float) -> bool:
        """Whether a kept lease's cancel is due for its retry (cheap: the join path asks)."""
        return any(hold.next_try <= now for hold in self.cancel_holds.values())

    def live_instance(self) -> GcpInstance | None:
        """The recorded instance if its process still runs (pid and start time)."""
        if self.instance is not None and self.instance.process.alive():
            return self.instance
        return None

    def fail(self, message: str) -> None:
        self.phase = Phase.FAILED
        self.error = message
        self.error_at = time.time()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["recovered_from"]  # about this read, not part of the state
        del data["written_phase"]
        data["phase"] = Phase(self.phase).value
        data["version"] = STATE_VERSION
        return data

    @classmethod
    def from_json(cls, data: Any) -> UserNodeState:
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError("not a globus-tmp state document")
        data = dict(data)
        data.pop("version")
        data.pop("recovered_from", None)
        data.pop("written_phase", None)
        data["phase"] = Phase(data.get("phase", Phase.IDLE.value))  # ValueError: unknown
        inst = data.pop("instance", None)
        starting = data.pop("starting", None)
        jobs = data.pop("jobs", {})
        if not isinstance(jobs, dict):
            raise ValueError("'jobs' is not a mapping")
        state = cls(**data)
        state.written_phase = state.phase
        state.jobs = {str(k): float(v) for k, v in jobs.items()}
        if inst and "connected" not in inst:  # written before connects were watched:
            inst = {**inst, "connected": inst.get("since")}  # recorded once connected
        state.instance = GcpInstance(**inst) if inst else None
        state.starting = StartRecord(**starting) if starting else None
        state.release_pending = [str(n) for n in state.release_pending]
        state.drain_tasks = [str(t) for t in state.drain_tasks]
        state.stage_tasks = [str(t) for t in state.stage_tasks]
        state.job_tmp = {str(k): str(v) for k, v in dict(state.job_tmp).items()}
        state.holds = {
            str(k): v if isinstance(v, HeldTmp) else HeldTmp(**v)
            for k, v in dict(state.holds).items()
        }
        state.cancel_holds = {
            str(k): v if isinstance(v, CancelHold) else CancelHold(**v)
            for k, v in dict(state.cancel_holds).items()
        }
        for hold in state.cancel_holds.values():
            hold.tasks = [str(t) for t in hold.tasks]
        return state


class NodeStateStore:
    """The state directory of one node: locks, reads, atomic writes."""

    def __init__(self, root: Path, lock_timeout: float = 30.0) -> None:
        self.root = root
        self.lock_timeout = lock_timeout

    # -- directory ---------------------------------------------------------------

    def ensure(self) -> None:
        """Create the directory tree (as root) or check that it can be trusted."""
        for path in (self.root, self.root / "users", self.root / "locks"):
            try:
                path.mkdir(mode=0o755, parents=True)
            except FileExistsError:
                pass
            check_trusted_dir(path)
        marks = self.root / MARKS
        try:
            marks.mkdir(mode=0o711)
        except FileExistsError:
            pass
        else:
            os.chmod(marks, 0o711)  # whatever the umask: users must reach their own
            self._stamp_marks()
        check_trusted_dir(marks)

    # -- stage-out marks (globus_tmp.stagemarks) ------------------------------------

    def marks_dir(self, user: str) -> Path:
        return marks_dir(self.root, user)

    def ensure_marks(self, user: str, uid: int, gid: int) -> str | None:
        """Make the user's marks directory if it is missing (one ``mkdir``, every Prolog);
        an existing one is never looked at (it is the user's: a mount of theirs there
        could hang root). None, or why it could not be made (declarations then fail,
        saying so, and lose nothing)."""
        path = self.marks_dir(user)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            return None
        except OSError as exc:
            return f"cannot make {path} ({exc.strerror}): stage-out --at-exit fails in this job"
        try:  # root's own new entry in root's own 0711 directory: nobody can swap it
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fchmod(fd, 0o700)
                os.fchown(fd, uid, gid)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.rmdir(path)
            return f"cannot give {path} to {user} ({exc.strerror}): stage-out --at-exit fails"
        return None

    def predates_marks(self, added: float | None) -> bool:
        """Whether a job added to the job set at ``added`` may have declared without a
        mark: before marks existed on this node (an upgrade under running jobs). A job
        not in the job set (None: its Prolog did not add it) is not."""
        if added is None:
            return False
        stamp = self.root / MARKS_SINCE
        try:
            return added < os.lstat(stamp).st_mtime
        except FileNotFoundError:  # a hook killed between the mkdir and the stamp
            self._stamp_marks()
            return True
        except OSError:
            return True

    def _stamp_marks(self) -> None:
        with contextlib.suppress(OSError):
            os.close(os.open(self.root / MARKS_SINCE, _STAMP_FLAGS, 0o644))

    # -- locks -------------------------------------------------------------------

    @contextlib.contextmanager
    def jobs_lock(self, user: str, timeout: float | None = None) -> Iterator[None]:
        with self._lock(user, "jobs", timeout):
            yield

    @contextlib.contextmanager
    def tmp_exit_lock(self, user: str, job_id: str, timeout: float | None = None) -> Iterator[None]:
        """Held by a job's private-/tmp ``exit`` for its whole run: the job's Epilog waits
        for it before deciding on the job's export (see ``PrivateTmp.wait_for_exit``)."""
        with self._lock(user, f"tmpexit-{job_id}", timeout):
            yield

    def drop_tmp_exit_lock(self, user: str, job_id: str) -> None:
        """Remove a finished exit's lock file (one per job would pile up otherwise); a
        waiter still on it gets the lock at once, which is right: the exit is done."""
        with contextlib.suppress(OSError):
            (self.root / "locks" / f"{user}.tmpexit-{job_id}.lock").unlink()

    @contextlib.contextmanager
    def holds_lock(self, timeout: float | None = None) -> Iterator[None]:
        """The node's private-/tmp holds as one: the ``hold_max_bytes`` check and the
        record it allows (and reconcile's orphan sweep) are one step. Taken before any
        user's jobs lock, never inside one."""
        with self._lock("node", "holds", timeout):  # no user lock is of kind "holds"
            yield

    @contextlib.contextmanager
    def gcp_lock(self, user: str, timeout: float | None = None) -> Iterator[None]:
        with self._lock(user, "gcp", timeout):
            yield

    @contextlib.contextmanager
    def gcp_lock_if_free(self, user: str) -> Iterator[bool]:
        """The gcp lock if nobody holds it (True), else at once False: for repairs that
        leave a user alone while a hook is at work."""
        lock = FlockFile(self.root / "locks" / f"{user}.gcp.lock")
        try:
            lock.acquire(0)
        except LockTimeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def gcp_lock_busy(self, user: str) -> bool:
        """Whether a start or stop of ``user``'s GCP is under way right now."""
        with self.gcp_lock_if_free(user) as free:
            return not free

    def users(self) -> list[str]:
        """Users with a state file on this node."""
        try:
            names = os.listdir(self.root / "users")
        except OSError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json") and not n.startswith("."))

    @contextlib.contextmanager
    def _lock(self, user: str, kind: str, timeout: float | None) -> Iterator[None]:
        wait = self.lock_timeout if timeout is None else max(timeout, 0.0)
        path = self.root / "locks" / f"{user}.{kind}.lock"
        lock = FlockFile(path)
        try:
            lock.acquire(wait)
        except LockTimeout:
            raise LockTimeout(
                f"waited {wait:.0f} s for the {kind} lock of {user} ({path})",
                path=str(path),
                timeout=wait,
            ) from None
        try:
            yield
        finally:
            lock.release()

    # -- state files -------------------------------------------------------------

    def path(self, user: str) -> Path:
        return self.root / "users" / f"{user}.json"

    def read(self, user: str, uid: int) -> UserNodeState:
        """The user's state; an unreadable file gives a fresh state that says so."""
        path = self.path(user)
        try:
            raw = read_text_bounded(path, STATE)
        except FileNotFoundError:
            return UserNodeState(user=user, uid=uid, written_phase=Phase.IDLE)
        except OSError as exc:
            raw = f"<{exc}>"
        try:
            state = UserNodeState.from_json(json.loads(raw))
        except (ValueError, TypeError) as exc:
            fresh = UserNodeState(user=user, uid=uid, written_phase=Phase.IDLE)
            fresh.recovered_from = f"state file {path} was unreadable ({exc}); started afresh"
            return fresh
        state.recovered_from = None
        return state

    def write(self, state: UserNodeState) -> None:
        """Write ``state`` atomically; :class:`IllegalTransition` (nothing written) when
        its phase cannot follow the one it was read with."""
        state.phase = Phase(state.phase)  # a plain word assigned by a caller is checked too
        if state.written_phase is not None:
            check_transition(state.written_phase, state.phase)
        state.updated = time.time()
        write_atomic(self.path(state.user), json.dumps(state.to_json(), indent=1), 0o644)
        state.written_phase = state.phase


def marks_dir(state_dir: Path, user: str) -> Path:
    """``declared/<user>``: the user's own directory of stage-out marks on the node."""
    return state_dir / MARKS / user


def read_state_snapshot(root: Path, user: str) -> UserNodeState | None:
    """Read a user's state without a lock (for the user's own lookups); None if absent."""
    try:
        return UserNodeState.from_json(
            json.loads(read_text_bounded(root / "users" / f"{user}.json", STATE))
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        state = UserNodeState(user=user, uid=-1)
        state.fail(f"node state of {user} is unreadable ({exc}); the next job's prolog repairs it")
        return state


def write_atomic(path: Path, text: str, mode: int) -> None:
    """Write a whole file so that readers see the old or the new content, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(str(path.parent), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def check_trusted_dir(path: Path, allow_mount: bool = False, private: bool = False) -> None:
    """Raise unless ``path`` is a real directory root owns that nobody else may write to
    (``private``: nor read). ``allow_mount``: a directory something is mounted on is
    taken as it is (the mount's owner, e.g. a job user, shows)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise StateError(f"state_dir {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StateError(f"state_dir {path} is not a directory (a symlink?); remove it")
    if allow_mount:
        from .mounts import is_mount_point  # the mount table: a bind keeps its st_dev

        if is_mount_point(str(path)):
            return
    if st.st_uid != os.geteuid():
        raise StateError(
            f"state_dir {path} is owned by uid {st.st_uid}, not root; chown it to root"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StateError(f"state_dir {path} is writable by group/others; chmod 755 it")
    if private and st.st_mode & 0o077:
        raise StateError(f"{path} is open to group/others; chmod 700 it")
