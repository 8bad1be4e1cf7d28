"""A drain that gives up at ``linger_max`` leaves no live task behind.

A Transfer task is bound to the pool entry's endpoint, not to the node. Stopping GCP
under it only stalls it: when the entry is next leased and run on another node, Globus
resumes it from that node's ``/tmp``, where other files (or none) sit under the same
names. So at ``linger_max``, before GCP stops, the tasks the drain knows live are
cancelled as the user (:mod:`globus_tmp.taskcancel`), and each outcome is logged and,
for a stage-out, written to its record (``stage-status`` shows it).

A cancel that cannot be done (Globus unreachable, tokens expired, 5xx, a cancel Globus
has not finished) must not let the entry run elsewhere while Globus may still run the
task: the lease stays with this node (never released), its record says ``cancelling``
until a deadline (other nodes never take it, :mod:`globus_tmp.leaseproof`; this node
does not start GCP from it either), and node state remembers the tasks
(``UserNodeState.cancel_holds``). The repair, run by every hook of the user and by
``globus-tmp-admin reconcile``, retries the cancel (backing off) and gives the lease
back once every task is cancelled or proven ended, or at the hold's deadline
(:data:`~globus_tmp.taskcancel.HOLD_MAX`). Every step is bounded by a timeout.
"""

from __future__ import annotations

import time

from .errors import GlobusTmpError
from .job import UserIdentity
from .leases import CANCELLING, DRAINING, RUNNING
from .lifecycle import NodeLifecycle, Release
from .nodestate import CancelHold, GcpInstance, UserNodeState
from .phases import Phase
from .taskcancel import CANCEL_BUDGET, CANCELED, ENDED, HOLD_MAX, MARK_TIMEOUT, PENDING, GaveUp
from .useractions import Cancel

RETRY_FIRST = 60.0
RETRY_MAX = 1800.0


def retry_delay(tries: int) -> float:
    """Seconds before the next cancel after ``tries`` failed ones (60 s, doubling, 30 min)."""
    return min(RETRY_FIRST * 2.0 ** max(tries - 1, 0), RETRY_MAX)


