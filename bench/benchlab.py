"""What the benchmarks of the real hooks share (``hot_paths.py``, ``job_start.py``).

They run the installed console scripts next to the interpreter that runs them, as root,
with the environment slurmd gives a Prolog or Epilog, against the GCP emulator
(``tests/emulators``), for the bench user ``gtbench``:

- :class:`Lab`: the user with a pool of entries in ``~/.globus-tmp-bench``, a copy of
  the emulators and the configuration under ``/run/globus-tmp-bench`` (not ``/tmp``: a
  simulated node has a ``/tmp`` of its own), GCP wrappers that set the emulator's
  ``GCP_EMULATOR_*`` settings (``tests/hooksite.py`` writes them, as for the tests), and
  :meth:`Lab.hook` to run a hook and measure it with ``wait4``: wall time, CPU of the
  hook and of the children it waited for (its steps as the user), peak RSS. Keys the
  installed version does not know are left out of the file (it refuses unknown keys),
  and :attr:`Lab.skipped` says which, so the bench runs on old and new versions alike.
  :meth:`Lab.close` ends every process the bench started (hooks, drains, watchers, GCP:
  found by the bench's config path in their environment and by the bench user's uid),
  removes the GCPs' cgroups, the pool and the state, whatever happened before.
- :func:`private_mounts`: the bench in a mount namespace of its own, so what it mounts
  (a simulated node's ``/tmp``, the hung home) is seen by nobody else and goes away with
  its last process. :func:`node_tmp` (a fresh namespace with a tmpfs on ``/tmp``: GCP's
  control socket ``/tmp/globusconnect_<uid>.sock`` is per host, so nodes simulated on
  one host need a ``/tmp`` each) and :func:`enter_node` (the namespace of a process that
  runs there) are ``preexec_fn`` for a hook.
- :class:`HungHome`: the user's home on a mount that hangs every look-up below it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
USER = "gtbench"
SCRATCH = Path("/run/globus-tmp-bench")
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "emulators")]  # hooksite, emulators
CGROUP = "globus-tmp-bench"
"""``gcp_cgroup`` of the bench: removed whole at the end, never another run's."""

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_REC, _MS_PRIVATE = 2, 4, 1 << 14, 1 << 18
_MNT_DETACH = 2


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def bench_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", USER], check=True)
        return pwd.getpwnam(USER)


def need_root() -> bool:
    if os.geteuid() != 0:
        print("run as root (the hooks run as root under slurmd)", file=sys.stderr)
        return False
    return True


def pct(values: list[float], p: float) -> float:
    """The ``p`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def verdict(ok: bool) -> str:
    return "ok" if ok else "OVER"


# -- processes -------------------------------------------------------------------


class Run:
    """One finished (or killed) process: wall seconds, CPU seconds of it and of the
    children it waited for (``wait4``'s rusage), its own peak RSS in KiB, exit code."""

    __slots__ = ("code", "cpu", "killed", "rss", "wall")

    def __init__(self, wall: float, cpu: float, rss: int, code: int, killed: bool) -> None:
        self.wall, self.cpu, self.rss, self.code, self.killed = wall, cpu, rss, code, killed

    def check(self, what: str) -> Run:
        if self.killed:
            raise SystemExit(f"{what}: killed after its bound")
        if self.code != 0:
            raise SystemExit(f"{what} exited {self.code}")
        return self


def start(
    argv: list[str],
    env: dict[str, str],
    preexec: Callable[[], None] | None = None,
    user: pwd.struct_passwd | None = None,
) -> subprocess.Popen[bytes]:
    """``argv`` in a session of its own (as slurmd runs a hook), output discarded;
    as ``user`` (no supplementary groups) if given."""
    ids: dict[str, Any] = {}
    if user is not None:
        ids = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    began = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=preexec,
        **ids,
    )
    proc.returncode = 0  # reaped by reap(): Popen must not wait for it again
    _began[proc.pid] = began
    return proc


def reap(pid: int = -1) -> tuple[int, Run]:
    """``wait4`` for ``pid`` (-1: any child): which ended, and its :class:`Run` with the
    wall time since :func:`start` began it."""
    got, status, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    wall = time.perf_counter() - _began.pop(got, time.perf_counter())
    return got, Run(wall, cpu, int(usage.ru_maxrss), code, code < 0)


_began: dict[int, float] = {}
"""When :func:`start` began each process not reaped yet."""


def run(
    argv: list[str],
    env: dict[str, str],
    preexec: Callable[[], None] | None = None,
    timeout: float | None = None,
    user: pwd.struct_passwd | None = None,
) -> Run:
    """Run ``argv`` to its end; at ``timeout`` its process group is killed."""
    proc = start(argv, env, preexec, user)
    timer = None
    if timeout is not None:
        timer = threading.Timer(timeout, _kill_group, (proc.pid,))
        timer.start()
    try:
        return reap(proc.pid)[1]
    finally:
        if timer is not None:
            timer.cancel()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def bare_start(runs: int) -> float:
    """Median wall seconds of ``python -c pass`` from the benches' interpreter, with a
    clean environment like the hooks': the yardstick of every ratio."""
    return statistics.median(run([sys.executable, "-c", "pass"], {}).wall for _ in range(runs))


