"""The user's pool of GCP endpoints, and which node holds which.

A GCP config directory must never run on two nodes at once (both would claim one
endpoint). The pool lives in ``user_dir`` (normally the shared home); each entry carries
its own lease (:mod:`globus_tmp.leases`), taken by an atomic ``link`` rather than under a
shared lock, so leasing works on any shared file system and costs O(1) expected work per
node: a node probes entries starting at a slot of its own (its index in the job's node
list, or a hash of its name), so the nodes of a wide job mostly find distinct entries at
the first try. A node remembers which entry it holds (``held/<cluster>%<node>``), so it
finds its own lease again in one read.

A lease held by another node is reclaimed only on proof that its GCP is not running
(:class:`LeaseProver`): the holder released it, or its node went down or rebooted since,
or Globus sees the endpoint disconnected while the holder node runs no job of the user
and is not draining. A lease that cannot be proven free stays taken.

Everything here runs **as the user** (see :mod:`globus_tmp.privileges`): these are the
user's files, and a symlink planted among them can only reach what the user may.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .boundedio import STATE, read_text_bounded
from .errors import GlobusTmpError, NoPoolError, PoolError, PoolExhaustedError
from .leases import EntryLease, FsOps, Holder, LeaseRecord
from .nodestate import write_atomic


@dataclass(frozen=True)
class PoolEntry:
    """One set-up GCP config directory (the ``-dir``) in the pool."""

    name: str
    config_dir: Path
    endpoint_id: str


class LeaseProver(Protocol):
    """Decides whether a lease held by another node is provably free."""

    def stale(self, record: LeaseRecord, entry: PoolEntry) -> str | None:
        """Why the holder's GCP is provably not running; None when it cannot be proven."""


