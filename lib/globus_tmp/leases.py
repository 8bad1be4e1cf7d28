"""One lease per pool entry, taken with an operation that is atomic on any shared file system.

A GCP config directory must never run on two nodes at once. The lease of an entry is a
series of generation files in the entry's directory, ``.lease.<N>``; the one with the
highest ``N`` is current. Taking the lease means creating ``.lease.<N+1>`` with
``link()`` from a temporary file that already holds the whole owner record: ``link``
fails with ``EEXIST`` when the name exists, atomically, on local file systems, NFSv3/v4,
Lustre and BeeGFS, so of all nodes that try generation ``N+1`` exactly one wins, and
nobody ever sees a half-written record. Releasing is taking the next generation with a
"released" record. No ``flock`` anywhere: on NFS with ``local_lock``, BeeGFS without
global locks or Lustre with ``localflock`` it locks one node only, and on Lustre
without ``flock`` it fails.

Each file-system call goes through :class:`FsOps`, so a benchmark can add latency and
count operations; taking a free lease is about four calls (list, read, write, link).

Everything here runs **as the user** (see :mod:`globus_tmp.privileges`).
"""

from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .boundedio import SMALL, read_bounded
from .errors import PoolError

PREFIX = ".lease."
RUNNING, DRAINING, CANCELLING = "running", "draining", "cancelling"
"""A holder's phases: its GCP runs, outlives its jobs until ``drain_until`` (a drain),
or is stopped while Globus may still resume a task through the entry (a drain gave up
and could not cancel it: the entry is kept until ``drain_until``, see
:mod:`globus_tmp.taskcancel`)."""
RECORD_VERSION = 2
GC_EVERY = 16
GC_AGE = 3600.0