def sample(measure: Callable[[], Run], runs: int, bound: float | None = None) -> list[Run]:
    """``runs`` runs of ``measure``; stops after a run slower than ``bound`` seconds (a
    path that hangs is shown by one run, not waited for ``runs`` times)."""
    out = []
    for _ in range(runs):
        out.append(measure())
        if bound is not None and out[-1].wall > bound:
            break
    return out


# -- mount namespaces --------------------------------------------------------------


def private_mounts() -> None:
    """Move this process into a mount namespace of its own (before any thread starts):
    its mounts and those of its children are nobody else's, and vanish with them."""
    _check(_libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "mount --make-rprivate /")


def node_tmp() -> None:
    """``preexec_fn``: a namespace with a fresh ``/tmp``, a simulated node's. What the
    hook starts there (GCP, a drain, a watcher) stays in it; it ends with them."""
    private_mounts()
    opts = b"mode=1777,size=64m"
    _check(_libc.mount(b"tmpfs", b"/tmp", b"tmpfs", _MS_NOSUID | _MS_NODEV, opts), "mount /tmp")


def enter_node(pid: int) -> Callable[[], None]:
    """A ``preexec_fn`` that enters the mount namespace of ``pid`` (a node's GCP)."""

    def enter() -> None:
        fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
        try:
            _check(_libc.setns(fd, _CLONE_NEWNS), f"setns to the namespace of pid {pid}")
        finally:
            os.close(fd)

    return enter


class HungHome:
    """The user's home on a mount that hangs: every look-up below it waits (killably,
    as on a hard NFS mount whose server is gone) until :meth:`__exit__`.

    The mount is FUSE without a daemon: nobody ever reads ``/dev/fuse``, so the kernel's
    first request (``INIT``) is never answered and every later one waits for it. No
    FUSE library or program is involved. ``fsfreeze`` would not do: it blocks writes,
    and what must not hang (listing ``~/.globus-tmp/stage-out/...``) only reads; nor
    NFS or autofs, which this kernel does not have. Needs :func:`private_mounts`
    first: the mount must be seen by the bench's processes only. Closing the device
    aborts the connection (waiters get ``ENOTCONN``), then the mount is detached.
    """

    def __init__(self, home: str) -> None:
        self.home = home
        self.fd = -1
        self.how = f"FUSE mount over {home} that no daemon serves"

    def __enter__(self) -> HungHome:
        self.fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        opts = f"fd={self.fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
        try:
            flags = _MS_NOSUID | _MS_NODEV
            _check(
                _libc.mount(b"globus-tmp-bench", self.home.encode(), b"fuse", flags, opts), "mount"
            )
        except OSError:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
        _check(_libc.umount2(self.home.encode(), _MNT_DETACH), f"umount {self.home}")


# -- the lab -----------------------------------------------------------------------


