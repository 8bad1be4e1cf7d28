"""The decisions: when a job joins, starts, keeps or stops the user's GCP on this node.

One read gives the whole lifecycle:

- :meth:`NodeLifecycle.prolog`: add the job; a live GCP is joined (no network, no
  GCP call); otherwise lease a pool entry and start GCP as the user, under the gcp lock
  so a user never gets two.
- :meth:`NodeLifecycle.epilog`: remove the job (and jobs that are gone, reconciled
  against slurmstepd); with jobs left, done; with none, stop GCP if no transfer is
  active, or hand over to a detached drain.
- :meth:`NodeLifecycle.drain`: poll the transfer, bounded by ``linger_max``; stop GCP
  unless a job has joined meanwhile.

Locks (see :mod:`globus_tmp.nodestate`): ``jobs`` is held only around a read-modify-
write of the state file; ``gcp`` is held across a start or a stop and taken first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .config import Config
from .errors import GcpError, GlobusTmpError
from .hooklog import HookLog
from .job import JobContext, UserIdentity
from .nodestate import (
    PHASE_DRAINING,
    PHASE_IDLE,
    PHASE_RUNNING,
    PHASE_STARTING,
    PHASE_STOPPING,
    NodeStateStore,
    UserNodeState,
)
from .process import ProcessRef

if TYPE_CHECKING:
    from .activity import TransferActivity
    from .drain import DrainLauncher
    from .slurmjobs import JobProbe
    from .useractions import Started, UserActions

_STEP_TIMEOUT = 30.0  # one short step as the user (lease, release, -stop)


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

    def actions_for(self, user: UserIdentity) -> UserActions:
        if self._actions_for is None:
            from .useractions import ForkedUserActions

            cfg = self.cfg
            self._actions_for = lambda u: ForkedUserActions(cfg, u)
        return self._actions_for(user)

    @property
    def activity(self) -> TransferActivity:
        if self._activity is None:
            from .activity import TransferAwareActivity

            self._activity = TransferAwareActivity(self.cfg)
        return self._activity

    @property
    def jobs(self) -> JobProbe:
        if self._jobs is None:
            from .slurmjobs import SlurmstepdJobs

            self._jobs = SlurmstepdJobs()
        return self._jobs

    @property
    def drains(self) -> DrainLauncher:
        if self._drains is None:
            from .drain import DetachedDrainLauncher

            self._drains = DetachedDrainLauncher()
        return self._drains

    def _left(self) -> float:
        return max(self.deadline - time.monotonic(), 0.5)

    def _read(self, user: UserIdentity) -> UserNodeState:
        state = self.store.read(user.name, user.uid)
        if state.recovered_from:
            self.log.error(state.recovered_from)
        return state

    # -- prolog ------------------------------------------------------------------

    def prolog(self, job: JobContext) -> str:
        user = job.user
        with self.store.jobs_lock(user.name, self._left()):
            state = self._read(user)
            state.jobs.setdefault(job.job_id, time.time())
            instance = state.live_instance()
            if instance is not None and state.phase in (PHASE_RUNNING, PHASE_DRAINING):
                drained = state.phase == PHASE_DRAINING
                state.phase = PHASE_RUNNING
                self.store.write(state)
                return (
                    f"joined GCP pid {instance.pid} (endpoint {instance.endpoint_name} "
                    f"{instance.endpoint_id}){' during its drain' if drained else ''}; "
                    f"{len(state.jobs)} job(s) on node"
                )
            self.store.write(state)
        return self._start(user, job.job_id)

    def _start(self, user: UserIdentity, job_id: str) -> str:
        with self.store.gcp_lock(user.name, self._left()):
            with self.store.jobs_lock(user.name, self._left()):
                state = self._read(user)
                if job_id not in state.jobs:
                    return "job ended before its endpoint started; nothing to do"
                instance = state.live_instance()
                if instance is not None:  # started while we waited for the gcp lock
                    state.phase = PHASE_RUNNING
                    self.store.write(state)
                    return (
                        f"joined GCP pid {instance.pid} started by another job; "
                        f"{len(state.jobs)} job(s) on node"
                    )
                state.phase, state.instance, state.error = PHASE_STARTING, None, None
                self.store.write(state)
            try:
                started = self._start_or_take_over(user)
            except GlobusTmpError as exc:
                with self.store.jobs_lock(user.name, self._left()):
                    state = self._read(user)
                    state.instance = None
                    state.fail(str(exc))
                    self.store.write(state)
                raise
            with self.store.jobs_lock(user.name, self._left()):
                state = self._read(user)
                state.instance, state.phase, state.error = started.instance, PHASE_RUNNING, None
                self.store.write(state)
                jobs = len(state.jobs)
        inst = started.instance
        note = f" ({started.note})" if started.note else ""
        return (
            f"started GCP pid {inst.pid} from pool entry {inst.endpoint_name} "
            f"(endpoint {inst.endpoint_id}){note}; {jobs} job(s) on node"
        )

    def _start_or_take_over(self, user: UserIdentity) -> Started:
        from .gcp import GcpAlreadyRunning, find_pool_instance
        from .useractions import Started

        actions = self.actions_for(user)
        timeout = min(self.cfg.start_timeout, self._left() - 5)
        try:
            return actions.start(self.node, timeout)
        except GcpAlreadyRunning:
            endpoints = self.cfg.user_dir_for(user.home) / "endpoints"
            found = find_pool_instance(user.uid, endpoints)
            if found is None:
                raise GcpError(
                    f"another Globus Connect Personal of {user.name} already runs on {self.node}, "
                    "not started from the pool; stop it with 'globusconnectpersonal -stop'"
                ) from None
            ref, config_dir = found
            started = actions.take_over(self.node, ref, config_dir, timeout)
            note = f"took over running GCP pid {ref.pid} of {config_dir.name}"
            return Started(started.instance, f"{started.note}; {note}" if started.note else note)

    # -- epilog ------------------------------------------------------------------

    def epilog(self, job: JobContext) -> str:
        user = job.user
        with self.store.jobs_lock(user.name, self._left()):
            state = self._read(user)
            known = state.jobs.pop(job.job_id, None) is not None
            gone = self._reconcile(state)
            self.store.write(state)
            instance, drain = state.instance, state.drain
            left = sorted(state.jobs)
        what = "removed job" if known else "job was not in the job set"
        if gone:
            what += f"; dropped vanished job(s) {','.join(gone)}"
        if left:
            return f"{what}; {len(left)} job(s) remain, GCP stays"
        if instance is None:
            return f"{what}; last job, no GCP to stop"
        if drain is not None and drain.alive():
            return f"{what}; last job, drain pid {drain.pid} already keeps GCP up"
        actions = self.actions_for(user)
        if not instance.process.alive():
            return f"{what}; last job: " + self.stop_if_unused(user, "GCP had already exited")
        activity = self.activity.check(actions, instance, min(_STEP_TIMEOUT, self._left()))
        if not activity.active and activity.verified:
            return f"{what}; last job: " + self.stop_if_unused(user, activity.detail)
        ref = self.drains.launch(user, self.node)
        with self.store.jobs_lock(user.name, self._left()):
            state = self._read(user)
            state.drain = ref
            if not state.jobs:
                state.phase = PHASE_DRAINING
            self.store.write(state)
        bound = self.cfg.linger_max if activity.active else self.cfg.linger_unverified
        return (
            f"{what}; last job, but {activity.detail}: drain pid {ref.pid} keeps GCP up "
            f"for at most {bound:g} s"
        )

    def _reconcile(self, state: UserNodeState) -> list[str]:
        """Drop jobs older than ``job_grace`` that no longer run here (a skipped epilog)."""
        cutoff = time.time() - self.cfg.job_grace
        old = [j for j, added in state.jobs.items() if added < cutoff]
        if not old:
            return []
        live = self.jobs.live_job_ids()
        gone = sorted(j for j in old if j not in live)
        for job_id in gone:
            del state.jobs[job_id]
        return gone

    # -- stop --------------------------------------------------------------------

    def stop_if_unused(self, user: UserIdentity, why: str) -> str:
        """Stop the user's GCP and give its lease back, unless a job has joined."""
        with self.store.gcp_lock(user.name, self._left()):
            with self.store.jobs_lock(user.name, self._left()):
                state = self._read(user)
                if state.jobs:
                    return f"kept GCP: job(s) {','.join(sorted(state.jobs))} joined meanwhile"
                instance = state.instance
                if instance is None:
                    state.phase = PHASE_IDLE
                    self.store.write(state)
                    return "no GCP to stop"
                state.phase = PHASE_STOPPING
                self.store.write(state)
            actions = self.actions_for(user)
            how = self._stop_process(actions, instance.process)
            with self.store.jobs_lock(user.name, self._left()):
                state = self._read(user)
                state.instance, state.phase, state.drain = None, PHASE_IDLE, None
                self.store.write(state)
            actions.release(instance.endpoint_name, self.node, min(_STEP_TIMEOUT, self._left()))
        return f"GCP pid {instance.pid} {how} ({why}); lease {instance.endpoint_name} released"

    def _stop_process(self, actions: UserActions, process: ProcessRef) -> str:
        if not process.alive():
            return "was gone"
        try:
            actions.request_stop(min(_STEP_TIMEOUT, self._left()))
        except GlobusTmpError as exc:
            self.log.error(f"'-stop' failed ({exc}); killing GCP pid {process.pid}")
        if process.wait_gone(min(self.cfg.stop_grace, self._left())):
            process.kill_tree()  # children that outlived their parent
            return "stopped"
        process.kill_tree()
        return f"killed after {self.cfg.stop_grace:g} s grace"

    # -- drain -------------------------------------------------------------------

    def drain(self, user: UserIdentity) -> str:
        """Keep GCP up while a transfer is active and no job is left; then stop it."""
        from .activity import Activity

        me = ProcessRef.of(os.getpid())
        started = time.monotonic()
        give_up = started + self.cfg.linger_max
        activity = Activity(True, "not checked yet")
        while True:
            with self.store.jobs_lock(user.name, self._left()):
                state = self._read(user)
                if state.jobs:
                    if state.drain == me:
                        state.drain = None
                        self.store.write(state)
                    return f"job(s) {','.join(sorted(state.jobs))} joined; GCP stays up"
                instance = state.live_instance()
            if instance is None:
                why = "GCP exited during the drain"
                break
            activity = self.activity.check(self.actions_for(user), instance, _STEP_TIMEOUT)
            if not activity.active and activity.verified:
                why = f"transfer over ({activity.detail})"
                break
            waited = time.monotonic() - started
            if not activity.active and waited >= self.cfg.linger_unverified:
                why = f"waited {waited:.0f} s without the Transfer API ({activity.detail})"
                break
            if time.monotonic() >= give_up:
                why = f"gave up after linger_max={self.cfg.linger_max:g} s ({activity.detail})"
                self.log.error(f"drain {why}; stopping GCP under a live transfer")
                break
            time.sleep(max(min(self.cfg.linger_poll_seconds, give_up - time.monotonic()), 0.1))
        return self.stop_if_unused(user, why)
