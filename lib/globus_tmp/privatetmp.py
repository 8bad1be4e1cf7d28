"""A job's private ``/tmp`` (Slurm's job_container/tmpfs), served by the user's GCP.

With ``JobContainerType=job_container/tmpfs`` (``NamespaceType=namespace/tmpfs`` from
25.11) each job sees its own ``/tmp``, bound over ``/tmp`` in the job's mount namespace
only, from its container ``BasePath/<node>/<job>/.<job>``: the container itself on 22.05,
``.<job>/_tmp`` from 23.02 (where every directory of ``job_container.conf``'s ``Dirs``
has its own ``.<job>/<path with / made _>``, see :mod:`globus_tmp.jobcontainer`).
GCP, started by the Prolog in slurmd's namespace, would export the host's ``/tmp`` and
move nothing of the job's. Slurm creates the container in the job's extern step after
the Prolog and deletes it before the Epilog, so neither hook can reach it; the SPANK
plugin (``spank/``), or job_container.conf's CloneNSScript/CloneNSEpilog (24.11+), runs
this module's command at exactly those two moments, as root, in slurmd's mount
namespace (where the hooks, drains and GCP run):

- ``globus-tmp-privatetmp init JOB UID``: bind the job's container at
  ``<state_dir>/jobtmp/<user>/<job>`` (every component root-owned, so no symlink can
  redirect the mount; the user's GCP exports ``<state_dir>/jobtmp/<user>`` from its
  start, jobs come and go below it), so every private directory of the job is reachable
  below it, and record where the job's ``/tmp`` is in it (``<job>`` or ``<job>/_tmp``)
  in the user's node state, where ``GLOBUS_TMP_PATHS``, ``globus-tmp-endpoint --json``
  and ``stage-out`` find it.
  Other users cannot reach it: ``jobtmp/<user>`` is root's 0700 with an ACL entry for
  that user alone (:mod:`globus_tmp.posixacl`), whatever mode the job gives its ``/tmp``.
- ``globus-tmp-privatetmp exit JOB UID``: without a declared stage-out, unmount. With
  one, move the files into a root-owned hold, ``BasePath/<node>/.globus-tmp-hold/<job>``,
  and bind the hold at the same export path, so the path the job declared stays valid
  while Slurm deletes the (now empty) job directory. ``rename`` does the move: same
  file system, no copy; it goes through a bind of ``BasePath/<node>`` because the job
  directory is a mount of its own and a rename across mounts fails with ``EXDEV``.
  Space held on a node is capped (``hold_max_bytes``): the hold is measured once the
  user can no longer reach it; beyond the cap (or if it cannot be measured in time) it
  is deleted at once and the stage-out fails, saying so.

The Epilog submits the stage-out from the export path; a hold is freed when its tasks
have ended or the user's GCP stops (:meth:`PrivateTmp.free`), and ``reconcile`` removes
holds no state knows of (a reboot). Root only renames and mounts directories whose
parents it owns, and measures and deletes a tree only inside the hold (root's, 0700),
through :mod:`globus_tmp.holdtree`: descriptors, no symlink followed, no mount crossed,
a deadline. Both commands always exit 0: a job must not fail because its data could
not be exported; the hook log says why.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from . import holdtree
from .config import Config
from .errors import EXIT_OK, EXIT_USAGE, GlobusTmpError
from .hooklog import HookLog
from .job import UserIdentity
from .jobcontainer import JobContainerConf, read_job_container_conf
from .nodestate import HeldTmp, NodeStateStore, check_trusted_dir

HOLD_DIR = ".globus-tmp-hold"
_EXIT_MARGIN = 2.0  # seconds kept back from what Slurm or the plugin gives us, to end in time
_USER_STEP = 15.0  # at most, for one step as the user (reading or marking declarations)
_SIZE_BUDGET = 10.0  # seconds to measure a job's /tmp before giving up on holding it
_DROP_BUDGET = 10.0  # seconds to delete one that is not held (reconcile does the rest)
_AFTER_FREE = 5.0  # of the caller's deadline, kept for what it does after freeing holds


_EARLIER_RUN = (
    "job {job}'s private /tmp {what}: an earlier run of job {job} (requeued) still holds "
    "its /tmp here for a stage-out; this run's /tmp is left to Slurm"
)


class PrivateTmpError(GlobusTmpError):
    """A job's private /tmp cannot be exported or held; the message says why."""