class Lab:
    """The bench's world: user, pool, emulators, config; hooks run against it.

    ``pool``: entries in the user's pool (one per node that runs GCP at once).
    ``settings``: the config file's keys besides the lab's own (see :meth:`configure`).
    """

    USER_DIR = "~/.globus-tmp-bench"

    def __init__(self, pool: int = 1, **settings: object) -> None:
        from globus_tmp.configkeys import KEYS
        from hooksite import Site

        self.known = KEYS
        self.pw = bench_user()
        site = SCRATCH / "site"
        self.conf = site / "globus-tmp.conf"
        self.site = Site(root=site, config=self.conf, users={})
        self.slurm_conf = site / "slurm.conf"
        self.user_dir = Path(self.pw.pw_dir) / self.USER_DIR[2:]
        self.skipped: list[str] = []
        try:
            self._build(pool, settings)
        except BaseException:
            self.close()
            raise

    def _build(self, pool: int, settings: dict[str, object]) -> None:
        shutil.rmtree(SCRATCH, ignore_errors=True)
        site = self.site.root
        site.mkdir(parents=True)
        for path in (SCRATCH, site):
            path.chmod(0o755)
        shutil.copytree(ROOT / "tests" / "emulators", site / "emulators")
        self.slurm_conf.write_text(
            "ClusterName=bench\nSlurmctldHost=localhost\nPrologFlags=Alloc,Contain\n"
            f"ProctrackType=proctrack/linuxproc\nSlurmdSpoolDir={SCRATCH}/spool/%n\n"
        )
        self.make_pool(pool)
        self.configure(
            gcp_path=self.gcp_wrapper("gcp"),
            state_dir=f"{SCRATCH}/nodes/%n",
            user_dir=self.USER_DIR,
            gcp_cgroup=CGROUP,
            linger_unverified=1,
            linger_poll_seconds=0.5,
            **settings,
        )

    def make_pool(self, count: int) -> None:
        from gcp_config_dir import create_config_dir

        shutil.rmtree(self.user_dir, ignore_errors=True)
        uid, gid = self.pw.pw_uid, self.pw.pw_gid
        for i in range(1, count + 1):
            create_config_dir(self.user_dir / "endpoints" / f"ep{i}", uid, gid)
        for path in (self.user_dir, self.user_dir / "endpoints"):
            path.mkdir(mode=0o700, exist_ok=True)
            os.chown(path, uid, gid)

    def gcp_wrapper(self, name: str, **knobs: object) -> str:
        """A GCP launcher with these ``GCP_EMULATOR_*`` settings (``CONNECT_DELAY=5``)."""
        return self.site.gcp_wrapper(
            name, **{f"GCP_EMULATOR_{k}": str(v) for k, v in knobs.items()}
        )

    def configure(self, **settings: object) -> None:
        """Add ``settings`` to the config file; keys this version does not know are left
        out (and listed in :attr:`skipped`): it would refuse the whole file."""
        for key in settings:
            if key not in self.known and key not in self.skipped:
                self.skipped.append(key)
        self.site.configure(**{k: v for k, v in settings.items() if k in self.known})

    def knows(self, key: str) -> bool:
        return key in self.known

    def env(self, job: str, node: str, nodelist: str = "") -> dict[str, str]:
        """A Prolog's or Epilog's environment as slurmd builds it (no PATH, no HOME)."""
        env = {
            "SLURM_JOB_ID": job,
            "SLURM_JOB_USER": USER,
            "SLURM_JOB_UID": str(self.pw.pw_uid),
            "SLURM_JOB_GID": str(self.pw.pw_gid),
            "SLURMD_NODENAME": node,
            "SLURM_CONF": str(self.slurm_conf),
            "GLOBUS_TMP_CONFIG": str(self.conf),
        }
        if nodelist:
            env["SLURM_JOB_NODELIST"] = nodelist
        return env

    def argv(self, hook: str) -> list[str]:
        return [str(BIN / f"globus-tmp-{hook}")]

    def hook(
        self,
        name: str,
        job: str,
        node: str = "bench1",
        preexec: Callable[[], None] | None = None,
        timeout: float | None = 300.0,
    ) -> Run:
        return run(self.argv(name), self.env(job, node), preexec, timeout)

    def state_dir(self, node: str) -> Path:
        return SCRATCH / "nodes" / node

    def state(self, node: str) -> dict[str, Any]:
        import json

        path = self.state_dir(node) / "users" / f"{USER}.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def gcp_pid(self, node: str) -> int | None:
        instance = self.state(node).get("instance") or {}
        pid = instance.get("pid")
        return pid if isinstance(pid, int) else None

    def hook_log(self, node: str) -> str:
        try:
            return (self.state_dir(node) / "hooks.log").read_text()
        except OSError:
            return ""

    def as_user(self, program: str) -> Run:
        env = {
            "GLOBUS_TMP_CONFIG": str(self.conf),
            "SLURMD_NODENAME": "bench1",
            "HOME": self.pw.pw_dir,
            "PATH": "/usr/bin:/bin",
        }
        return run([str(BIN / program)], env, user=self.pw)

    # -- the end -----------------------------------------------------------------

    def leftovers(self) -> list[int]:
        """Pids the bench started that still run (zombies aside): the user's, and
        root's with the bench's config in their environment (hooks, drains, watchers)."""
        tag = f"GLOBUS_TMP_CONFIG={self.conf}".encode()
        me, found = os.getpid(), []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().rpartition(")")[2].split()[0] == "Z":
                        continue  # ended; its parent reaps it
                if os.stat(f"/proc/{entry}").st_uid == self.pw.pw_uid:
                    found.append(int(entry))
                    continue
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if tag in f.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
        return found

    def stop_everything(self, timeout: float = 15.0, reap: bool = True) -> int:
        """SIGKILL whatever :meth:`leftovers` finds until nothing is left; how many.
        ``reap``: also reap our children (not while another thread waits for them)."""
        killed: set[int] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = self.leftovers()
            if not left:
                break
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            with contextlib.suppress(ChildProcessError):
                while reap and os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            time.sleep(0.1)
        return len(killed)

    def close(self) -> None:
        self.stop_everything()
        _remove_cgroups(CGROUP)
        shutil.rmtree(self.user_dir, ignore_errors=True)
        shutil.rmtree(SCRATCH, ignore_errors=True)


def _remove_cgroups(parent: str) -> None:
    """Every cgroup below ``parent`` in every hierarchy, deepest first (they are empty:
    their processes were killed)."""
    from globus_tmp.cgroups import CgroupTree

    layout = CgroupTree(parent).layout()
    if isinstance(layout, str):
        return
    for root in layout[1]:
        top = root / parent
        if not top.is_dir():
            continue
        for path, _, _ in os.walk(top, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(path)


@contextlib.contextmanager
def lab(pool: int = 1, **settings: object) -> Iterator[Lab]:
    """A :class:`Lab`, closed whatever happens (also on SIGTERM and SIGINT)."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    world = Lab(pool, **settings)
    try:
        yield world
    finally:
        world.close()
        for s, handler in old.items():
            signal.signal(s, handler)