class EndpointPool:
    """The pool under ``root`` (``user_dir``): entries, their leases, config-paths."""

    def __init__(self, root: Path, fs: FsOps | None = None) -> None:
        self.root = root
        self.fs = fs or FsOps()

    @property
    def endpoints_dir(self) -> Path:
        return self.root / "endpoints"

    @property
    def registry_path(self) -> Path:
        """The single-file registry of earlier versions, migrated on first use."""
        return self.root / "registry.json"

    # -- entries -----------------------------------------------------------------

    def names(self) -> list[str]:
        """Entry names (one directory listing; no entry is opened)."""
        try:
            return sorted(n for n in self.fs.listdir(self.endpoints_dir) if not n.startswith("."))
        except FileNotFoundError:
            return []
        except NotADirectoryError:
            raise PoolError(f"{self.endpoints_dir} is not a directory") from None

    def _entry(self, name: str) -> PoolEntry | None:
        """The entry if it is set up (``lta/client-id.txt`` holds an id), else None."""
        config_dir = self.endpoints_dir / name
        try:
            endpoint_id = self.fs.read(config_dir / "lta" / "client-id.txt").decode().strip()
        except (OSError, UnicodeDecodeError):
            return None
        return PoolEntry(name, config_dir, endpoint_id) if endpoint_id else None

    def entries(self) -> list[PoolEntry]:
        """Set-up config dirs, by name (reads every entry: for listings, not for hooks)."""
        return [e for e in map(self._entry, self.names()) if e is not None]

    def entry(self, name: str) -> PoolEntry:
        found = self._entry(name) if name in self.names() else None
        if found is None:
            raise PoolError(f"no pool entry '{name}' in {self.endpoints_dir}")
        return found

    def lease_of(self, name: str) -> EntryLease:
        return EntryLease(self.endpoints_dir / name, self.fs)

    # -- leases ------------------------------------------------------------------

    def leases(self) -> dict[str, LeaseRecord]:
        """Current held leases, by entry name (reads every entry: for listings)."""
        out = {}
        for name in self.names():
            try:
                record = self.lease_of(name).current()
            except (OSError, PoolError):
                continue
            if record is not None and record.held:
                out[name] = record
        return out

    def lease(
        self,
        user: str,
        me: Holder,
        prover: LeaseProver,
        slot: int | None = None,
        prefer: str | None = None,
    ) -> tuple[PoolEntry, str | None]:
        """Lease an entry to ``me``; returns it and a note worth logging, if any.

        ``prefer`` names an entry whose GCP already runs on this node (taken over after
        lost state): it is leased here whatever its record says. Otherwise the entry
        this node already holds comes first (a GCP that died restarts from the same
        config dir; not one it keeps for a task to cancel, which Globus would resume),
        then a free entry probed from ``slot``, then one whose holder is provably not
        running it.
        """
        note = self._migrate_registry(me)
        names = self.names()
        if not names:
            raise NoPoolError(
                f"no endpoint pool: {self.endpoints_dir} has no set-up GCP config dir; "
                "add one with 'globus-tmp-endpoint adopt ~/.globusonline'"
            )
        if prefer in names:
            entry = self._entry(prefer)
            if entry is not None:
                lease = self.lease_of(prefer)
                record = lease.current()
                if record is None or not (record.held and me.same_node(record)):
                    self._take_anyway(lease, record, me)
                    if record is not None and record.held:
                        note = _join(note, f"took {prefer} from {record.owner}: its GCP runs here")
                self._remember(me, prefer)
                return entry, note
        own = self._remembered(me)
        order = _probe_order(names, me.owner, slot)
        if own in names:
            order.remove(own)
            order.insert(0, own)
        held: list[tuple[str, LeaseRecord]] = []
        unset = 0
        for name in order:
            lease = self.lease_of(name)
            record = lease.current()
            if record is not None and record.held:
                if me.same_node(record) and not record.held_for_cancel(time.time()):
                    entry = self._entry(name)
                    if entry is not None:
                        self._remember(me, name)
                        return entry, note
                held.append((name, record))
                continue
            entry = self._entry(name)
            if entry is None:
                unset += 1
                continue
            if lease.take(record, me) is not None:
                self._remember(me, name)
                return entry, note
            taken = lease.current()  # another node won this generation
            if taken is not None:
                held.append((name, taken))
        for name, record in held:
            entry = self._entry(name)
            if entry is None:
                continue
            why = prover.stale(record, entry)
            if why and self.lease_of(name).take(record, me) is not None:
                self._remember(me, name)
                return entry, _join(note, f"reclaimed {name} from {record.owner} ({why})")
        if unset == len(names):
            raise NoPoolError(
                f"no endpoint pool: no entry in {self.endpoints_dir} is set up (no "
                "lta/client-id.txt); run 'globus-tmp-endpoint setup' or 'adopt DIR'"
            )
        busy = "; ".join(f"{n} {r.describe()}" for n, r in held[:4])
        more = f"; and {len(held) - 4} more" if len(held) > 4 else ""
        raise PoolExhaustedError(
            f"endpoint pool exhausted: all {len(names)} endpoint(s) of {user} are held by "
            f"other nodes and none is provably free ({busy}{more}); add one with "
            "'globus-tmp-endpoint setup --count N' or 'adopt DIR'"
        )

    def release(self, name: str, me: Holder) -> bool:
        """Give back ``name`` if ``me`` holds it; True if a lease was given back."""
        if name not in self.names():
            return False
        released = self.lease_of(name).release(me)
        if self._remembered(me) == name:
            try:
                self.fs.unlink(self._pointer(me))
            except OSError:
                pass
        return released

    def mark(self, name: str, me: Holder, phase: str, drain_until: float | None) -> bool:
        """Tell other nodes our GCP of ``name`` is ``phase`` (draining until T)."""
        return name in self.names() and self.lease_of(name).update(me, phase, drain_until)

    def _take_anyway(self, lease: EntryLease, record: LeaseRecord | None, me: Holder) -> None:
        for _ in range(5):
            if lease.take(record, me) is not None:
                return
            record = lease.current()
            if record is not None and record.held and me.same_node(record):
                return
        raise PoolError(f"cannot take the lease of {lease.dir.name}: it keeps changing")

    def _pointer(self, me: Holder) -> Path:
        return self.root / "held" / me.owner.replace("%", "%25").replace("/", "%")

    def _remembered(self, me: Holder) -> str | None:
        try:
            return self.fs.read(self._pointer(me)).decode().strip() or None
        except (OSError, UnicodeDecodeError):
            return None

    def _remember(self, me: Holder, name: str) -> None:
        path = self._pointer(me)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(path, name, 0o600)
        except OSError:
            pass  # only a hint: without it the node probes for its lease

    def _migrate_registry(self, me: Holder) -> str | None:
        """Turn an earlier version's ``registry.json`` into per-entry leases (idempotent)."""
        path = self.registry_path
        try:
            raw = read_text_bounded(path, STATE)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return self._set_aside(f"registry {path} was unreadable ({exc})")
        try:
            data = json.loads(raw)
            if data.get("version") != 1:
                raise ValueError("unknown version")
            old = {str(n): (str(v["node"]), float(v["since"])) for n, v in data["leases"].items()}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return self._set_aside(f"registry {path} was unreadable ({exc})")
        names = set(self.names())
        for name, (node, since) in old.items():
            if name in names and self.lease_of(name).current() is None:
                self.lease_of(name).take(None, Holder(me.cluster, node), since)
        try:
            os.replace(path, path.with_name(f"registry.json.migrated-{int(time.time())}"))
        except OSError:
            pass
        return f"migrated {len(old)} lease(s) from {path} to per-entry leases"

    def _set_aside(self, why: str) -> str:
        aside = self.registry_path.with_name(f"registry.json.corrupt-{int(time.time())}")
        try:
            os.replace(self.registry_path, aside)
        except OSError:
            return f"{why}; could not move it aside"
        return f"{why}; kept as {aside}"

    # -- what GCP exposes ---------------------------------------------------------

    @staticmethod
    def write_config_paths(entry: PoolEntry, paths: Iterable[str]) -> None:
        """Write ``lta/config-paths``: each path read-write, never shared.

        GCP parses the file as CSV and reads it only at start; without it GCP would
        expose the whole home directory read-write.
        """
        lines = "".join(f"{_escape_path(p)},0,1\n" for p in paths)
        write_atomic(entry.config_dir / "lta" / "config-paths", lines, 0o600)

    def adopt(self, source: Path, name: str | None) -> PoolEntry:
        """Move a set-up GCP config dir (e.g. ``~/.globusonline``) into the pool."""
        source = source.expanduser()
        id_file = source / "lta" / "client-id.txt"
        if not id_file.is_file():
            raise GlobusTmpError(
                f"{source} is not a set-up GCP config dir (no lta/client-id.txt); "
                "run 'globusconnectpersonal -setup' for it first"
            )
        name = check_entry_name(name or _default_name(source))
        self.endpoints_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self.endpoints_dir / name
        if target.exists():
            raise GlobusTmpError(f"pool entry {target} exists already; pick another --name")
        if self.root.resolve() in source.resolve().parents:
            raise GlobusTmpError(f"{source} is inside the pool already")
        shutil.move(str(source), str(target))
        os.chmod(target, 0o700)
        return self.entry(name)