class PrivateTmp:
    """Exports and holds of private ``/tmp`` directories on one node (root)."""

    def __init__(
        self,
        cfg: Config,
        node: str,
        store: NodeStateStore,
        log: HookLog,
        bases: list[Path],
        dirs: tuple[str, ...] | None = None,
        deadline: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.node = node
        self.store = store
        self.log = log
        self.bases = bases
        """Candidate ``BasePath`` directories of this node (see :mod:`.jobcontainer`)."""
        self.dirs = dirs
        """``job_container.conf``'s ``Dirs`` (None: not set)."""
        self.deadline = time.monotonic() + cfg.hook_timeout if deadline is None else deadline
        """The caller's deadline (``time.monotonic()``): deleting a hold takes what is left."""

    def export_root(self, user: str) -> Path:
        return self.store.root / "jobtmp" / user

    def ensure_export_root(self, user: UserIdentity) -> Path:
        """The user's export root (GCP exposes it from its start): root's, 0700, with an
        ACL entry for the user alone (:mod:`.posixacl`), below a root-owned 0711
        ``jobtmp``. Slurm's own parent of a job's ``/tmp`` is root's 0700: a job that
        makes its ``/tmp`` 1777 must not be readable by others through the export."""
        from .posixacl import restrict_to

        jobtmp, mine = self.store.root / "jobtmp", self.export_root(user.name)
        with contextlib.suppress(FileExistsError):
            jobtmp.mkdir(mode=0o711)
        check_trusted_dir(jobtmp)
        os.chmod(jobtmp, 0o711)  # others may pass, not list the users
        with contextlib.suppress(FileExistsError):
            mine.mkdir(mode=0o700)
        check_trusted_dir(mine)
        try:
            restrict_to(str(mine), user.uid)
        except OSError as exc:
            raise PrivateTmpError(
                f"{mine}: cannot restrict it to {user.name} with an ACL ({exc.strerror}); "
                "no private /tmp is exported: put state_dir on a file system with POSIX "
                "ACLs (tmpfs, ext4, xfs)"
            ) from None
        return mine

    # -- job start ---------------------------------------------------------------

    def init(self, job_id: str, user: UserIdentity) -> str:
        _, source = self._job_dir(job_id, user.uid)
        within = self._tmp_within(source, user.uid)
        target = self.ensure_export_root(user) / job_id
        with contextlib.suppress(FileExistsError):
            target.mkdir(mode=0o700)
        check_trusted_dir(target, allow_mount=True)
        from .mounts import bind, unmount

        # recorded first: if this is killed after the bind, the job's Epilog (or the
        # stop of its GCP) still finds the mount and removes it
        with self.store.jobs_lock(user.name):
            state = self.store.read(user.name, user.uid)
            if job_id in state.holds:
                raise PrivateTmpError(_EARLIER_RUN.format(job=job_id, what="not exported"))
            state.job_tmp[job_id] = str(target / within)
            self.store.write(state)
        unmount(str(target))  # a leftover of an earlier run of the same job id
        bind(str(source), str(target))
        return f"job {job_id}'s private /tmp ({source / within}) exported at {target / within}"

    def _tmp_within(self, container: Path, uid: int) -> str:
        """Where the job's ``/tmp`` is in its container: ``_tmp`` (Slurm 23.02+, made by
        Slurm before this runs, the user's own), else the container itself (22.05)."""
        try:
            st = os.lstat(container / "_tmp")
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode) and st.st_uid == uid:
            return "_tmp"
        if self.dirs is not None and "/tmp" not in self.dirs:
            raise PrivateTmpError(
                f"job_container.conf's Dirs ({','.join(self.dirs)}) has no /tmp: the job's "
                "/tmp is the node's, nothing to export"
            )
        if st is not None:
            raise PrivateTmpError(f"{container / '_tmp'} is not a directory of uid {uid}")
        return ""

    def export_point(self, job_tmp: str) -> Path:
        """The mount point of a job's export (``jobtmp/<user>/<job>``), from where its
        ``/tmp`` is in it (:meth:`init`)."""
        path, root = Path(job_tmp), self.store.root / "jobtmp"
        try:
            parts = path.relative_to(root).parts
        except ValueError:
            return path
        return root.joinpath(*parts[:2]) if len(parts) > 2 else path

    # -- job end -----------------------------------------------------------------

    def exit(self, job_id: str, user: UserIdentity, declared: int) -> tuple[bool, str]:
        """Hold the job's files if it declared a stage-out (``declared`` > 0), else let
        Slurm delete them. Returns (held, what happened). The tree is measured only once
        it is in the hold, where the user cannot change it: unmounted from the export,
        renamed below root's 0700 directory."""
        target = self.export_root(user.name) / job_id
        with self.store.jobs_lock(user.name):  # the export there is the earlier run's
            if job_id in self.store.read(user.name, user.uid).holds:
                raise PrivateTmpError(_EARLIER_RUN.format(job=job_id, what="not held"))
        if declared <= 0:
            self._drop_export(user, job_id, target)
            return False, f"job {job_id} declared no stage-out; its private /tmp goes"
        base, source = self._job_dir(job_id, user.uid)
        job_tmp = str(target / self._tmp_within(source, user.uid))
        hold = base / HOLD_DIR / job_id
        from .mounts import bind, unmount

        try:
            unmount(str(target))  # the user's GCP no longer reaches the tree
        except OSError as exc:
            raise PrivateTmpError(
                f"not held: job {job_id}'s export not unmounted ({exc})"
            ) from None
        # recorded before the move: if this is killed halfway, the hold is still found
        # and freed (a record of a hold not yet made frees nothing)
        self._record_hold(user, job_id, HeldTmp(path=str(hold), size=0, since=time.time()), job_tmp)
        try:
            self._move_to_hold(base, job_id)
        except PrivateTmpError:
            self._forget_hold(user, job_id)
            self._drop_export(user, job_id, target)
            raise
        measured = holdtree.measure(hold.parent, job_id, self._within(_SIZE_BUDGET))
        size = measured.size
        with self.store.holds_lock(max(self.deadline - time.monotonic(), 0.1)):
            held_now = self.held_bytes()  # jobs ending at once: one of them gets the room
            fits = size is not None and held_now + size <= self.cfg.hold_max_bytes
            if size is not None and fits:
                self._record_hold(
                    user, job_id, HeldTmp(path=str(hold), size=size, since=time.time()), job_tmp
                )
        if not fits:
            raise PrivateTmpError(self._not_held(user, job_id, target, hold, measured, held_now))
        # read-only: measured once, it must not grow past the cap through the export
        bind(str(hold), str(target), read_only=True)
        note = f"; {measured.reason}" if measured.reason else ""
        return (
            True,
            f"job {job_id}'s private /tmp ({size} bytes{note}) held at {hold} for its stage-out",
        )

    def _not_held(
        self,
        user: UserIdentity,
        job_id: str,
        target: Path,
        hold: Path,
        measured: holdtree.Measured,
        held_now: int,
    ) -> str:
        """Delete a hold that may not stay (over the cap, or not measured in time) and
        say why. Forgotten first: if this is killed while deleting, ``reconcile``
        finds a hold no state knows and finishes."""
        self._forget_hold(user, job_id)
        self._drop_export(user, job_id, target)
        deleted = self.delete_hold(hold, deadline=self._within(_DROP_BUDGET))
        size = measured.size
        amount = f"what {measured.reason}" if size is None else f"{size} bytes"
        return (
            f"not held: job {job_id}'s /tmp holds {amount}, {held_now} bytes are held on "
            f"{self.node} already and hold_max_bytes is {self.cfg.hold_max_bytes}; "
            f"its stage-out cannot run (ask your admin to raise hold_max_bytes); {deleted}"
        )

    def _record_hold(self, user: UserIdentity, job_id: str, hold: HeldTmp, job_tmp: str) -> None:
        with self.store.jobs_lock(user.name):
            state = self.store.read(user.name, user.uid)
            state.job_tmp[job_id] = job_tmp
            state.holds[job_id] = hold
            self.store.write(state)

    def _forget_hold(self, user: UserIdentity, job_id: str) -> None:
        with self.store.jobs_lock(user.name):
            state = self.store.read(user.name, user.uid)
            if state.holds.pop(job_id, None) is not None:
                self.store.write(state)

    def _within(self, budget: float) -> float:
        """A deadline ``budget`` seconds from now, never past the caller's."""
        return min(time.monotonic() + budget, self.deadline)

    def wait_for_exit(self, user: UserIdentity, job_id: str, deadline: float) -> bool:
        """Wait (until ``deadline``) for the job's ``exit`` to have run: no exit holding
        its lock, and not "export recorded, no hold, container still there" (an exit yet
        to come). The SPANK plugin's exit runs in the extern step, before the Epilog;
        CloneNSEpilog runs when Slurm deletes the container, which on 25.11 overlaps the
        Epilog (seen in the lab): an Epilog deciding meanwhile dropped the export the
        exit was holding. Where Slurm deletes the container after the Epilog (upstream
        22.05-23.11), the exit has already dropped the export or made the hold, so this
        does not wait. True if done."""
        while self._exit_to_come(user, job_id):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        try:
            with self.store.tmp_exit_lock(user.name, job_id, max(deadline - time.monotonic(), 0)):
                pass
        except GlobusTmpError:
            return False
        self.store.drop_tmp_exit_lock(user.name, job_id)  # else one file per job stays
        return True

    def _exit_to_come(self, user: UserIdentity, job_id: str) -> bool:
        if not any((b / job_id / f".{job_id}").exists() for b in self.bases):
            return False
        try:
            state = self.store.read(user.name, user.uid)  # written atomically: no lock
        except GlobusTmpError:
            return False
        return job_id in state.job_tmp and job_id not in state.holds

    def held_bytes(self) -> int:
        total = 0
        for name in self.store.users():
            with contextlib.suppress(GlobusTmpError, OSError):
                total += sum(h.size for h in self.store.read(name, -1).holds.values())
        return total

    def _move_to_hold(self, base: Path, job_id: str) -> None:
        """Rename ``<job>/.<job>`` into the hold, seen through a bind of ``base`` (one
        mount: the job directory is a mount point of its own in this namespace)."""
        from .mounts import bind, rename_noreplace, unmount

        hold_root = base / HOLD_DIR
        with contextlib.suppress(FileExistsError):
            hold_root.mkdir(mode=0o700)
        check_trusted_dir(hold_root, private=True)
        view = tempfile.mkdtemp(prefix=".view-", dir=self.store.root)
        try:
            bind(str(base), view)
            try:
                rename_noreplace(Path(view, job_id, f".{job_id}"), Path(view, HOLD_DIR, job_id))
            finally:
                unmount(view)
        except OSError as exc:
            raise PrivateTmpError(f"job {job_id}'s /tmp not moved to the hold: {exc}") from None
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(view)

    def _drop_export(self, user: UserIdentity, job_id: str, target: Path) -> None:
        from .mounts import unmount

        unmount(str(target))
        with contextlib.suppress(OSError):
            target.rmdir()
        with self.store.jobs_lock(user.name):
            state = self.store.read(user.name, user.uid)
            if state.job_tmp.pop(job_id, None) is not None:
                self.store.write(state)

    # -- after the stage-out -----------------------------------------------------

    def free(self, export: str | None, hold: HeldTmp | None) -> str:
        """Unmount a job's export and delete its hold (the caller has dropped both from
        the state), in what is left of the caller's deadline."""
        from .mounts import unmount

        if export:
            point = str(self.export_point(export))
            with contextlib.suppress(OSError):
                unmount(point)
            with contextlib.suppress(OSError):
                os.rmdir(point)
        if hold is None:
            return "export removed"
        return self.delete_hold(Path(hold.path), f" ({hold.size} bytes)")

    def delete_hold(self, path: Path, what: str = "", deadline: float | None = None) -> str:
        """Delete a hold from root (:func:`holdtree.remove`), only below a hold directory
        root owns and nobody else may enter, by ``deadline`` (else what is left of the
        caller's, less a margin for its own work after this)."""
        if deadline is None:
            deadline = self.deadline - _AFTER_FREE
        try:
            if path.parent.name != HOLD_DIR:
                raise PrivateTmpError(f"{path.parent} is not a hold directory")
            check_trusted_dir(path.parent, private=True)
        except GlobusTmpError as exc:
            return f"hold {path}{what} NOT removed ({exc})"
        removed = holdtree.remove(path.parent, path.name, deadline)
        if not removed.gone:
            return (
                f"hold {path}{what} NOT removed ({removed.removed} entries removed, "
                f"{removed.reason}); reconcile retries"
            )
        return f"hold {path}{what} freed"

    def sweep_views(self) -> list[str]:
        """Remove view mounts (``.view-*``; ``.user-view-*`` of older releases) that a
        helper killed mid-move left in the state dir: nothing else removes them. Only
        views older than twice ``hook_timeout``, so a running helper's own is never
        touched."""
        from .mounts import unmount

        notes, cutoff = [], time.time() - 2 * self.cfg.hook_timeout
        for name in os.listdir(self.store.root):
            if not name.startswith((".view-", ".user-view-")):
                continue
            path = self.store.root / name
            try:
                if os.lstat(path).st_mtime > cutoff:
                    continue
                was_mounted = unmount(str(path))
                os.rmdir(path)
            except OSError as exc:
                notes.append(f"view {path} NOT removed ({exc.strerror}); reconcile retries")
                continue
            notes.append(f"view {path} removed" + (" (it was still mounted)" * was_mounted))
        return notes

    def orphan_holds(self) -> list[Path]:
        """Hold directories no user's state knows of (a reboot cleared the state).

        The disk is listed before the states are read: a hold is recorded before its
        directory is made, so one that appears meanwhile is in the states read after."""
        on_disk = []
        for base in self.bases:
            with contextlib.suppress(OSError):
                on_disk += [base / HOLD_DIR / name for name in os.listdir(base / HOLD_DIR)]
        known: set[str] = set()
        for name in self.store.users():
            with contextlib.suppress(GlobusTmpError, OSError):
                known.update(h.path for h in self.store.read(name, -1).holds.values())
        return [path for path in on_disk if str(path) not in known]

    def delete_orphan(self, path: Path) -> str:
        return self.delete_hold(path, " (no node state knows it)")

    # -- where the job's /tmp is -------------------------------------------------

    def _job_dir(self, job_id: str, uid: int) -> tuple[Path, Path]:
        """``(base, base/<job>/.<job>)``, checked: Slurm's root-owned job directory
        holding the job user's own directory, no symlink anywhere."""
        if not job_id.isdigit():
            raise PrivateTmpError(f"'{job_id}' is not a job id")
        for base in self.bases:
            source = base / job_id / f".{job_id}"
            try:
                parent, st = os.lstat(source.parent), os.lstat(source)
            except OSError:
                continue
            if not stat.S_ISDIR(parent.st_mode) or parent.st_uid != 0:
                raise PrivateTmpError(f"{source.parent} is not a root-owned directory")
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
                raise PrivateTmpError(f"{source} is not a directory of uid {uid}")
            return base, source
        where = " or ".join(str(b / job_id / f".{job_id}") for b in self.bases)
        raise PrivateTmpError(
            f"job {job_id}'s private /tmp is not at {where or '(no BasePath found)'}; "
            "is job_container.conf beside slurm.conf?"
        )


