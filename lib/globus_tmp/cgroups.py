"""Each (node, user) GCP in a cgroup of its own: limits, accounting, a complete witness.

GCP is spawned by the Prolog's child dropped to the job user, so without this it lives in
slurmd's cgroup: under slurmd's limits, invisible to accounting, and a drain's transfer
competes unbounded with the job of whoever the node is allocated to next. Root (never
the user) therefore moves the freshly spawned GCP, and what it already forked, into
``<gcp_cgroup>/<node>-<user>`` with ``gcp_cpu_max`` / ``gcp_memory_max`` applied.

Where:

- **systemd as PID 1** (``/run/systemd/system`` exists): a transient scope
  ``<gcp_cgroup>-<node>-<user>.scope`` in ``<gcp_cgroup>.slice``, created with the pids
  through ``busctl`` (``StartTransientUnit``). systemd owns the cgroup tree there;
  writing into it behind its back would be undone or fought over.
- **cgroup v2** (``<root>/cgroup.controllers``): ``cpu.max``, ``memory.max``; the
  controllers are enabled in ``cgroup.subtree_control`` of the root and the parent.
- **cgroup v1** (hybrid included): a directory in each of the ``cpu``, ``cpuacct``,
  ``memory`` and ``pids`` hierarchies (co-mounted ones once); ``cpu.cfs_quota_us`` /
  ``cpu.cfs_period_us`` and ``memory.limit_in_bytes``.

Anything else (no cgroup file system, no write access, ...) degrades to what happened
before: GCP stays in slurmd's cgroup, and :class:`NodeCgroups` logs one line per hook
run saying why. Nothing here ever fails a hook.

The cgroup is also a witness no process can leave: a helper that called ``setsid`` is
out of GCP's session (what :meth:`ProcessRef.kill_tree` follows) but not out of its
cgroup, so stopping GCP also kills whatever :meth:`CgroupTree.pids` still lists, then
removes the empty cgroup. Only root writes here; a user can neither create nor enter
these cgroups (cgroupfs is root's, mode 0755), and every pid is checked against the
recorded start time and owner just before it is moved or signalled.

This module is never imported on the hooks' hot path (a Prolog joining a running GCP).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .commands import CommandResult, run_bounded
from .config import Config
from .errors import CommandError
from .process import ProcessRef, proc_uid

DEFAULT_ROOT = "/sys/fs/cgroup"
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")
"""The v1 hierarchies a GCP joins: its limits (cpu, memory), accounting, a process count."""
V2_CONTROLLERS = ("cpu", "memory", "pids")
CPU_PERIOD_US = 100_000
_MIN_QUOTA_US = 1_000  # the kernel refuses a smaller quota
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_MOVE_ROUNDS = 5

Runner = Callable[[Sequence[str], float], CommandResult]
"""Runs ``busctl`` with a bound: :func:`~globus_tmp.commands.run_bounded`, or a test's
stand-in for a machine without systemd."""


@dataclass(frozen=True)
class Placement:
    """How a placement went: ``moved`` processes into ``where``; ``problem`` says what
    could not be done (not placed at all when ``where`` is empty)."""

    moved: int
    where: str
    problem: str | None = None


def escape_name(text: str) -> str:
    """``text`` as one cgroup (and unit) name component: anything outside
    ``[A-Za-z0-9._-]`` becomes ``%XX``, and a leading dot is escaped too, so node and user
    names can neither climb (``..``) nor hide (``.x``) nor nest (``/``)."""
    out = "".join(c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in text)
    return "%2E" + out[1:] if out.startswith(".") else out or "%"


def _systemd_escape(text: str) -> str:
    """systemd's unit-name escaping (``systemd-escape``): ``-`` in a slice name means
    nesting, so it is escaped like every character systemd does not allow."""
    out = []
    for i, c in enumerate(text):
        if (c.isascii() and c.isalnum()) or c in ":_" or (c == "." and i > 0):
            out.append(c)
        else:
            out.extend(f"\\x{b:02x}" for b in c.encode())
    return "".join(out)


def _write(path: Path, text: str, append: bool = False) -> None:
    """Write like a shell's ``>`` / ``>>``: what cgroupfs expects (one value per write).

    ``O_CREAT`` changes nothing on cgroupfs (its files exist or cannot be made) and lets
    a test tree in a plain directory take the same writes.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= os.O_APPEND if append else os.O_TRUNC
    fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _read(path: Path) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read(1 << 20)
    except OSError:
        return ""


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


