"""The user's pool of GCP endpoints and the registry of which node holds which.

A GCP config directory must never run on two nodes at once (both would claim one
endpoint). The pool lives in ``user_dir`` (normally the shared home), so every node
sees the same registry; leases are taken and given back under a file lock there.

Everything here runs **as the user** (see :mod:`globus_tmp.privileges`): these are the
user's files, and a symlink planted among them can only reach what the user may.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .boundedio import SMALL, STATE, read_text_bounded
from .errors import GlobusTmpError, NoPoolError, PoolError, PoolExhaustedError
from .locks import FlockFile, LockTimeout
from .nodestate import write_atomic
from .privileges import SAFE_PATH

REGISTRY_VERSION = 1


@dataclass(frozen=True)
class PoolEntry:
    """One set-up GCP config directory (the ``-dir``) in the pool."""

    name: str
    config_dir: Path
    endpoint_id: str


@dataclass(frozen=True)
class Lease:
    """Which node holds a pool entry, since when."""

    name: str
    node: str
    since: float


class NodeActivity(Protocol):
    """Which nodes still run jobs of this user (to reclaim leases of nodes that don't)."""

    def nodes_with_jobs(self, user: str) -> set[str] | None:
        """The nodes, or None when it cannot be known (then nothing is reclaimed)."""


class SqueueNodeActivity:
    """Asks Slurm (``squeue``) which nodes run the user's jobs; used on the cold path only."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout

    def nodes_with_jobs(self, user: str) -> set[str] | None:
        squeue = shutil.which("squeue", path=SAFE_PATH)
        scontrol = shutil.which("scontrol", path=SAFE_PATH)
        if not squeue or not scontrol:
            return None
        try:
            lists = self._lines(squeue, "-h", f"--user={user}", "--states=R,CG,CF,S", "--format=%N")
            nodes: set[str] = set()
            for hostlist in set(lists):  # "n[1-3]": expanded by Slurm itself
                nodes.update(self._lines(scontrol, "show", "hostnames", hostlist))
            return nodes
        except (OSError, subprocess.SubprocessError):
            return None

    def _lines(self, *argv: str) -> list[str]:
        out = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=self.timeout,
            check=True,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        ).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]


class EndpointPool:
    """The pool under ``root`` (``user_dir``): entries, registry, config-paths."""

    def __init__(self, root: Path, lock_timeout: float = 20.0) -> None:
        self.root = root
        self.lock_timeout = lock_timeout

    @property
    def endpoints_dir(self) -> Path:
        return self.root / "endpoints"

    @property
    def registry_path(self) -> Path:
        return self.root / "registry.json"

    # -- entries -----------------------------------------------------------------

    def entries(self) -> list[PoolEntry]:
        """Set-up config dirs, by name; a dir without ``lta/client-id.txt`` is not one."""
        try:
            children = sorted(self.endpoints_dir.iterdir())
        except FileNotFoundError:
            return []
        except NotADirectoryError:
            raise PoolError(f"{self.endpoints_dir} is not a directory") from None
        found = []
        for child in children:
            id_file = child / "lta" / "client-id.txt"
            try:
                endpoint_id = read_text_bounded(id_file, SMALL).strip()
            except OSError:
                continue
            if endpoint_id and child.is_dir():
                found.append(PoolEntry(child.name, child, endpoint_id))
        return found

    def entry(self, name: str) -> PoolEntry:
        for entry in self.entries():
            if entry.name == name:
                return entry
        raise PoolError(f"no pool entry '{name}' in {self.endpoints_dir}")

    # -- registry ----------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = FlockFile(self.root / "registry.lock")
        try:
            lock.acquire(self.lock_timeout)
        except LockTimeout:
            raise PoolError(f"waited {self.lock_timeout:.0f} s for {lock.path}") from None
        try:
            yield
        finally:
            lock.release()

    def leases(self) -> dict[str, Lease]:
        """Current leases (read without the lock: the file is replaced atomically)."""
        return self._read_registry()[0]

    def _read_registry(self) -> tuple[dict[str, Lease], str | None]:
        """Leases, and a note when the registry was unreadable and was set aside."""
        try:
            raw = read_text_bounded(self.registry_path, STATE)
        except FileNotFoundError:
            return {}, None
        except OSError as exc:
            return {}, f"registry {self.registry_path} was unreadable ({exc})"
        try:
            data = json.loads(raw)
            if data.get("version") != REGISTRY_VERSION:
                raise ValueError("unknown version")
            return {
                name: Lease(name, str(v["node"]), float(v["since"]))
                for name, v in data["leases"].items()
            }, None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return {}, f"registry {self.registry_path} was unreadable ({exc})"

    def _write_registry(self, leases: dict[str, Lease]) -> None:
        doc: dict[str, Any] = {
            "version": REGISTRY_VERSION,
            "leases": {
                n: {"node": lease.node, "since": lease.since} for n, lease in leases.items()
            },
        }
        write_atomic(self.registry_path, json.dumps(doc, indent=1, sort_keys=True), 0o600)

    def _set_aside_corrupt(self) -> Path:
        aside = self.registry_path.with_name(f"registry.json.corrupt-{int(time.time())}")
        try:
            os.replace(self.registry_path, aside)
        except OSError:
            # e.g. a directory or a mount in the way: the next write fails with its reason
            return self.registry_path
        return aside

    def lease(
        self, user: str, node: str, activity: NodeActivity, prefer: str | None = None
    ) -> tuple[PoolEntry, str | None]:
        """Lease an entry to ``node``; returns it and a note worth logging, if any.

        ``prefer`` names an entry that already runs on this node (an instance taken
        over after lost state): it is leased here whatever the registry said. Otherwise
        the node's own earlier lease comes first (a GCP that died is restarted from the
        same config dir), then a free entry, then one whose node no longer runs jobs
        of the user (asking Slurm only then).
        """
        with self._locked():
            leases, note = self._read_registry()
            if note:
                aside = self._set_aside_corrupt()
                note = f"{note}; kept as {aside} and rebuilt empty"
            entries = self.entries()
            if not entries:
                raise NoPoolError(
                    f"no endpoint pool: {self.endpoints_dir} has no set-up GCP config dir; "
                    "add one with 'globus-tmp-endpoint adopt ~/.globusonline'"
                )
            by_name = {e.name: e for e in entries}
            leases = {n: lease for n, lease in leases.items() if n in by_name}
            chosen = by_name.get(prefer) if prefer else None
            if chosen is not None:
                leases = {n: le for n, le in leases.items() if le.node != node}
            else:
                chosen = next((by_name[n] for n, le in leases.items() if le.node == node), None)
            if chosen is None:
                chosen = next((e for e in entries if e.name not in leases), None)
            if chosen is None:
                busy = activity.nodes_with_jobs(user)
                if busy is not None:
                    chosen = next(
                        (by_name[n] for n, le in sorted(leases.items()) if le.node not in busy),
                        None,
                    )
                    if chosen is not None:
                        stale = leases[chosen.name]
                        note = _join(
                            note, f"reclaimed {chosen.name} from {stale.node} (no job there)"
                        )
            if chosen is None:
                held = ", ".join(f"{n} -> {le.node}" for n, le in sorted(leases.items()))
                raise PoolExhaustedError(
                    f"endpoint pool exhausted: all {len(entries)} endpoint(s) of {user} are in use "
                    f"on other nodes ({held}); add one with 'globus-tmp-endpoint adopt DIR'"
                )
            leases[chosen.name] = Lease(chosen.name, node, time.time())
            self._write_registry(leases)
            return chosen, note

    def release(self, name: str, node: str) -> bool:
        """Give back ``name`` if ``node`` holds it; True if a lease was removed."""
        with self._locked():
            leases, note = self._read_registry()
            if note:
                self._set_aside_corrupt()
            lease = leases.get(name)
            if lease is None or lease.node != node:
                if note:
                    self._write_registry(leases)
                return False
            del leases[name]
            self._write_registry(leases)
            return True

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
        name = name or _default_name(source)
        if not name or "/" in name or name.startswith("."):
            raise GlobusTmpError(f"'{name}' is not a valid pool entry name; pass --name NAME")
        self.endpoints_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self.endpoints_dir / name
        if target.exists():
            raise GlobusTmpError(f"pool entry {target} exists already; pick another --name")
        if self.root.resolve() in source.resolve().parents:
            raise GlobusTmpError(f"{source} is inside the pool already")
        shutil.move(str(source), str(target))
        os.chmod(target, 0o700)
        return self.entry(name)


def _default_name(source: Path) -> str:
    base = source.name.lstrip(".")
    return "globusonline" if base in ("", "globusonline") else base


def _escape_path(path: str) -> str:
    return path.replace("%", "%25").replace(",", "%2C")


def _join(a: str | None, b: str) -> str:
    return f"{a}; {b}" if a else b