# -- the command the SPANK plugin runs -----------------------------------------------


USAGE = "usage: globus-tmp-privatetmp init|exit JOBID UID  (or clonens-init|clonens-epilog)"


def main(argv: list[str] | None = None) -> int:
    """``globus-tmp-privatetmp init|exit JOBID UID`` (the SPANK plugin), or
    ``clonens-init|clonens-epilog`` with Slurm's environment (``job_container.conf``'s
    CloneNSScript/CloneNSEpilog, Slurm 24.11+). Always exits 0; the hook log says why."""
    args = sys.argv[1:] if argv is None else argv
    # A job ended at its time limit or by scancel: Slurm sends SIGTERM to every process
    # of its steps, this one too (it runs under the extern step). The move into the hold
    # must not be cut short by it; alarm_backstop and the plugin's timeout bound us.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    log = HookLog("privatetmp")
    bases: list[Path] = []
    clonens = len(args) == 1 and args[0] in ("clonens-init", "clonens-epilog")
    if len(args) == 3 and args[0] in ("init", "exit"):
        command, job_id, uid_text = args
    elif clonens:
        command = "init" if args[0] == "clonens-init" else "exit"
        job_id, uid_text, bases = _clonens_job(os.environ)
    else:
        print(USAGE, file=sys.stderr)
        return EXIT_USAGE
    from .alarm import alarm_backstop
    from .config import load_config
    from .hookrunner import log_failure, outcome_of
    from .job import node_name
    from .slurmconf import slurm_conf_path

    try:
        cfg = load_config()
        node = node_name(os.environ)
        uid = int(uid_text)
    except (GlobusTmpError, ValueError) as exc:
        log.error(f"privatetmp {command} job {job_id}: {exc}; nothing done")
        return EXIT_OK
    log.bind(job=job_id, node=node)
    outcome = "ok"
    jc = read_job_container_conf(slurm_conf_path(cfg, os.environ), node)
    budget = min(cfg.hook_timeout, _given_time(command, clonens, jc, os.environ))
    deadline = time.monotonic() + budget
    try:
        with alarm_backstop(budget, f"privatetmp: gave up after {budget:g} s"):
            user = UserIdentity.from_uid(uid)  # NSS (maybe LDAP) may hang: under the alarm
            log.bind(job=job_id, node=node, user=user.name)
            store = NodeStateStore(cfg.state_dir_for(node))
            store.ensure()
            log.configure(cfg.log_file_for(node), cfg.syslog_facility)
            tmp = PrivateTmp(cfg, node, store, log, bases or list(jc.bases), jc.dirs, deadline)
            if command == "init":
                log.info(tmp.init(job_id, user))
            else:
                log.info(_exit(cfg, tmp, node, job_id, user, deadline))
    except Exception as exc:
        log_failure(log, exc)
        outcome = outcome_of(exc)
    if cfg.metrics_file:
        from .metrics import record_run

        problem = record_run(cfg, node, "privatetmp", outcome)
        if problem:
            log.error(problem)
    return EXIT_OK  # Slurm's job_container plugin must never fail the job for us