class TaskCanceller:
    """The give-up and its retries for one node (the lifecycle's store, log, actions)."""

    def __init__(self, lifecycle: NodeLifecycle) -> None:
        self.lc = lifecycle

    def give_up(
        self,
        user: UserIdentity,
        tasks: tuple[str, ...],
        instance: GcpInstance,
        why: str,
        cause: str = "",
    ) -> str:
        """The drain is at ``linger_max`` with ``tasks`` live (or, with ``cause``, GCP
        never connected and ``tasks`` wait for it in Globus): cancel them before GCP
        stops; ``why`` with what became of them (the stop line)."""
        lc = self.lc
        if not tasks:
            lc.log.error(f"{why}; stopping GCP (no Transfer task known live to cancel)")
            return why
        now = time.time()
        gave_up = GaveUp(
            lc.node, instance.endpoint_name, lc.cfg.linger_max, now, now + HOLD_MAX, cause
        )
        lc.log.error(f"{why}; cancelling task(s) {', '.join(tasks)} before GCP stops")
        cancels = self._cancel(user, list(tasks), gave_up, retried=False)
        pending = [c for c in cancels if c.outcome == PENDING]
        hold = None
        if pending:
            hold = CancelHold(
                tasks=[c.task_id for c in pending],
                since=now,
                until=gave_up.until,
                next_try=time.time() + retry_delay(1),
                error=pending[0].detail,
                marked=self._mark(user, gave_up.entry, CANCELLING, gave_up.until),
            )
        self._record(user, gave_up.entry, cancels, hold)
        for cancel in cancels:
            self._log(cancel, gave_up)
        done = len(cancels) - len(pending)
        if not pending:
            return f"{why}; {done} task(s) cancelled or ended first"
        return (
            f"{why}; {done} task(s) cancelled or ended, {len(pending)} NOT cancelled: lease "
            f"{gave_up.entry} kept until they are"
        )

    def keeps(self, user: UserIdentity, name: str) -> Release | None:
        """The lease of ``name`` stays with this node (a task to cancel), or None."""
        hold = self.lc.store.read(user.name, user.uid).cancel_holds.get(name)
        if hold is None:
            return None
        until = time.strftime("%H:%M", time.localtime(hold.until))
        return Release(
            name, True, f"lease {name} kept for {len(hold.tasks)} task(s) to cancel (until {until})"
        )

    def retry(self, user: UserIdentity) -> list[str]:
        """The repair's part: cancel again the tasks of every hold that is due; give a
        lease back once its tasks are all cancelled or ended, or its hold expired."""
        lc = self.lc
        now = time.time()
        with lc.store.jobs_lock(user.name, lc._left()):
            state = lc._read(user)
            due = {n: h for n, h in state.cancel_holds.items() if h.next_try <= now}
        notes: list[str] = []
        for name, hold in due.items():
            gave_up = GaveUp(lc.node, name, lc.cfg.linger_max, hold.since, hold.until)
            if now >= hold.until:
                lc.log.error(
                    f"gave up cancelling task(s) {', '.join(hold.tasks)} after {HOLD_MAX:g} s "
                    f"({hold.error}); Globus ends a task at its deadline (24 h after submission "
                    "unless it was given a later one)"
                )
                self._record(user, name, [], None)
                notes.append(self._end(user, name, f"its {HOLD_MAX:g} s hold expired"))
                continue
            marked = hold.marked or self._mark(user, name, CANCELLING, hold.until)
            cancels = self._cancel(user, list(hold.tasks), gave_up, retried=True)
            for cancel in cancels:
                self._log(cancel, gave_up, retry="cancel retried: ")
            pending = [c for c in cancels if c.outcome == PENDING]
            notes.append(
                f"cancel of {len(cancels)} task(s) kept by lease {name} retried: "
                f"{len(cancels) - len(pending)} cancelled or ended, {len(pending)} not yet"
            )
            left = None
            if pending:
                tries = hold.tries + 1
                left = CancelHold(
                    [c.task_id for c in pending], hold.since, hold.until,
                    time.time() + retry_delay(tries), tries, pending[0].detail, marked,
                )  # fmt: skip
            self._record(user, name, cancels, left)
            if left is None:
                notes.append(self._end(user, name, "its tasks are cancelled or ended"))
        return notes

    # -- steps -------------------------------------------------------------------

    def _cancel(
        self, user: UserIdentity, tasks: list[str], gave_up: GaveUp, retried: bool
    ) -> list[Cancel]:
        from .metrics import count_api

        try:
            cancels = self.lc.actions_for(user).cancel_tasks(
                tasks, gave_up, retried, min(CANCEL_BUDGET, self.lc._left())
            )
        except GlobusTmpError as exc:  # the step failed or was killed: nothing is known
            count_api("cancel", failed=True)
            return [Cancel(t, PENDING, f"the cancel step failed: {exc}") for t in tasks]
        count_api("cancel", failed=any(c.outcome == PENDING for c in cancels))
        return cancels

    def _mark(self, user: UserIdentity, name: str, phase: str, until: float | None) -> bool:
        try:
            timeout = min(MARK_TIMEOUT, self.lc._step())
            return self.lc.actions_for(user).mark_lease(name, phase, until, timeout)
        except GlobusTmpError as exc:
            self.lc.log.error(f"could not mark lease {name} {phase}: {exc}; retried")
            return False

    def _record(
        self, user: UserIdentity, name: str, cancels: list[Cancel], hold: CancelHold | None
    ) -> None:
        """Node state: the hold (or none), and no cancelled stage-out awaiting its
        outcome (its record says it failed; an ended one is settled as usual)."""
        cancelled = {c.task_id for c in cancels if c.outcome == CANCELED}
        with self.lc.store.jobs_lock(user.name, self.lc._left()):
            state = self.lc._read(user)
            state.stage_tasks = [t for t in state.stage_tasks if t not in cancelled]
            if hold is None:
                state.cancel_holds.pop(name, None)
            else:
                state.cancel_holds[name] = hold
            self.lc.store.write(state)

    def _end(self, user: UserIdentity, name: str, why: str) -> str:
        """The hold is over: give the lease back, unless GCP runs from the entry again
        (a job joined during the give-up), whose own stop then releases it."""
        state: UserNodeState = self.lc.store.read(user.name, user.uid)
        if state.instance is not None and state.instance.endpoint_name == name:
            self._mark(user, name, RUNNING, None)  # lifts the cancel mark, which outranks
            if state.phase == Phase.DRAINING and state.drain_until:  # a drain's
                self._mark(user, name, DRAINING, state.drain_until)
            return f"lease {name} no longer kept ({why}); its GCP runs again"
        released = self.lc._release(user, name)
        with self.lc.store.jobs_lock(user.name, self.lc._left()):
            state = self.lc._read(user)
            self.lc._settle_release(state, released)
            self.lc.store.write(state)
        return f"{released} ({why})"

    def _log(self, cancel: Cancel, gave_up: GaveUp, retry: str = "") -> None:
        """One hook log line per task."""
        so = cancel.stage_out
        of = f" (stage-out {so.get('source')} -> {so.get('destination')})" if so else ""
        line = f"{retry}{gave_up.what()}: task {cancel.task_id}{of} "
        if cancel.outcome == CANCELED:
            line += "cancelled"
        elif cancel.outcome == ENDED:
            line += f"needs no cancel: {cancel.detail}"
        else:
            line += (
                f"NOT cancelled: {cancel.detail}; lease {gave_up.entry} stays with this node, "
                "the next repair retries"
            )
        if cancel.outcome == ENDED:
            self.lc.log.info(line)
        else:
            self.lc.log.error(line)
