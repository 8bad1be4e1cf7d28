"""The decisions: when a job joins, starts, keeps or stops the user's GCP on this node.

One read gives the whole lifecycle:

- :meth:`NodeLifecycle.prolog`: add the job; a live GCP is joined (no network, no
  GCP call); otherwise lease a pool entry and start GCP as the user, under the gcp lock
  so a user never gets two. The job does not wait for GCP to connect
  (``start_wait``): :meth:`~NodeLifecycle.watch_connect`, a detached watcher, records
  the connect, or stops GCP and gives its lease back after ``start_timeout``.
- :meth:`NodeLifecycle.epilog`: remove the job (and jobs proven gone, see
  :mod:`globus_tmp.slurmjobs`); with jobs left, done; with none,
  :meth:`~NodeLifecycle.after_last_job`: hand over to a detached drain (at once with
  ``idle_linger``; else only while a transfer is active, stopping GCP if none is).
- :meth:`NodeLifecycle.drain`: keep GCP up for ``idle_linger`` (the user's next job
  joins it) and while a transfer is active, bounded by ``linger_max``; stop GCP
  unless a job has joined meanwhile.
- :meth:`NodeLifecycle.repair`: whatever a killed hook, a killed drain or a vanished
  process left half done (a start or stop interrupted, a dead instance, a lease not
  given back) is finished by whoever looks next: every hook for its own user when its
  state shows such a leftover, and ``globus-tmp-admin reconcile`` for every user.

Locks (see :mod:`globus_tmp.nodestate`): ``jobs`` is held only around a read-modify-
write of the state file; ``gcp`` is held across a start, a stop or a repair, and taken
first. A phase of ``starting`` or ``stopping`` while nobody holds the ``gcp`` lock is
the mark of an interrupted hook.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from .config import Config
from .errors import ConfigError, GcpError, GlobusTmpError
from .failpoints import failpoint
from .hooklog import HookLog
from .job import JobContext, UserIdentity
from .nodestate import (
    MAX_STAGE_TASKS,
    MAX_TASKS,
    GcpInstance,
    HeldTmp,
    NodeStateStore,
    StartRecord,
    UserNodeState,
    accept_task_ids,
)
from .phases import Phase
from .process import ProcessRef

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from typing import Any

    from .activity import Activity, TransferActivity
    from .cgroups import NodeCgroups
    from .connectwatch import ConnectWatchLauncher
    from .drain import DrainLauncher
    from .giveup import TaskCanceller
    from .privatetmp import PrivateTmp
    from .slurmconf import SlurmSettings
    from .slurmjobs import JobProbe
    from .stagemarks import StageMarks
    from .useractions import Started, UserActions

_STEP_TIMEOUT = 30.0  # one short step as the user (lease, release, -stop)
_TMP_EXIT_WAIT = 65.0  # for a job's private-/tmp exit (CloneNSEpilog_Wait 60 s, ADMIN.md)


def needs_repair(state: UserNodeState) -> bool:
    """Whether the state shows something a killed hook or drain left half done (cheap)."""
    if state.phase in (Phase.STARTING, Phase.STOPPING) or state.starting is not None:
        return True
    if state.release_pending or state.cancels_due(time.time()):
        return True
    if state.instance is not None and not state.instance.process.alive():
        return state.phase != Phase.FAILED or not state.jobs  # FAILED: leftovers killed
    if state.phase == Phase.DRAINING:
        drain = state.drain
        if drain is None or not drain.alive():
            return True
    return unwatched(state)


def unwatched(state: UserNodeState) -> bool:
    """Whether a GCP runs unconnected with nobody waiting for its connect (its watcher
    was killed): it would otherwise run, holding its lease, until the last job ends."""
    inst = state.instance
    if inst is None or inst.connected is not None or not inst.process.alive():
        return False
    watch = state.watch
    return watch is None or not watch.alive()


class NodeLifecycle:
    """The lifecycle of every user's GCP on one node; side effects are injected.

    The real implementations are imported only when first needed: the join path
    (the most frequent call) needs none of them and must stay cheap to start.
    """

    def __init__(
        self,
        cfg: Config,
        node: str,
        store: NodeStateStore,
        log: HookLog,
        deadline: float,
        actions_for: Callable[[UserIdentity], UserActions] | None = None,
        activity: TransferActivity | None = None,
        jobs: JobProbe | None = None,
        drains: DrainLauncher | None = None,
        watches: ConnectWatchLauncher | None = None,
        stage_marks: StageMarks | None = None,
    ) -> None:
        self.cfg = cfg
        self.node = node
        self.store = store
        self.log = log
        self.deadline = deadline
        self._actions_for = actions_for
        self._activity = activity
        self._jobs = jobs
        self._drains = drains
        self._watches = watches
        self._stage_marks = stage_marks
        self._private_tmp: PrivateTmp | None = None
        self._slurm: SlurmSettings | None = None
        self._cgroups: NodeCgroups | None = None
        self._cancels: TaskCanceller | None = None

    def actions_for(self, user: UserIdentity) -> UserActions:
        if self._actions_for is None:
            from .leases import Holder, read_boot_id
            from .slurmconf import cluster_name
            from .useractions import ForkedUserActions

            cfg = self.cfg
            holder = Holder(cluster_name(cfg, os.environ), self.node, read_boot_id())
            self._actions_for = lambda u: ForkedUserActions(cfg, u, holder)
        return self._actions_for(user)

    @property
    def activity(self) -> TransferActivity:
        if self._activity is None:
            from .activity import TransferAwareActivity

            self._activity = TransferAwareActivity(self.cfg)
        return self._activity

    @property
    def slurm(self) -> SlurmSettings:
        """The slurm.conf settings slurmd runs with (read once, when first needed)."""
        if self._slurm is None:
            from .slurmconf import read_slurm_settings, slurm_conf_path

            self._slurm = read_slurm_settings(slurm_conf_path(self.cfg, os.environ))
        return self._slurm

    @property
    def jobs(self) -> JobProbe:
        if self._jobs is None:
            from .slurmjobs import SlurmJobProbe

            self._jobs = SlurmJobProbe(self.slurm, self.node, bin_dir=self.cfg.slurm_bin_dir)
        return self._jobs

    @property
    def drains(self) -> DrainLauncher:
        if self._drains is None:
            from .drain import DetachedDrainLauncher

            self._drains = DetachedDrainLauncher()
        return self._drains

    @property
    def watches(self) -> ConnectWatchLauncher:
        if self._watches is None:
            from .connectwatch import ForkedConnectWatch

            self._watches = ForkedConnectWatch()
        return self._watches

    @property
    def cancels(self) -> TaskCanceller:
        """Cancels at a drain's give-up and their retries; never on the join path."""
        if self._cancels is None:
            from .giveup import TaskCanceller

            self._cancels = TaskCanceller(self)
        return self._cancels

    def _give_up_tasks(
        self, user: UserIdentity, tasks: tuple[str, ...], instance: GcpInstance, why: str
    ) -> str:
        """At ``linger_max``, before GCP stops: no task left to resume from another node."""
        return self.cancels.give_up(user, tasks, instance, why)

    @property
    def stage_marks(self) -> StageMarks:
        """Steps as the user around stage-out marks (:mod:`globus_tmp.stagemarks`)."""
        if self._stage_marks is None:
            from .stagemarks import ForkedStageMarks

            self._stage_marks = ForkedStageMarks(self.cfg, self.node, self.store.marks_dir)
        return self._stage_marks

    @property
    def cgroups(self) -> NodeCgroups:
        """Each GCP's own cgroup (:mod:`globus_tmp.cgroups`); never on the join path."""
        if self._cgroups is None:
            from .cgroups import NodeCgroups

            self._cgroups = NodeCgroups(self.cfg, self.node, self.log.error)
        return self._cgroups

    def _left(self) -> float:
        return max(self.deadline - time.monotonic(), 0.5)

    def _step(self) -> float:
        return min(_STEP_TIMEOUT, self._left())

    def _read(self, user: UserIdentity) -> UserNodeState:
        state = self.store.read(user.name, user.uid)
        if state.recovered_from:
            found = self.jobs.running_here(user.name)
            if found:
                state.jobs.update(dict.fromkeys(found, time.time()))
            rebuilt = f"job set rebuilt from Slurm: {','.join(sorted(found))}" if found else ""
            self.log.error(f"{state.recovered_from}; {rebuilt or 'job set not rebuilt'}")
        return state

    # -- prolog ------------------------------------------------------------------

    def prolog(self, job: JobContext) -> str:
        user = job.user
        unmarked = self.store.ensure_marks(user.name, user.uid, user.gid)  # before the add
        if unmarked:
            self.log.error(unmarked)
        with self.store.jobs_lock(user.name, self._left()):
            state = self._read(user)
            state.jobs.setdefault(job.job_id, time.time())
            instance = state.live_instance()
            joined = instance is not None and state.phase in (Phase.RUNNING, Phase.DRAINING)
            drained = joined and state.phase == Phase.DRAINING
            if joined:
                state.phase = Phase.RUNNING
            if drained:  # the drain steps aside when it sees the job; a later one starts afresh
                state.drain_until, state.drain_tasks, state.idle_until = None, [], None
            self.store.write(state)
        if instance is not None and joined:
            # after the jobs lock, never under it: the repair takes it again (found in
            # the lab: a join before the start had recorded its watcher waited for
            # itself until slurmd's PrologEpilogTimeout)
            return self._with_repair(
                user,
                state,
                f"joined GCP pid {instance.pid} (endpoint {instance.endpoint_name} "
                f"{instance.endpoint_id}){' during its drain' if drained else ''}; "
                f"{len(state.jobs)} job(s) on node",
            )
        failpoint("prolog.after_add")
        return self._start(user, job.job_id, job.nodelist)

    def _start(self, user: UserIdentity, job_id: str, nodelist: str = "") -> str:
        with self.store.gcp_lock(user.name, self._left()):
            repaired = self._repair_locked(user)
            with self.store.jobs_lock(user.name, self._left()):
                state = self._read(user)
                if job_id not in state.jobs:
                    return _notes(repaired, "job ended before its endpoint started; nothing to do")
                instance = state.live_instance()
                if instance is not None:  # started while we waited for the gcp lock
                    state.phase = Phase.RUNNING
                    self.store.write(state)
                    return _notes(
                        repaired,
                        f"joined GCP pid {instance.pid} started by another job; "
                        f"{len(state.jobs)} job(s) on node",
                    )
                state.phase, state.instance, state.error = Phase.STARTING, None, None
                state.starting = StartRecord()
                state.clear_drain()
                self.store.write(state)
            try:
                self._clear_control_socket(user)
                self._check_gcp_path()
                started = self._start_or_take_over(user, job_id, nodelist)
            except GlobusTmpError as exc:
                self._abandon_start(user, str(exc))
                raise
            failpoint("prolog.before_record")
            with self.store.jobs_lock(user.name, self._left()):
                state = self._read(user)
                state.instance, state.phase, state.error = started.instance, Phase.RUNNING, None
                state.starting = None
                self.store.write(state)
                jobs = len(state.jobs)
            self.cgroups.place(user.name, user.uid, started.instance.process)  # late forks
        from .metrics import count

        count("gcp_starts_total")
        inst = started.instance
        note = f" ({started.note})" if started.note else ""
        watched = "; ".join(self._ensure_watch(user))  # outside the locks: it forks
        return _notes(
            repaired,
            f"started GCP pid {inst.pid} from pool entry {inst.endpoint_name} "
            f"(endpoint {inst.endpoint_id}){note}; {jobs} job(s) on node"
            + (f"; {watched}" if watched else ""),
        )

    # -- connect -----------------------------------------------------------------

    def _ensure_watch(self, user: UserIdentity) -> list[str]:
        """A watcher for the user's unconnected GCP unless one runs; called with no lock
        held (the fork would keep it: a lock is dropped by its last descriptor)."""
        with self.store.jobs_lock(user.name, self._left()):
            state = self._read(user)
            if not unwatched(state):
                return []
            inst = state.instance
        assert inst is not None
        until = max(inst.since + self.cfg.start_timeout, time.time() + 6.0)  # one -status
        bound = until - time.time() + self.cfg.stop_grace + 3 * _STEP_TIMEOUT
        from .taskcancel import give_up_budget

        bound += give_up_budget(self.cfg)  # tasks queued for a GCP that never connects
        ref = self.watches.launch(
            lambda: self._counted_watch(user, inst.pid, until), self.log, bound
        )
        with self.store.jobs_lock(user.name, self._left()):
            state = self._read(user)
            if state.instance is not None and state.instance.pid == inst.pid:
                state.watch = ref
                self.store.write(state)
        return [f"connecting: watcher pid {ref.pid} gives it until {_clock(until)}"]

    def _counted_watch(self, user: UserIdentity, pid: int, until: float) -> str:
        """:meth:`watch_connect` as a run of the ``watch`` hook in the metrics."""
        from . import metrics

        metrics.forget_pending()
        outcome = "ok"
        try:
            return self.watch_connect(user, pid, until)
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            metrics.record_run(self.cfg, self.node, "watch", outcome)

    def watch_connect(self, user: UserIdentity, pid: int, until: float) -> str:
        """Wait (as the watcher) for GCP ``pid`` to say ``connected`` and record it; stop
        it and give its lease back if it exits first or ``until`` passes. Several
        watchers may overlap for a moment (a repair's and a start's): each steps aside
        when the state names another, and recording or stopping twice is harmless."""
        me = ProcessRef.of(os.getpid())
        self.deadline = time.monotonic() + max(until - time.time(), 0) + 3 * _STEP_TIMEOUT
        from .taskcancel import give_up_budget

        self.deadline += give_up_budget(self.cfg)
        last = "no status yet"
        while True:
            state = self.store.read(user.name, user.uid)  # renames are atomic: no lock
            inst = state.instance
            if inst is None or inst.pid != pid:
                return ""  # stopped or replaced meanwhile: nothing to say
            if inst.connected is not None:
                return ""
            if state.watch is not None and state.watch != me:
                return ""
            if not inst.process.alive():
                why = f"GCP pid {pid} exited before it connected"
                break
            left = until - time.time()
            if left <= 0:
                why = (
                    f"GCP pid {pid} did not connect within start_timeout="
                    f"{self.cfg.start_timeout:g} s (last status: {last})"
                )
                break
            try:
                status = self.actions_for(user).status(min(left, 15.0))
            except GlobusTmpError as exc:
                status, last = None, str(exc)
            if status is not None:
                last = status.online
                if status.connected and inst.process.alive():
                    return self._record_connected(user, inst)
            time.sleep(min(0.2, max(until - time.time(), 0)))
        return self._abandon_connect(user, inst, why)

    def _tasks_queued_for(self, user: UserIdentity, inst: GcpInstance) -> tuple[str, ...]:
        """The user's live tasks on the endpoint of a GCP that never connected (none
        known without the Transfer API; a failed ask is logged: it cannot be proven)."""
        if not self.cfg.globus_client_id:
            return ()
        try:
            tasks = self.actions_for(user).active_tasks(inst.endpoint_id, self._step())
        except GlobusTmpError as exc:
            self.log.error(
                f"could not ask Globus for tasks queued on endpoint {inst.endpoint_name} "
                f"({exc}): any would run from the next node that starts it"
            )
            return ()
        return tuple(accept_task_ids(tasks)[0])

    def _record_connected(self, user: UserIdentity, inst: GcpInstance) -> str:
        with self.store.jobs_lock(user.name, self._left()):
            state = self._read(user)
            if state.instance is None or state.instance.pid != inst.pid:
                return ""
            now = time.time()
            state.instance.connected = now
            state.watch = None
            self.store.write(state)
        return (
            f"GCP pid {inst.pid} (endpoint {inst.endpoint_name} {inst.endpoint_id}) "
            f"connected {now - inst.since:.1f} s after its start"
        )

    def _abandon_connect(self, user: UserIdentity, inst: GcpInstance, why: str) -> str:
        """Stop a GCP that never connected and give its lease back; the jobs run on
        without an endpoint (the next job's Prolog starts one afresh). A job did not wait
        for the connect, so it may have submitted tasks that Globus queued for the
        entry: they are cancelled first (or the lease kept until they are), or they
        would run from the ``/tmp`` of whichever node starts the entry next."""
        ours = self.store.read(user.name, user.uid).instance
        if ours is None or ours.pid != inst.pid or ours.connected is not None:
            return ""  # another watcher's, or stopped meanwhile: cancel nothing
        queued = self._tasks_queued_for(user, inst)
        if queued:
            cause = why.replace(f"GCP pid {inst.pid} ", "", 1)
            why = self.cancels.give_up(user, queued, inst, why, cause=cause)
        with self.store.gcp_lock(user.name, self._left()):
            with self.store.jobs_lock(user.name, self._left()):
                state = self._read(user)
                current = state.instance
                if current is None or current.pid != inst.pid or current.connected is not None:
                    return ""
                state.phase, state.watch = Phase.STOPPING, None
                self.store.write(state)
            how = self._stop_process(user, inst)
            released = self._release(user, inst.endpoint_name)
            with self.store.jobs_lock(user.name, self._left()):
                state = self._read(user)
                state.instance = None
                self._settle_release(state, released)
                message = f"{why}; log: {inst.log_path}"
                if state.jobs:
                    state.fail(message)
                else:
                    state.phase = Phase.IDLE
                    state.clear_drain()
                self.store.write(state)
        from .metrics import count

        count("gcp_connect_failures_total")
        self.log.error(f"{message}; GCP {how}; {released}")
        return ""

    def _clear_control_socket(self, user: UserIdentity) -> None:
        from .gcp import ControlSocket

        if ControlSocket(user.uid).clear_if_squatted():
            self.log.error(
                f"removed {ControlSocket(user.uid).path}: it was not {user.name}'s "
                "(another user squatted GCP's control socket)"
            )

    def _check_gcp_path(self) -> None:
        """Root's own look at the install before a start: a step as the user that says
        GCP cannot be run is the user's to forge, so only this counts as the site's."""
        from .gcp import launcher_problem

        problem = launcher_problem(self.cfg.gcp_path)
        if problem:
            raise ConfigError(f"{self.cfg.source}: {problem}")

    def _record_progress(self, user: UserIdentity, data: Any) -> None:
        """What the start step has done so far, in node state before anything else."""
        leased = data.get("leased") if isinstance(data, dict) else None
        spawned = data.get("spawned") if isinstance(data, dict) else None
        try:  # the step is the user's: take only well-formed values
            pid = int(spawned["pid"]) if isinstance(spawned, dict) else None
            ticks = int(spawned["start_ticks"]) if isinstance(spawned, dict) else None
        except (KeyError, TypeError, ValueError):
            pid = ticks = None
        if not isinstance(leased, str) and pid is None:
            return
        with self.store.jobs_lock(user.name, self._left()):
            state = self._read(user)
            record = state.starting or StartRecord()
            if isinstance(leased, str):
                record.entry = leased
            if pid is not None:
                record.pid, record.start_ticks = pid, ticks
            state.starting = record
            self.store.write(state)
        if pid is not None:
            if ticks is not None:  # before GCP forks its helpers, ideally
                self.cgroups.place(user.name, user.uid, ProcessRef(pid, ticks))
            failpoint("prolog.after_spawn")

    def _abandon_start(self, user: UserIdentity, why: str) -> None:
        """A start failed (or its step was killed at its bound): leave nothing running,
        and give back the lease it took (the step does too, unless it was killed)."""
        with self.store.jobs_lock(user.name, self._left()):
            record = self._read(user).starting
        released: Release | None = None
        if record is not None:
            if record.process is not None and record.process.alive():
                record.process.kill_tree(user.uid)
                why += f"; stopped the GCP (pid {record.pid}) it had spawned"
            if record.entry:
                released = self._release(user, record.entry)
            self.cgroups.cleanup(user.name, user.uid, kill=False)  # another GCP may run
        with self.store.jobs_lock(user.name, self._left()):
            state = self._read(user)
            state.instance, state.starting = None, None
            if released is not None:
                self._settle_release(state, released)
            state.fail(why)
            self.store.write(state)

    def _start_or_take_over(self, user: UserIdentity, job_id: str, nodelist: str) -> Started:
        from .errors import GcpAlreadyRunning
        from .useractions import JobSlot, Started

        actions = self.actions_for(user)
        if self.slurm.run_in_job:  # slurm.conf is read on a start anyway; never on a join
            self.log.error(
                f"PrologFlags=RunInJob: this GCP starts inside job {job_id}'s extern step "
                "(and, with proctrack/cgroup, its cgroup, killed with that job under the "
                "user's other jobs); remove RunInJob, use PrologFlags=Alloc,Contain"
            )
        budget = max(min(self.cfg.start_timeout + 15, self._left() - 5), 1.0)
        try:
            return actions.start(
                self.node,
                budget,
                on_progress=lambda d: self._record_progress(user, d),
                slot=JobSlot(job_id, nodelist),
                paths=self._private_tmp_paths(user),
            )
        except GcpAlreadyRunning:
            found = actions.pool_instances(self._step())
            if not found:
                raise GcpError(
                    f"another Globus Connect Personal of {user.name} already runs on {self.node}, "
                    "not started from the pool; stop it with 'globusconnectpersonal -stop'"
                ) from None
            ref, config_dir = found[0]
            budget = max(min(self.cfg.start_timeout, self._left() - 5), 1.0)
            started = actions.take_over(self.node, ref, config_dir, budget)
            note = f"took over running GCP pid {ref.pid} of {config_dir.name}"
            return Started(started.instance, f"{started.note}; {note}" if started.note else note)

    def _private_tmp_paths(self, user: UserIdentity) -> tuple[str, ...]:
        """With job_container/tmpfs, GCP also exposes the user's export root, below
        which each job's private /tmp appears (see :mod:`globus_tmp.privatetmp`)."""
        if not self.slurm.exports_private_tmp:
            return ()
        from .privatetmp import PrivateTmpError

        try:
            return (str(self.private_tmp.ensure_export_root(user)),)
        except PrivateTmpError as exc:  # GCP still serves the rest; jobs' /tmp not exported
            self.log.error(str(exc))
            return ()

    @property
    def private_tmp(self) -> PrivateTmp:
        if self._private_tmp is None:
            from .jobcontainer import read_job_container_conf
            from .privatetmp import PrivateTmp

            jc = read_job_container_conf(Path(self.slurm.path), self.node)
            self._private_tmp = PrivateTmp(
                self.cfg, self.node, self.store, self.log, list(jc.bases), jc.dirs, self.deadline
            )
        return self._private_tmp

    # -- epilog ------------------------------------------------------------------

    def epilog(self, job: JobContext) -> str:
        user = job.user
        if self.slurm.exports_private_tmp:  # its export is the private-/tmp exit's first
            wait = time.monotonic() + max(min(_TMP_EXIT_WAIT, self._left() - 10), 0)
            if not self.private_tmp.wait_for_exit(user, job.job_id, wait):
                self.log.error(f"job {job.job_id}'s private-/tmp exit still runs; not waited")
        with self.store.jobs_lock(user.name, self._left()):
            state = self._read(user)
            added = state.jobs.pop(job.job_id, None)
            known = added is not None
            gone = self.reconcile_jobs(state)
            instance = state.live_instance()
            export, held = state.job_tmp.get(job.job_id), job.job_id in state.holds
            if export and not held:  # nothing kept: the export shows a deleted directory
                del state.job_tmp[job.job_id]
            if not state.jobs:
                self._rearm_linger(state)
            self.store.write(state)
        failpoint("epilog.after_remove")
        what = "removed job" if known else "job was not in the job set"
        if gone:
            what += f"; {gone}"
        if export and not held:
            self._free_private_tmp(user, export, None)
        staged, tasks = "", list[str]()
        if self._declared(user, job.job_id, added, held):
            endpoint = instance.endpoint_id if instance else None
            lost = None
            if export and not held:
                lost = (
                    "the job's private /tmp was not kept past its end (see this node's "
                    "hook log and slurmd log for globus-tmp-privatetmp)"
                )
            staged, tasks = self._stage_out(user, job.job_id, endpoint, lost)
        what += staged
        if state.jobs:
            if state.stage_tasks:
                self._settle_stage_outs(user, None)
            return self._with_repair(
                user, state, f"{what}; {len(state.jobs)} job(s) remain, GCP stays"
            )
        return f"{what}; last job: " + self.after_last_job(user, tasks)

    def _rearm_linger(self, state: UserNodeState) -> None:
        """The user's last job ended while a drain runs that a job joined since it began
        (a short job, come and gone between two of the drain's looks): the drain lingers
        again for the next job. Set in the same write as the job's removal, so the drain
        never finds the node empty with its linger over; ``after_last_job`` then hands the
        linger to a fresh drain (the joined one's ``linger_max`` is not known)."""
        drain = state.drain
        if self.cfg.idle_linger <= 0 or drain is None or state.live_instance() is None:
            return
        if not drain.alive():
            return
        now = time.time()
        cap = state.drain_until if state.drain_until is not None else now + self.cfg.linger_max
        state.idle_until = max(state.idle_until or 0.0, min(now + self.cfg.idle_linger, cap))
        state.phase = Phase.DRAINING

    def reconcile_jobs(self, state: UserNodeState) -> str:
        """Drop jobs older than ``job_grace`` that are proven gone (a skipped epilog)."""
        cutoff = time.time() - self.cfg.job_grace
        old = [j for j, added in state.jobs.items() if added < cutoff]
        if not old:
            return ""
        gone, how = self.jobs.gone(state.user, old)
        for job_id in gone:
            del state.jobs[job_id]
        if not gone:
            return ""
        return f"dropped gone job(s) {','.join(sorted(gone))} ({how})"

    # -- stage-out ---------------------------------------------------------------

    def _stage_out(
        self, user: UserIdentity, job_id: str, endpoint: str | None, lost: str | None
    ) -> tuple[str, list[str]]:
        """Submit what the job declared for its end on this node (as the user, with the
        user's tokens) from ``endpoint`` (None: no GCP runs); a note for the log line and
        the task ids submitted. ``lost``: why the job's files are gone, if known."""
        from .metrics import count_api

        try:
            outcomes = self.actions_for(user).submit_stage_outs(
                job_id, self.node, endpoint, self._step(), lost
            )
        except GlobusTmpError as exc:  # the records stay declared; a hold stays for now
            count_api("submit", failed=True)
            self.log.error(f"stage-out of job {job_id} not submitted: {exc}")
            return "; stage-out NOT submitted", []
        count_api("submit")
        submitted = [o.get("task_id") for o in outcomes if o.get("state") == "submitted"]
        tasks, refused = accept_task_ids(submitted)
        for o in outcomes:
            self._log_stage_out(o)
        with self.store.jobs_lock(user.name, self._left()):  # the hold learns its tasks
            state = self._read(user)
            room = max(MAX_STAGE_TASKS - len(state.stage_tasks), 0)
            refused += max(len(tasks) - room, 0)
            tasks = tasks[:room]
            state.stage_tasks = sorted(set(state.stage_tasks) | set(tasks))
            hold = state.holds.get(job_id)
            if hold is not None:
                hold.tasks = tasks
            freed = self._pop_done_holds(state)
            self.store.write(state)
        if refused:
            self.log.error(
                f"stage-out of job {job_id}: {refused} task id(s) from {user.name}'s records "
                f"refused (not a Globus task id, or past {MAX_TASKS} per job or "
                f"{MAX_STAGE_TASKS} awaiting their outcome on this node); not followed"
            )
        for export_path, done in freed:
            self.log.info(self._free_private_tmp(user, export_path, done))
        if not outcomes:
            return "", tasks
        return f"; {len(tasks)} of {len(outcomes)} stage-out(s) submitted", tasks

    def _declared(self, user: UserIdentity, job_id: str, added: float | None, held: bool) -> bool:
        """Whether the job declared a stage-out here (``held``: its private /tmp was kept
        for one). Its node-local mark is looked at and taken (a step as the user); the
        home only for a job with a mark (:func:`~globus_tmp.stagemarks.declared_here`)."""
        from .stagemarks import MARK_STEP, declared_here

        if held:  # the exit read the declarations already: only the mark to take
            try:
                self.stage_marks.look(user, job_id, min(MARK_STEP, self._step()), True)
            except GlobusTmpError as exc:
                self.log.error(f"job {job_id}'s stage-out mark not removed ({exc})")
            return True
        try:
            found = declared_here(
                self.stage_marks, user, job_id, self._step, True,
                self.store.predates_marks(added), self.log.error,
            )  # fmt: skip
        except GlobusTmpError as exc:
            self.log.error(f"could not look for stage-outs of job {job_id}: {exc}")
            return False
        return bool(found)

    def _log_stage_out(self, outcome: dict[str, Any]) -> None:
        line = f"stage-out {outcome.get('source')} -> {outcome.get('destination')}: "
        state, task = str(outcome.get("state")), outcome.get("task_id")
        if state == "submitted":
            self.log.info(f"{line}task {task} submitted")
        elif state == "succeeded":
            self.log.info(f"{line}task {task} SUCCEEDED")
        else:
            where = f"task {task} " if task else ""
            self.log.error(f"{line}{where}FAILED: {outcome.get('error')}")

    def _settle_stage_outs(self, user: UserIdentity, live: tuple[str, ...] | None) -> None:
        """Record (as the user) how submitted stage-outs not in ``live`` ended, log it,
        and free the holds whose tasks have all ended."""
        with self.store.jobs_lock(user.name, self._left()):
            state = self._read(user)
            pending = [t for t in state.stage_tasks if live is None or t not in live]
        if not pending:
            return
        from .metrics import count_api

        try:
            outcomes = self.actions_for(user).settle_stage_outs(self.node, self._step())
        except GlobusTmpError as exc:
            count_api("settle", failed=True)
            self.log.error(f"stage-out outcome not recorded yet ({exc}); asked again later")
            return
        count_api("settle")
        for o in outcomes:
            self._log_stage_out(o)
        done = {str(o.get("task_id")) for o in outcomes}
        with self.store.jobs_lock(user.name, self._left()):
            state = self._read(user)
            state.stage_tasks = [t for t in state.stage_tasks if t not in done]
            freed = self._pop_done_holds(state)
            self.store.write(state)
        for export, hold in freed:
            self.log.info(self._free_private_tmp(user, export, hold))

    def _pop_done_holds(
        self, state: UserNodeState, everything: bool = False
    ) -> list[tuple[str | None, HeldTmp | None]]:
        """Drop from the state the holds no pending stage-out reads (``everything``: all
        holds and exports, GCP is stopping); the caller frees them. A hold whose job's
        Epilog has not submitted yet (``tasks`` None) is kept for ``hook_timeout``."""
        freed: list[tuple[str | None, HeldTmp | None]] = []
        young = time.time() - self.cfg.hook_timeout
        for job_id, hold in list(state.holds.items()):
            if hold.tasks is None:
                if not everything or hold.since > young:
                    continue
            elif not everything and set(hold.tasks) & set(state.stage_tasks):
                continue
            del state.holds[job_id]
            freed.append((state.job_tmp.pop(job_id, None), hold))
        if everything and not state.jobs:
            for job_id in [j for j in state.job_tmp if j not in state.holds]:
                freed.append((state.job_tmp.pop(job_id), None))
        return freed

    def free_unserved_private_tmp(self, user: UserIdentity) -> list[str]:
        """Holds and exports of a user whose GCP is gone: nothing can serve them."""
        with self.store.jobs_lock(user.name, self._left()):
            state = self._read(user)
            if state.live_instance() is not None or not (state.holds or state.job_tmp):
                return []
            freed = self._pop_done_holds(state, everything=True)
            self.store.write(state)
        notes = [self._free_private_tmp(user, export, hold) for export, hold in freed]
        for note in notes:
            self.log.info(f"repair: {note} (no GCP serves it)")
        return notes

    def _free_private_tmp(
        self, user: UserIdentity, export: str | None, hold: HeldTmp | None
    ) -> str:
        return self.private_tmp.free(export, hold)

    def after_last_job(self, user: UserIdentity, submitted: list[str] | None = None) -> str:
        """No job of the user is left here: stop GCP, or hand over to a drain (at once
        when the job's stage-outs were just ``submitted``, or to linger for the user's
        next job: ``idle_linger``; then the drain, not this Epilog, asks about
        transfers, and the Epilog makes no network call and reads no home)."""
        state = self.store.read(user.name, user.uid)
        repaired: list[str] = []
        if needs_repair(state):
            with self.store.gcp_lock(user.name, self._left()):
                repaired = self._repair_locked(user)
            state = self._read(user)
        if state.jobs:
            return _notes(repaired, f"job(s) {','.join(sorted(state.jobs))} joined; GCP stays")
        instance = state.live_instance()
        if instance is None:
            return _notes(repaired, "no GCP to stop")
        drain = state.drain
        if drain is not None and drain.alive():
            if self.cfg.idle_linger > 0 and state.drain_until is None:  # a job joined it
                from .activity import Activity

                activity = Activity(False, f"idle_linger={self.cfg.idle_linger:g} s", True)
                return _notes(repaired, self._launch_drain(user, activity, replace=True))
            return _notes(repaired, f"drain pid {drain.pid} already keeps GCP up")
        if state.drain_until is not None and time.time() >= state.drain_until:
            why = self._give_up_tasks(
                user, tuple(state.drain_tasks), instance, "its drain's linger_max had run out"
            )
            return _notes(repaired, self.stop_if_unused(user, why))
        if submitted:
            from .activity import Activity

            live = tuple(submitted)
            activity = Activity(True, f"stage-out task(s) {', '.join(live)} submitted", True, live)
            return _notes(repaired, self._launch_drain(user, activity))
        if self.cfg.idle_linger > 0:
            from .activity import Activity

            activity = Activity(False, f"idle_linger={self.cfg.idle_linger:g} s", True)
            return _notes(repaired, self._launch_drain(user, activity))
        activity = self.activity.check(self.actions_for(user), instance, self._step())
        if not activity.active and activity.verified:
            return _notes(repaired, self.stop_if_unused(user, activity.detail))
        return _notes(repaired, self._launch_drain(user, activity))

    def _launch_drain(self, user: UserIdentity, activity: Activity, replace: bool = False) -> str:
        """Hand GCP to a new drain; with ``replace``, in place of a live one a job joined
        since (it steps aside when it sees itself replaced), with a fresh ``linger_max``."""
        with self.store.jobs_lock(user.name, self._left()):
            state = self._read(user)
            if state.jobs:
                return f"job(s) {','.join(sorted(state.jobs))} joined; GCP stays"
            drain = state.drain
            if drain is not None and drain.alive() and not replace:
                return f"drain pid {drain.pid} already keeps GCP up"
            now = time.time()
            until = (None if replace else state.drain_until) or now + self.cfg.linger_max
            ref = self.drains.launch(user, self.node, until)
            state.drain, state.drain_until, state.phase = ref, until, Phase.DRAINING
            state.idle_until = min(now + self.cfg.idle_linger, until)
            state.drain_tasks = sorted(set(state.drain_tasks) | set(activity.tasks))
            self.store.write(state)
        from .metrics import count

        count("drains_started_total")
        failpoint("epilog.after_drain")
        left = until - time.time()
        if activity.verified and not activity.active:  # idle: the linger, for a next job
            return (
                f"{activity.detail}: drain pid {ref.pid} keeps GCP up for "
                f"{min(self.cfg.idle_linger, left):.0f} s for the user's next job "
                f"(longer if a transfer starts, at most {left:.0f} s)"
            )
        bound = self.cfg.linger_max if activity.active else self.cfg.linger_unverified
        bound = max(bound, self.cfg.idle_linger)
        return (
            f"{activity.detail}: drain pid {ref.pid} keeps GCP up "
            f"for at most {min(bound, left):.0f} s"
        )

    def _mark_draining(self, user: UserIdentity, entry: str, until: float) -> None:
        """Tell other nodes (in the lease, as the user: the drain's first step, so the
        Epilog itself writes nothing in the home) not to reclaim the entry meanwhile.
        Until it lands GCP is still connected in Globus, which no reclaim gets past."""
        try:
            self.actions_for(user).mark_lease(entry, "draining", until, self._step())
        except GlobusTmpError as exc:
            self.log.error(f"could not mark lease {entry} as draining: {exc}")

    # -- stop --------------------------------------------------------------------

    def stop_if_unused(self, user: UserIdentity, why: str) -> str:
        """Stop the user's GCP and give its lease back, unless a job has joined."""
        said = self._stop_if_unused(user, why, None)
        assert said is not None  # only a drain's stop can find its linger re-armed
        return said

    def _stop_if_unused(self, user: UserIdentity, why: str, drain: ProcessRef | None) -> str | None:
        """``stop_if_unused``; as the drain ``drain``: not if another drain took over,
        and None (look again) if a job came and went since its look and the linger is
        on again (``_rearm_linger``): decided under the lock the Epilog writes under."""
        with self.store.gcp_lock(user.name, self._left()):
            with self.store.jobs_lock(user.name, self._left()):
                state = self._read(user)
                if state.jobs:
                    return f"kept GCP: job(s) {','.join(sorted(state.jobs))} joined meanwhile"
                if drain is not None and state.drain != drain:
                    return "another drain or hook took over; this one ends"
                if drain is not None and (state.idle_until or 0.0) > time.time():
                    return None
                instance = state.instance
                if instance is None:
                    state.phase = Phase.IDLE
                    state.clear_drain()
                    self.store.write(state)
                    return "no GCP to stop"
                state.phase = Phase.STOPPING
                self.store.write(state)
            failpoint("epilog.after_stopping")
            how = self._stop_process(user, instance)
            failpoint("epilog.before_release")
            released = self._release(user, instance.endpoint_name)
            if state.stage_tasks:
                self._settle_stage_outs(user, None)
            with self.store.jobs_lock(user.name, self._left()):
                state = self._read(user)
                state.instance, state.phase = None, Phase.IDLE
                state.clear_drain()
                self._settle_release(state, released)
                freed = self._pop_done_holds(state, everything=True)
                self.store.write(state)
        for export, hold in freed:
            self.log.info(self._free_private_tmp(user, export, hold))
        return f"GCP pid {instance.pid} {how} ({why}); {released}"

    def stop_for_admin(self, user: UserIdentity, only_draining: bool = False) -> str:
        """``globus-tmp-admin stop`` / ``drain-cancel``: end a drain now and stop the GCP,
        releasing its lease; never while a job of the user runs here."""
        with self.store.jobs_lock(user.name, self._left()):
            state = self._read(user)
            if state.jobs:
                raise GlobusTmpError(
                    f"{user.name} has job(s) {','.join(sorted(state.jobs))} on {self.node}; "
                    "drain the node in Slurm first (scontrol update nodename=... state=drain)"
                )
            drain, tasks = state.drain, list(state.drain_tasks)
            if only_draining and (drain is None or not drain.alive()):
                return f"no drain runs for {user.name}; nothing to cancel"
        notes = []
        if drain is not None and drain.alive():
            drain.kill_tree()
            notes.append(f"drain pid {drain.pid} ended")
            if tasks:
                notes.append(f"task(s) {', '.join(tasks)} lose this endpoint")
        notes.append(self.stop_if_unused(user, "stopped by an admin"))
        return "; ".join(notes)

    def _stop_process(self, user: UserIdentity, instance: GcpInstance) -> str:
        how = self._stop_leader(user, instance)
        killed = self.cgroups.cleanup(user.name, user.uid)  # helpers that left its session
        return f"{how}; killed {killed} more in its cgroup" if killed else how

    def _stop_leader(self, user: UserIdentity, instance: GcpInstance) -> str:
        process = instance.process
        if not process.alive():
            killed = process.kill_tree(user.uid)  # children that outlived their leader
            return f"was gone (killed {killed} leftover process(es))" if killed else "was gone"
        try:
            self.actions_for(user).request_stop(self._step())
        except GlobusTmpError as exc:
            self.log.error(f"'-stop' failed ({exc}); killing GCP pid {process.pid}")
        from .metrics import count

        if process.wait_gone(min(self.cfg.stop_grace, self._left())):
            process.kill_tree(user.uid)  # children that outlived their parent
            count("gcp_stops_total")
            return "stopped"
        process.kill_tree(user.uid)
        count("gcp_kills_total")
        return f"killed after {self.cfg.stop_grace:g} s grace"

    def _release(self, user: UserIdentity, name: str) -> Release:
        """Give a lease back as the user; how it went (never raises). One kept for a
        task to cancel is not given back (:mod:`globus_tmp.giveup`)."""
        kept = self.cancels.keeps(user, name)
        if kept is not None:
            return kept
        try:
            self.actions_for(user).release(name, self._step())
        except GlobusTmpError as exc:
            self.log.error(f"lease {name} not released ({exc}); the next repair retries")
            return Release(name, False)
        return Release(name, True)

    @staticmethod
    def _settle_release(state: UserNodeState, release: Release) -> None:
        """Record in ``state`` whether the lease still has to be given back."""
        name = release.name
        if release.done:
            state.release_pending = [n for n in state.release_pending if n != name]
        elif name not in state.release_pending:
            state.release_pending.append(name)

    # -- repair ------------------------------------------------------------------

    def _with_repair(self, user: UserIdentity, state: UserNodeState, message: str) -> str:
        """Run :meth:`repair` when the state shows a leftover."""
        if not needs_repair(state):
            return message
        try:
            return _notes(self.repair(user), message)
        except GlobusTmpError as exc:
            return f"{message}; repair failed ({exc})"

    def repair(self, user: UserIdentity) -> list[str]:
        """Finish what an interrupted hook or drain left; one note per repair. A user
        whose GCP a hook is starting or stopping right now is left to that hook."""
        with self.store.gcp_lock_if_free(user.name) as free:
            notes = self._repair_locked(user) if free else []
        return notes + self._ensure_watch(user) if free else notes

    def _repair_locked(self, user: UserIdentity) -> list[str]:
        """The repairs; the caller holds the gcp lock, so no start or stop is under way."""
        with self.store.jobs_lock(user.name, self._left()):
            state = self._read(user)
            if not needs_repair(state):
                return []
            phase, record, instance = state.phase, state.starting, state.instance
            pending = list(state.release_pending)
            has_jobs = bool(state.jobs)
        notes: list[str] = []
        release: list[str] = []
        adopted: GcpInstance | None = None
        dead_kept = False
        if record is not None:
            what = "interrupted start"
            proc = record.process
            if proc is not None and proc.alive() and has_jobs and record.entry:
                adopted = self._adopt(user, proc, record.entry)
                if adopted is not None:
                    what += f": took over the GCP (pid {proc.pid}) it had spawned"
            if adopted is None:
                if proc is not None and proc.alive():
                    proc.kill_tree(user.uid)
                    what += f": stopped the GCP (pid {proc.pid}) it had spawned"
                if record.entry:
                    release.append(record.entry)
            notes.append(what)
        if instance is not None:
            if phase == Phase.STOPPING:
                how = self._stop_process(user, instance)
                notes.append(f"finished an interrupted stop: GCP pid {instance.pid} {how}")
                instance = None
            elif not instance.process.alive():
                killed = instance.process.kill_tree(user.uid)
                killed += self.cgroups.cleanup(user.name, user.uid)
                extra = f" (killed {killed} leftover process(es))" if killed else ""
                notes.append(f"GCP pid {instance.pid} had exited{extra}")
                if has_jobs:
                    # keep the record (and the lease): the next Prolog restarts GCP from
                    # the same config dir, and the last job's repair releases it
                    dead_kept = True
                else:
                    instance = None
            if instance is None:
                release.append(_recorded_entry(state))
        drain_dead = phase == Phase.DRAINING and (state.drain is None or not state.drain.alive())
        if drain_dead:
            notes.append("its drain had died; the transfer check is done again")
        results = {n: self._release(user, n) for n in dict.fromkeys(release + pending) if n}
        notes.extend(str(r) for r in results.values())
        with self.store.jobs_lock(user.name, self._left()):
            state = self._read(user)
            state.starting = None
            if adopted is not None:
                state.instance, state.error = adopted, None
                instance = adopted
            if instance is None:
                state.instance = None
            for result in results.values():
                self._settle_release(state, result)
            if dead_kept:
                state.clear_drain()
                state.fail(
                    f"GCP pid {state.instance.pid if state.instance else '?'} exited; the next "
                    "job's Prolog restarts it"
                )
            elif state.instance is None:
                state.clear_drain()
                if not state.jobs:
                    state.phase = Phase.IDLE
                elif state.phase != Phase.FAILED:
                    state.fail("GCP is not running; the next job's Prolog restarts it")
            elif drain_dead or state.phase in (Phase.STARTING, Phase.STOPPING):
                state.phase = Phase.RUNNING
                state.drain = None
            self.store.write(state)
        notes += self.cancels.retry(user)
        for note in notes:
            self.log.info(f"repair: {note}")
        return notes

    def _adopt(self, user: UserIdentity, proc: ProcessRef, entry: str) -> GcpInstance | None:
        """Take over a GCP an interrupted start left running, for the jobs waiting on it."""
        config_dir = self.cfg.user_dir_for(user) / "endpoints" / entry
        budget = max(min(self.cfg.start_timeout, self._left() - 5), 1.0)
        try:
            return self.actions_for(user).take_over(self.node, proc, config_dir, budget).instance
        except GlobusTmpError as exc:
            self.log.error(f"could not take over GCP pid {proc.pid} ({exc}); stopping it")
            return None

    # -- drain -------------------------------------------------------------------

    def drain(self, user: UserIdentity, until: float) -> str:
        """Keep GCP up while a transfer is active and no job is left; then stop it.

        ``until`` (wall clock) is when ``linger_max`` runs out. An unverified idle (no
        Transfer API) must last ``linger_unverified`` without a break: GCP says idle
        between the files of one task too. Once the Transfer API has shown a live task,
        only the API can say it ended: while it cannot be asked (errors, 429, expired
        tokens), the task is taken as still live.
        """
        me = ProcessRef.of(os.getpid())
        idle_since: float | None = None
        live_tasks = tuple(self.store.read(user.name, user.uid).drain_tasks)
        marked = False
        blind = False  # the API cannot be asked about tasks it showed live
        while True:  # again when a job came and went during the last look
            while True:
                with self.store.jobs_lock(user.name, self._left()):
                    state = self._read(user)
                    if state.jobs or state.drain != me:
                        if state.drain == me:
                            state.clear_drain()
                            self.store.write(state)
                        if state.jobs:
                            return f"job(s) {','.join(sorted(state.jobs))} joined; GCP stays up"
                        return "another drain or hook took over; this one ends"
                    instance = state.live_instance()
                if instance is None:
                    why = "GCP exited during the drain"
                    break
                fresh = not marked  # the first look asks afresh: the Epilog did not ask
                if fresh:
                    marked = True
                    self._mark_draining(user, instance.endpoint_name, until)
                failpoint("drain.poll")
                lingering = max((state.idle_until or 0.0) - time.time(), 0.0)
                bound = min(_STEP_TIMEOUT, max(until - time.time(), 1.0))
                actions = self.actions_for(user)
                activity = self.activity.check(actions, instance, bound, shared=not fresh)
                now = time.monotonic()
                if not activity.active and activity.verified and not lingering:
                    linger = (
                        f"idle_linger={self.cfg.idle_linger:g} s over; " if state.idle_until else ""
                    )
                    why = f"{linger}transfer over ({activity.detail})"
                    break
                if activity.verified:
                    self._settle_stage_outs(user, activity.tasks)
                if activity.verified and live_tasks != activity.tasks:
                    live_tasks = activity.tasks
                    with self.store.jobs_lock(user.name, self._left()):
                        state = self._read(user)
                        if state.drain == me:
                            state.drain_tasks = list(live_tasks)
                            self.store.write(state)
                blind_now = not activity.verified and bool(live_tasks)
                if blind_now and not blind:  # once per outage, not once per poll
                    self.log.info(
                        f"task(s) {', '.join(live_tasks)} taken as live: {activity.detail}"
                    )
                blind = blind_now
                if blind or activity.active:
                    idle_since = None
                elif activity.verified:
                    idle_since = None  # the API's word needs no waiting: only the linger
                else:
                    idle_since = now if idle_since is None else idle_since
                    if now - idle_since >= self.cfg.linger_unverified and not lingering:
                        why = f"idle for {now - idle_since:.0f} s ({activity.detail})"
                        break
                if time.time() >= until:
                    why = f"gave up after linger_max={self.cfg.linger_max:g} s ({activity.detail})"
                    why = self._give_up_tasks(user, live_tasks, instance, why)
                    break
                nap = min(self.cfg.linger_poll_seconds, until - time.time())
                if lingering and not (blind or activity.active):
                    nap = min(nap, lingering)  # look again as the linger ends
                time.sleep(max(nap, 0.1))
            said = self._stop_if_unused(user, why, me)
            if said is not None:
                return said
            idle_since = None


class Release:
    """How giving a lease back went: ``done``, or left for the next repair. Its text is
    the note for the log line (a plain class: this module is on the join path)."""

    __slots__ = ("done", "kept", "name")

    def __init__(self, name: str, done: bool, kept: str = "") -> None:
        self.name = name
        self.done = done
        self.kept = kept
        """Why the lease stays with this node on purpose (nothing is left to release)."""

    def __str__(self) -> str:
        if self.kept:
            return self.kept
        return f"lease {self.name} {'released' if self.done else 'NOT released yet'}"


def _recorded_entry(state: UserNodeState) -> str:
    return state.instance.endpoint_name if state.instance is not None else ""


def _clock(wall: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(wall))


def _notes(notes: list[str], message: str) -> str:
    return f"{message} [repaired: {'; '.join(notes)}]" if notes else message