def _given_time(command: str, clonens: bool, jc: JobContainerConf, env: Mapping[str, str]) -> float:
    """The seconds this run has, less a margin to end on its own: past them the SPANK
    plugin (its ``timeout=``, passed as ``GLOBUS_TMP_TIMEOUT``) SIGKILLs us, or Slurm
    kills a CloneNS script at its ``_Wait`` (and a killed CloneNSScript fails the job)."""
    if clonens:
        given = jc.clonens_script_wait if command == "init" else jc.clonens_epilog_wait
    else:
        try:
            given = float(env.get("GLOBUS_TMP_TIMEOUT", "inf"))
        except ValueError:
            given = math.inf
        if not given > 0:  # NaN or <= 0: the plugin refuses those; not a budget
            given = math.inf
    return max(given - _EXIT_MARGIN, 1.0)


def _clonens_job(env: Mapping[str, str]) -> tuple[str, str, list[Path]]:
    """(job id, uid, [BasePath]) from what Slurm gives CloneNSScript and CloneNSEpilog.

    CloneNSScript gets ``SLURM_JOB_UID`` and ``SLURM_JOB_MOUNTPOINT_SRC``
    (``BasePath/<job>/.<job>``); CloneNSEpilog only ``SLURM_JOB_ID`` and ``SLURM_NS``
    (``BasePath/<job>/.ns``): its uid is the owner Slurm gave the job's container.
    """
    job_id = env.get("SLURM_JOB_ID", "")
    source = env.get("SLURM_JOB_MOUNTPOINT_SRC", "")
    if not source and env.get("SLURM_NS") and job_id.isdigit():
        source = str(Path(env["SLURM_NS"]).parent / f".{job_id}")
    uid_text = env.get("SLURM_JOB_UID", "")
    if not source:
        return job_id, uid_text, []
    if not uid_text:
        with contextlib.suppress(OSError):
            uid_text = str(os.lstat(source).st_uid)
    return job_id, uid_text, [Path(source).parent.parent]