class CgroupTree:
    """The per-(node, user) cgroups below ``parent`` in the tree mounted at ``root``.

    ``root`` and ``systemd`` are parameters so tests can point at a tree in a plain
    directory; ``runner`` runs ``busctl`` (systemd only).
    """

    def __init__(
        self,
        parent: str,
        cpu_max: float = 0.0,
        memory_max: int = 0,
        root: str | Path = DEFAULT_ROOT,
        systemd: bool | None = None,
        runner: Runner | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.parent = parent
        self.cpu_max = cpu_max
        self.memory_max = memory_max
        self.root = Path(root)
        if systemd is None:
            systemd = os.path.isdir("/run/systemd/system") and shutil.which("busctl") is not None
        self.systemd = systemd
        self.runner: Runner = runner or run_bounded
        self.timeout = timeout
        self._layout: tuple[str, list[Path]] | str | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> CgroupTree:
        return cls(cfg.gcp_cgroup, cfg.gcp_cpu_max, cfg.gcp_memory_max)

    # -- where ---------------------------------------------------------------------

    def layout(self) -> tuple[str, list[Path]] | str:
        """(mode, hierarchy roots) with mode ``systemd``, ``v2`` or ``v1``; or why none
        can be used. Found once: the mounts do not change under a hook."""
        if self._layout is None:
            self._layout = self._detect()
        return self._layout

    def _detect(self) -> tuple[str, list[Path]] | str:
        if not self.parent:
            return "gcp_cgroup is empty"
        if not self.root.is_dir():
            return f"no cgroup file system at {self.root}"
        if self.systemd:
            return "systemd", []
        if (self.root / "cgroup.controllers").is_file():
            return "v2", [self.root]
        found: dict[str, Path] = {}
        for name in V1_CONTROLLERS:
            path = self.root / name
            if (path / "cgroup.procs").is_file():
                found.setdefault(os.path.realpath(path), path)  # co-mounted: once
        if not found:
            return (
                f"no cgroup v2 and no cgroup v1 {'/'.join(V1_CONTROLLERS)} hierarchy "
                f"under {self.root}"
            )
        return "v1", list(found.values())

    def name(self, node: str, user: str) -> str:
        """``<node>-<user>``, each part escaped (see :func:`escape_name`)."""
        return f"{escape_name(node)}-{escape_name(user)}"

    def scope(self, node: str, user: str) -> tuple[str, str]:
        """The systemd slice and scope of a GCP."""
        slice_ = _systemd_escape(self.parent) + ".slice"
        return slice_, _systemd_escape(f"{self.parent}-{node}-{user}") + ".scope"

    def paths(self, node: str, user: str) -> list[Path]:
        """The GCP's cgroup directory in each hierarchy (none if cgroups are off)."""
        layout = self.layout()
        if isinstance(layout, str):
            return []
        mode, roots = layout
        if mode == "systemd":
            slice_, scope = self.scope(node, user)
            if (self.root / "cgroup.controllers").is_file():
                return [self.root / slice_ / scope]
            return [
                self.root / h / slice_ / scope
                for h in ("unified", "systemd")
                if (self.root / h).is_dir()
            ]
        leaf = self.name(node, user)
        return [r / escape_name(self.parent) / leaf for r in roots]

    # -- placing -------------------------------------------------------------------

    def place(self, node: str, user: str, uid: int, leader: ProcessRef) -> Placement:
        """Move ``leader`` (GCP, as recorded: pid and start time) and the live processes
        of its session owned by ``uid`` into the GCP's cgroup, creating it with the
        configured limits. Idempotent: call it again to catch a late fork."""
        layout = self.layout()
        if isinstance(layout, str):
            return Placement(0, "", layout)
        mode, roots = layout
        if not leader.alive() or proc_uid(leader.pid) != uid:
            return Placement(0, "", None)  # gone (or not the user's): nothing to move
        if mode == "systemd":
            return self._place_systemd(node, user, uid, leader)
        try:
            dirs, problems = self._create(mode, roots, node, user)
        except OSError as exc:
            return Placement(0, "", f"cannot create cgroup {self.name(node, user)}: {_why(exc)}")
        try:
            moved = self._move(leader, uid, [d / "cgroup.procs" for d in dirs])
        except OSError as exc:
            return Placement(0, "", f"cannot move pid {leader.pid} into {dirs[0]}: {_why(exc)}")
        return Placement(moved, str(dirs[0]), "; ".join(problems) or None)

    def _create(
        self, mode: str, roots: list[Path], node: str, user: str
    ) -> tuple[list[Path], list[str]]:
        """The leaf directories (created) and what of the limits could not be applied."""
        parent, leaf = escape_name(self.parent), self.name(node, user)
        problems: list[str] = []
        dirs = []
        for root in roots:
            for path in (root / parent, root / parent / leaf):
                try:
                    os.mkdir(path, 0o755)
                except FileExistsError:
                    if not path.is_dir():
                        raise
            dirs.append(root / parent / leaf)
        if mode == "v2":
            problems += self._limits_v2(roots[0], dirs[0])
        else:
            problems += self._limits_v1(roots, dirs)
        return dirs, problems

    def _limits_v2(self, root: Path, leaf: Path) -> list[str]:
        """Enable the controllers down to ``leaf`` and write ``cpu.max``/``memory.max``.
        Limits are written even when 0 (``max``): a changed config takes effect."""
        available = set(_read(root / "cgroup.controllers").split())
        enable = [c for c in V2_CONTROLLERS if c in available]
        problems: list[str] = []
        try:
            for path in (root, leaf.parent):
                if enable:
                    _write(path / "cgroup.subtree_control", " ".join(f"+{c}" for c in enable))
        except OSError as exc:  # e.g. EBUSY: a non-root cgroup with processes of its own
            enable = []
            problems.append(f"controllers not enabled below {path}: {_why(exc)}")
        wanted = {"cpu": self.cpu_max > 0, "memory": self.memory_max > 0}
        writes = {
            "cpu": ("cpu.max", f"{self._quota_us()} {CPU_PERIOD_US}" if wanted["cpu"] else
                    f"max {CPU_PERIOD_US}"),
            "memory": ("memory.max", str(self.memory_max) if wanted["memory"] else "max"),
        }  # fmt: skip
        for ctrl, (file, value) in writes.items():
            if ctrl not in enable:
                if wanted[ctrl]:
                    problems.append(f"gcp_{ctrl}_max not applied: no {ctrl} controller")
                continue
            try:
                _write(leaf / file, value)
            except OSError as exc:
                if wanted[ctrl]:
                    problems.append(f"gcp_{ctrl}_max not applied: {file}: {_why(exc)}")
        return problems

    def _limits_v1(self, roots: list[Path], dirs: list[Path]) -> list[str]:
        problems: list[str] = []
        cpu = memory = None
        for root, leaf in zip(roots, dirs):
            if (root / "cpu.cfs_quota_us").is_file():
                cpu = leaf
            if (root / "memory.limit_in_bytes").is_file():
                memory = leaf
        if cpu is None:
            if self.cpu_max > 0:
                problems.append("gcp_cpu_max not applied: no cgroup v1 cpu hierarchy")
        else:
            try:
                _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                quota = self._quota_us() if self.cpu_max > 0 else -1
                _write(cpu / "cpu.cfs_quota_us", str(quota))
            except OSError as exc:
                if self.cpu_max > 0:
                    problems.append(f"gcp_cpu_max not applied: {_why(exc)}")
        if memory is None:
            if self.memory_max > 0:
                problems.append("gcp_memory_max not applied: no cgroup v1 memory hierarchy")
        else:
            try:
                limit = self.memory_max if self.memory_max > 0 else -1
                _write(memory / "memory.limit_in_bytes", str(limit))
            except OSError as exc:
                if self.memory_max > 0:
                    problems.append(f"gcp_memory_max not applied: {_why(exc)}")
        return problems

    def _quota_us(self) -> int:
        return max(round(self.cpu_max * CPU_PERIOD_US), _MIN_QUOTA_US)

    def _move(self, leader: ProcessRef, uid: int, procs_files: list[Path]) -> int:
        """Move the leader first (what it forks from then on is born inside), then its
        session; again until a round finds nothing new (a fork during the move)."""
        moved: set[ProcessRef] = set()
        for _ in range(_MOVE_ROUNDS):
            todo = [leader] if not moved else []
            todo += [m for m in leader.members(uid) if m not in moved and m != leader]
            if not todo:
                break
            for ref in todo:
                if not ref.alive():  # the pid must still name this process (start time)
                    continue
                try:
                    for path in procs_files:
                        _write(path, f"{ref.pid}\n", append=True)
                except OSError as exc:
                    if exc.errno == errno.ESRCH or not ref.alive():
                        continue  # exited meanwhile
                    raise
                moved.add(ref)
        return len(moved)

    def _place_systemd(self, node: str, user: str, uid: int, leader: ProcessRef) -> Placement:
        slice_, scope = self.scope(node, user)
        refs = [leader] + [m for m in leader.members(uid) if m != leader]
        pids = [str(r.pid) for r in refs if r.alive()]
        props = [["PIDs", "au", str(len(pids)), *pids], ["Slice", "s", slice_]]
        props.append(["CollectMode", "s", "inactive-or-failed"])
        if self.cpu_max > 0:
            props.append(["CPUQuotaPerSecUSec", "t", str(round(self.cpu_max * 1_000_000))])
        if self.memory_max > 0:
            props.append(["MemoryMax", "t", str(self.memory_max)])
        manager = ["org.freedesktop.systemd1", "/org/freedesktop/systemd1"]
        manager += ["org.freedesktop.systemd1.Manager"]
        argv = ["busctl", "call", *manager, "StartTransientUnit", "ssa(sv)a(sa(sv))"]
        argv += [scope, "fail", str(len(props)), *(w for p in props for w in p), "0"]
        try:
            res = self.runner(argv, self.timeout)
            if res.returncode == 0:
                return Placement(len(pids), f"{slice_}/{scope}", None)
            # a scope left by a start that died: join it. Whether it exists is asked
            # (GetUnit), not read from busctl's message.
            refused = res
            get_unit = ["busctl", "call", *manager, "GetUnit", "s", scope]
            if self.runner(get_unit, self.timeout).returncode == 0:
                attach = ["busctl", "call", *manager, "AttachProcessesToUnit", "ssau", scope, "/"]
                res = self.runner([*attach, str(len(pids)), *pids], self.timeout)
                if res.returncode == 0:
                    return Placement(len(pids), f"{slice_}/{scope}", None)
                refused = res
        except CommandError as exc:
            return Placement(0, "", f"busctl StartTransientUnit {scope}: {exc}")
        said = refused.last_line() if (refused.stderr or refused.stdout).strip() else ""
        why = said or f"exit {refused.returncode}"
        return Placement(0, "", f"systemd refused scope {scope}: {why}")

    # -- finding, killing, removing ------------------------------------------------

    def pids(self, node: str, user: str) -> list[int]:
        """Every process in the GCP's cgroup (all hierarchies): its helpers even when
        they left GCP's session. Empty when there is no such cgroup."""
        found: set[int] = set()
        for path in self.paths(node, user):
            for word in _read(path / "cgroup.procs").split():
                if word.isdigit() and int(word) > 0:  # 0: a pid of another pid namespace
                    found.add(int(word))
        return sorted(found)

    def kill(self, node: str, user: str, uid: int, grace: float = 2.0) -> int:
        """SIGTERM what the cgroup holds of ``uid``, SIGKILL what is left after
        ``grace``; how many processes were signalled."""
        signalled: set[int] = set()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            victims = self._owned(node, user, uid)
            for ref in victims:
                ref.signal(sig)
            signalled |= {v.pid for v in victims}
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(v.alive() for v in victims):
                time.sleep(0.05)
        return len(signalled)

    def _owned(self, node: str, user: str, uid: int) -> list[ProcessRef]:
        refs = []
        for pid in self.pids(node, user):
            try:
                ref = ProcessRef.of(pid)
            except ProcessLookupError:
                continue
            if proc_uid(pid) == uid and ref.alive():
                refs.append(ref)
        return refs

    def remove(self, node: str, user: str) -> bool:
        """Remove the GCP's cgroup if no process is left in it; True if none is left.
        The parent stays: other users' cgroups are created in it concurrently. systemd
        removes a scope itself when its last process exits."""
        layout = self.layout()
        if isinstance(layout, str):
            return True
        if layout[0] == "systemd":
            return not self.pids(node, user)
        for path in self.paths(node, user):
            if not path.is_dir():
                continue
            if _read(path / "cgroup.procs").split():
                return False
            try:
                os.rmdir(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno != errno.ENOTEMPTY:
                    return False  # cgroupfs says EBUSY while a process is in it
                # ENOTEMPTY comes from a plain directory, never from cgroupfs (whose
                # control files do not count): a tree standing in for one (tests)
                for entry in path.iterdir():
                    if entry.is_file() and not entry.is_symlink():
                        entry.unlink()
                os.rmdir(path)
        return True


class NodeCgroups:
    """The cgroups of one node's GCPs as the lifecycle uses them: never raises, and says
    at most once per hook run (one ``log`` call) why GCP stays in slurmd's cgroup."""

    def __init__(self, cfg: Config, node: str, log: Callable[[str], None],
                 tree: CgroupTree | None = None) -> None:  # fmt: skip
        self.node = node
        self.log = log
        self.tree = tree or CgroupTree.from_config(cfg)
        self.enabled = bool(cfg.gcp_cgroup)
        self._told = False

    def _tell(self, message: str) -> None:
        if not self._told:
            self._told = True
            self.log(message)

    def place(self, user: str, uid: int, leader: ProcessRef) -> Placement | None:
        """Put the user's GCP (``leader``, as recorded) into its cgroup."""
        if not self.enabled:
            return None
        try:
            placed = self.tree.place(self.node, user, uid, leader)
        except Exception as exc:  # a hook never fails for this
            placed = Placement(0, "", f"{type(exc).__name__}: {exc}")
        if placed.problem and not placed.where:
            self._tell(f"GCP stays in slurmd's cgroup: {placed.problem}")
        elif placed.problem:
            self._tell(f"GCP in cgroup {placed.where}, but {placed.problem}")
        return placed

    def cleanup(self, user: str, uid: int, kill: bool = True) -> int:
        """GCP is stopped (or given up): kill what its cgroup still holds (unless not
        ``kill``), remove the cgroup if empty; how many processes were killed."""
        if not self.enabled:
            return 0
        try:
            killed = self.tree.kill(self.node, user, uid) if kill else 0
            if not kill and self.tree.pids(self.node, user):
                return 0  # in use: left as it is
            if not self.tree.remove(self.node, user):
                self._tell(f"cgroup of {user}'s GCP not removed: processes are left in it")
        except Exception as exc:
            self._tell(f"cgroup of {user}'s GCP not cleaned up: {type(exc).__name__}: {exc}")
            return 0
        return killed