ENTRY_NAME_MAX = 32
_ENTRY_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def check_entry_name(name: str) -> str:
    """``name`` if it may name a pool entry, else one line naming the fix. The name
    travels far (node state, hook log, ``globus-tmp-admin status`` on an admin's
    terminal, other nodes' views): a short, plain word, never a path, a hidden file
    or an escape sequence."""
    plain = name[:1].isascii() and name[:1].isalnum() and set(name) <= _ENTRY_NAME_CHARS
    if plain and len(name) <= ENTRY_NAME_MAX:
        return name
    raise GlobusTmpError(
        f"{name!r} is not a valid pool entry name: use 1 to {ENTRY_NAME_MAX} letters, "
        "digits, '.', '_' or '-', starting with a letter or digit; pass --name NAME"
    )


def _default_name(source: Path) -> str:
    base = source.name.lstrip(".")
    return "globusonline" if base in ("", "globusonline") else base


def _escape_path(path: str) -> str:
    return path.replace("%", "%25").replace(",", "%2C")


def _join(a: str | None, b: str) -> str:
    return f"{a}; {b}" if a else b


def _probe_order(names: list[str], owner: str, slot: int | None) -> list[str]:
    """The order a node tries entries in.

    With a slot (the node's index in its job, offset by the job) the nodes of one job
    start at distinct entries and walk forward. Without one, start and stride both come
    from a hash of the node's name (double hashing), so nodes that collide once part
    ways instead of queueing behind each other.
    """
    n = len(names)
    digest = hashlib.blake2b(owner.encode(), digest_size=8).digest()
    if slot is not None:
        start, stride = slot % n, 1
    else:
        start = int.from_bytes(digest[:4], "big") % n
        stride = 1 + int.from_bytes(digest[4:], "big") % max(n - 1, 1)
        while math.gcd(stride, n) != 1:
            stride += 1
    return [names[(start + i * stride) % n] for i in range(n)]