def _exit(
    cfg: Config, tmp: PrivateTmp, node: str, job_id: str, user: UserIdentity, deadline: float
) -> str:
    """Hold or let go, and tell the job's declarations (as the user) which it was; each
    step as the user within what is left before ``deadline``. The home is read only for
    a job with a stage-out mark (:func:`~globus_tmp.stagemarks.declared_here`; the mark
    is left for the job's Epilog)."""
    from .privileges import run_as
    from .slurmconf import cluster_name
    from .stagemarks import ForkedStageMarks, declared_here
    from .stageout import mark_held

    def left() -> float:
        return max(min(_USER_STEP, deadline - time.monotonic() - 1.0), 0.5)

    cluster = cluster_name(cfg, os.environ)
    user_dir = cfg.user_dir_for(user)
    where = (user_dir, user.home, cluster, job_id, node)
    store = tmp.store
    steps = ForkedStageMarks(cfg, node, store.marks_dir)
    try:
        with store.tmp_exit_lock(user.name, job_id, left()):  # the Epilog waits for it
            predates = store.predates_marks(store.read(user.name, user.uid).jobs.get(job_id))
            declared = declared_here(steps, user, job_id, left, False, predates, tmp.log.error)
            try:
                held, what = tmp.exit(job_id, user, declared)
            except PrivateTmpError as exc:
                if declared:
                    run_as(user, left(), mark_held, *where, False, str(exc))
                raise
            if declared:
                run_as(user, left(), mark_held, *where, held, "")
            return what
    finally:
        store.drop_tmp_exit_lock(user.name, job_id)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
