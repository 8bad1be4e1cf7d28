"""Bring every user's node state in line with reality: ``globus-tmp-admin reconcile``.

The hooks repair their own user's leftovers when they run, but a node where that user
never runs again would keep an orphan forever. This pass, run periodically as root
(``HealthCheckProgram`` or a timer), gives everything we start a bounded life:

- jobs proven gone are dropped (:mod:`globus_tmp.slurmjobs` rules);
- an interrupted start or stop is finished, a dead instance's leftovers killed, leases
  not given back are released (:meth:`NodeLifecycle.repair`);
- a GCP running from the user's pool that node state does not know is stopped, or
  taken over when jobs wait for an endpoint;
- a GCP with no job left is stopped or handed to a drain, exactly as the last Epilog
  would have; a drain hung past its ``linger_max`` is killed and GCP stopped;
- a held private ``/tmp`` nothing can serve any more (no GCP) is freed, and hold
  directories no state knows of (the node rebooted) are deleted;
- stage-out marks of jobs no longer in the job set (an Epilog that never ran) are
  renamed ``<job>.orphan``, and removed a day later (:mod:`globus_tmp.stagemarks`).

It takes the same locks as the hooks and never waits for them: a user whose GCP is
being started or stopped right now is left to that hook. Idempotent; one log line per
repair.
"""

from __future__ import annotations

import time

from .errors import GlobusTmpError
from .job import UserIdentity
from .lifecycle import NodeLifecycle, needs_repair
from .phases import Phase
from .taskcancel import give_up_budget

_DRAIN_OVERRUN = 30.0  # past its own backstop (see epilog/drain.py): hung


class NodeReconciler:
    def __init__(self, lifecycle: NodeLifecycle) -> None:
        self.lifecycle = lifecycle

    def node(self) -> list[tuple[str, str]]:
        """Reconcile every user with state on this node: (user, note) per repair."""
        out: list[tuple[str, str]] = []
        for name in self.lifecycle.store.users():
            try:
                user = UserIdentity.from_name(name)
            except GlobusTmpError as exc:
                out.append((name, f"skipped: {exc}"))
                continue
            try:
                out.extend((name, note) for note in self.user(user))
            except GlobusTmpError as exc:
                out.append((name, f"reconcile failed: {exc}"))
        if self.lifecycle.slurm.exports_private_tmp:
            private_tmp = self.lifecycle.private_tmp
            notes = private_tmp.sweep_views()
            notes += [private_tmp.delete_orphan(path) for path in private_tmp.orphan_holds()]
            for note in notes:
                self.lifecycle.log.info(f"repair: {note}")
                out.append(("-", note))
        return out

    def user(self, user: UserIdentity) -> list[str]:
        lc = self.lifecycle
        store = lc.store
        if store.gcp_lock_busy(user.name):
            return []  # a hook is starting or stopping GCP right now; it finishes its work
        notes: list[str] = []
        with store.jobs_lock(user.name, lc._left()):
            state = store.read(user.name, user.uid)
            if state.recovered_from:
                notes.append(state.recovered_from)
            gone = lc.reconcile_jobs(state)
            if gone or state.recovered_from:
                store.write(state)
        if gone:
            notes.append(gone)
        if needs_repair(state):
            notes += lc.repair(user)
        notes += self._orphans(user)
        state = store.read(user.name, user.uid)
        notes += self._stage_marks(user, sorted(state.jobs))
        drain = state.drain
        drain_alive = drain is not None and drain.alive()
        if not state.jobs and state.live_instance() is not None and not drain_alive:
            notes.append("no job left: " + lc.after_last_job(user))
        elif state.live_instance() is None and not drain_alive:
            notes += lc.free_unserved_private_tmp(user)
            notes += self._cgroup_leftovers(user)
        elif state.phase == Phase.DRAINING and drain is not None and drain_alive:
            overrun = give_up_budget(lc.cfg) + _DRAIN_OVERRUN
            until = (state.drain_until or 0) + lc.cfg.stop_grace + overrun
            instance = state.live_instance()
            if time.time() > until:
                drain.kill_tree()
                why = "its drain hung"
                if instance is not None:
                    why = lc._give_up_tasks(user, tuple(state.drain_tasks), instance, why)
                notes.append(
                    f"drain pid {drain.pid} hung past linger_max, killed; "
                    + lc.stop_if_unused(user, why)
                )
        return notes

    def _cgroup_leftovers(self, user: UserIdentity) -> list[str]:
        """No GCP runs: processes still in its cgroup escaped every other witness (they
        left GCP's session); kill them and remove the cgroup."""
        lc = self.lifecycle
        with lc.store.gcp_lock_if_free(user.name) as free:
            if not free or lc.store.read(user.name, user.uid).live_instance() is not None:
                return []
            killed = lc.cgroups.cleanup(user.name, user.uid)
        if not killed:
            return []
        note = f"killed {killed} process(es) left in the cgroup of a stopped GCP"
        lc.log.info(f"repair: {note}")
        return [note]

    def _stage_marks(self, user: UserIdentity, jobs: list[str]) -> list[str]:
        """Stage-out marks of jobs not in the job set (their Epilog never ran, or was
        killed): orphaned, then removed a day later, as the user
        (:func:`~globus_tmp.stagemarks.sweep_marks`)."""
        from .stagemarks import MARK_STEP

        lc = self.lifecycle
        try:
            done = lc.stage_marks.sweep(user, jobs, min(MARK_STEP, lc._step()))
        except GlobusTmpError as exc:
            return [f"stage-out marks not swept: {exc}"]
        if not done:
            return []
        note = f"{done} stage-out mark(s) of jobs no longer here orphaned or removed"
        lc.log.info(f"repair: {note}")
        return [note]

    def _orphans(self, user: UserIdentity) -> list[str]:
        """GCPs of the user from the pool that node state does not know."""
        lc = self.lifecycle
        store = lc.store
        notes: list[str] = []
        with store.gcp_lock_if_free(user.name) as free:
            if not free:
                return notes  # a hook is at work for this user: leave it alone
            actions = lc.actions_for(user)
            found = actions.pool_instances(lc._step())
            if not found:
                return notes
            state = store.read(user.name, user.uid)
            live = state.live_instance()
            for ref, config_dir in found:
                if live is not None and ref == live.process:
                    continue
                if live is None and state.jobs and ref.alive():
                    started = actions.take_over(lc.node, ref, config_dir, lc._step())
                    with store.jobs_lock(user.name, lc._left()):
                        state = store.read(user.name, user.uid)
                        state.instance, state.phase, state.error = (
                            started.instance,
                            Phase.RUNNING,
                            None,
                        )
                        store.write(state)
                    live = started.instance
                    lc.cgroups.place(user.name, user.uid, ref)
                    notes.append(
                        f"took over unrecorded GCP pid {ref.pid} of {config_dir.name} "
                        f"for job(s) {','.join(sorted(state.jobs))}"
                    )
                    continue
                killed = ref.kill_tree(user.uid)
                if live is None:  # what left its session, too
                    killed += lc.cgroups.cleanup(user.name, user.uid)
                note = f"stopped unrecorded GCP pid {ref.pid} of {config_dir.name} ({killed} proc)"
                if live is None or live.endpoint_name != config_dir.name:
                    note += f"; {lc._release(user, config_dir.name)}"
                notes.append(note)
        for note in notes:
            lc.log.info(f"repair: {note}")
        return notes