class FsOps:
    """The file-system calls leases make (swap in a slower or counting one to measure)."""

    def listdir(self, path: Path) -> list[str]:
        return os.listdir(path)

    def read(self, path: Path) -> bytes:
        return read_bounded(path, SMALL)

    def write_new(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def link(self, source: Path, target: Path) -> None:
        os.link(source, target)

    def nlink(self, path: Path) -> int:
        return os.lstat(path).st_nlink

    def unlink(self, path: Path) -> None:
        os.unlink(path)

    def replace(self, source: Path, target: Path) -> None:
        os.replace(source, target)


@dataclass(frozen=True)
class Holder:
    """Who holds (or wants) a lease: a node of a cluster, in one boot."""

    cluster: str
    node: str
    boot_id: str = ""

    @property
    def owner(self) -> str:
        return f"{self.cluster}/{self.node}" if self.cluster else self.node

    def same_node(self, record: LeaseRecord) -> bool:
        return record.cluster == self.cluster and record.node == self.node


@dataclass(frozen=True)
class LeaseRecord:
    """The content of one generation file."""

    gen: int
    held: bool
    cluster: str = ""
    node: str = ""
    boot_id: str = ""
    since: float = 0.0
    phase: str = RUNNING
    """:data:`RUNNING`, :data:`DRAINING` or :data:`CANCELLING`."""
    drain_until: float | None = None

    @property
    def owner(self) -> str:
        return f"{self.cluster}/{self.node}" if self.cluster else self.node

    def describe(self) -> str:
        if not self.held:
            return "free"
        what = f"held by {self.owner} since {time.strftime('%H:%M', time.localtime(self.since))}"
        if self.phase in (DRAINING, CANCELLING) and self.drain_until:
            until = time.strftime("%H:%M", time.localtime(self.drain_until))
            doing = "draining" if self.phase == DRAINING else "kept for a Globus task to cancel"
            what += f", {doing} until {until}"
        return what

    def held_for_cancel(self, now: float) -> bool:
        """Whether the holder keeps the entry for a task it could not cancel (until T)."""
        return self.phase == CANCELLING and self.drain_until is not None and now < self.drain_until

    def to_bytes(self) -> bytes:
        doc = asdict(self)
        doc["version"] = RECORD_VERSION
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def parse(cls, gen: int, data: bytes) -> LeaseRecord:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("version") != RECORD_VERSION:
            raise ValueError("not a lease record")
        until = doc.get("drain_until")
        return cls(
            gen=gen,
            held=bool(doc["held"]),
            cluster=str(doc.get("cluster", "")),
            node=str(doc.get("node", "")),
            boot_id=str(doc.get("boot_id", "")),
            since=float(doc.get("since", 0.0)),
            phase=str(doc.get("phase", "running")),
            drain_until=float(until) if until is not None else None,
        )


class EntryLease:
    """The lease of the pool entry in ``entry_dir``."""

    def __init__(self, entry_dir: Path, fs: FsOps | None = None) -> None:
        self.dir = entry_dir
        self.fs = fs or FsOps()

    def _path(self, gen: int) -> Path:
        return self.dir / f"{PREFIX}{gen}"

    def current(self) -> LeaseRecord | None:
        """The current record; None if the entry was never leased.

        A record that cannot be read (a crash cannot leave one: records appear whole) is
        taken as held by nobody known: it can only be replaced by the next generation.
        """
        for _ in range(5):
            gens = sorted(
                (int(n[len(PREFIX) :]) for n in self.fs.listdir(self.dir) if _is_gen(n)),
                reverse=True,
            )
            if not gens:
                return None
            try:
                return LeaseRecord.parse(gens[0], self.fs.read(self._path(gens[0])))
            except FileNotFoundError:
                continue  # superseded and cleaned up meanwhile: look again
            except (OSError, ValueError, KeyError, TypeError):
                return LeaseRecord(gen=gens[0], held=True, node="<unreadable record>")
        raise PoolError(f"the lease of {self.dir.name} changes too fast to read; try again")

    def take(
        self, after: LeaseRecord | None, me: Holder, since: float | None = None
    ) -> LeaseRecord | None:
        """Take the lease if ``after`` is still current; the new record, or None if
        another node took that generation first."""
        gen = after.gen + 1 if after is not None else 1
        stamp = time.time() if since is None else since
        record = LeaseRecord(gen, True, me.cluster, me.node, me.boot_id, stamp)
        return record if self._publish(record) else None

    def release(self, me: Holder) -> bool:
        """Give the lease back if ``me`` holds it; False if it is not ours (any more)."""
        current = self.current()
        if current is None or not current.held or not me.same_node(current):
            return False
        return self._publish(LeaseRecord(current.gen + 1, False, since=time.time()))

    def update(self, me: Holder, phase: str, drain_until: float | None) -> bool:
        """Rewrite our own current record (e.g. ``draining`` until T); False if not ours.

        A ``cancelling`` mark with its deadline ahead is not turned into ``draining``:
        a GCP started again from the entry (a job joined as its drain gave up) drains
        under the stronger mark, which only the holder's release or ``running`` lifts."""
        current = self.current()
        if current is None or not current.held or not me.same_node(current):
            return False
        if phase == DRAINING and current.held_for_cancel(time.time()):
            return True
        record = LeaseRecord(
            current.gen, True, me.cluster, me.node, me.boot_id, current.since, phase, drain_until
        )
        tmp = self._tmp()
        self.fs.write_new(tmp, record.to_bytes())
        self.fs.replace(tmp, self._path(current.gen))  # only the holder writes its generation
        return True

    def _tmp(self) -> Path:
        return self.dir / f".lease-tmp.{os.uname().nodename}.{os.getpid()}.{time.monotonic_ns()}"

    def _publish(self, record: LeaseRecord) -> bool:
        tmp = self._tmp()
        target = self._path(record.gen)
        self.fs.write_new(tmp, record.to_bytes())
        try:
            self.fs.link(tmp, target)
            won = True
        except FileExistsError:
            won = False
        except OSError as exc:
            # NFS may report a failure for a link that the server did make (a retried
            # request): the temporary file's link count says what really happened
            if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise PoolError(
                    f"{self.dir}: the file system refuses hard links ({exc.strerror}); "
                    "leases need link() (NFS, Lustre, BeeGFS, GPFS and local file systems "
                    "have it): ask your admin for a user_dir there that is still yours "
                    "alone (~/... or a path with %u)"
                ) from None
            try:
                won = self.fs.nlink(tmp) == 2
            except OSError:
                won = False
            if not won:
                raise PoolError(f"cannot take the lease of {self.dir.name}: {exc}") from None
        finally:
            try:
                self.fs.unlink(tmp)
            except OSError:
                pass
        if won and record.gen % GC_EVERY == 0:
            self._collect(record.gen)
        return won

    def _collect(self, current: int) -> None:
        """Remove generations older than the one before ``current``, once they are old.

        A generation number must never come back: a node that read generation N as
        current and links N+1 late must find N+1 taken, even if N+1 was superseded long
        ago. Only files older than any hook can stall (an hour) are removed.
        """
        cutoff = time.time() - GC_AGE
        for name in self.fs.listdir(self.dir):
            if _is_gen(name) and int(name[len(PREFIX) :]) < current - 1:
                try:
                    if os.lstat(self.dir / name).st_mtime < cutoff:
                        self.fs.unlink(self.dir / name)
                except OSError:
                    pass


def _is_gen(name: str) -> bool:
    return name.startswith(PREFIX) and name[len(PREFIX) :].isdigit()


def read_boot_id() -> str:
    try:
        return read_bounded("/proc/sys/kernel/random/boot_id", 64).decode().strip()
    except OSError:
        return ""
