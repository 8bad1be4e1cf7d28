"""Issue 18: a drain that gives up at linger_max leaves no live task behind.

The task is bound to the pool entry's endpoint, not to the node: stopped under it, GCP
leaves it to resume from whichever node runs the entry next. The drain cancels it
first; a cancel that cannot be done keeps the lease with this node until the repair's
retry gets through.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from globus_tmp.config import Config
from globus_tmp.errors import PrivilegeError
from globus_tmp.gcp import GcpStatus
from globus_tmp.giveup import retry_delay
from globus_tmp.hooklog import HookLog
from globus_tmp.job import UserIdentity
from globus_tmp.lifecycle import NodeLifecycle, needs_repair
from globus_tmp.nodestate import GcpInstance, NodeStateStore, UserNodeState
from globus_tmp.nodeview import node_view
from globus_tmp.phases import Phase
from globus_tmp.process import ProcessRef
from globus_tmp.reconcile import NodeReconciler
from globus_tmp.taskcancel import CANCELED, ENDED, HOLD_MAX, PENDING, GaveUp
from globus_tmp.useractions import Cancel

from unit.lifecycles import lifecycle_with

ALICE = UserIdentity("alice", 1000, 1000, "/home/alice")
CFG = Config(globus_client_id="app", gcp_cgroup="", linger_max=7200, stop_grace=2)
STUCK, DONE = str(uuid.uuid4()), str(uuid.uuid4())
UNREACHABLE = "cannot reach Globus (ConnectionError: refused); check this host's network"


class FakeActions:
    """The user's side: a GCP (a sleeping child) that ``-stop`` ends, a Transfer API
    that shows ``live`` and answers cancels from ``answers`` (one list per call), a pool
    that records marks and releases. ``calls`` is the order of it all."""

    def __init__(self, gcp: subprocess.Popen[bytes], live: list[str]) -> None:
        self.gcp = gcp
        self.live = live
        self.answers: list[dict[str, str]] = []
        self.calls: list[tuple[Any, ...]] = []
        self.during_cancel: Callable[[], None] = lambda: None
        """What happens elsewhere while the cancel step runs (it may raise: the step died)."""

    def status(self, timeout: float) -> GcpStatus:
        return GcpStatus("connected", "idle")

    def active_tasks(self, endpoint_id: str, timeout: float, max_age: float = 0.0) -> list[str]:
        return self.live

    def settle_stage_outs(self, node: str, timeout: float) -> list[dict[str, Any]]:
        self.calls.append(("settle",))
        return []

    def cancel_tasks(
        self, task_ids: list[str], gave_up: GaveUp, retried: bool, timeout: float
    ) -> list[Cancel]:
        self.calls.append(("cancel", tuple(task_ids), retried, gave_up.entry))
        self.during_cancel()
        said = self.answers.pop(0)
        return [Cancel(t, said.get(t, PENDING), f"said {said.get(t, 'nothing')}") for t in task_ids]

    def mark_lease(self, name: str, phase: str, until: float | None, timeout: float) -> bool:
        self.calls.append(("mark", name, phase, until))
        return True

    def request_stop(self, timeout: float) -> bool:
        self.calls.append(("stop",))
        self.gcp.terminate()
        return True

    def release(self, name: str, timeout: float) -> bool:
        self.calls.append(("release", name))
        return True

    def pool_instances(self, timeout: float) -> list[tuple[ProcessRef, Path]]:
        return []

    def named(self, kind: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == kind]

    def marks(self) -> list[tuple[Any, ...]]:
        """The lease marks but the drain's own "draining" one, which it writes first."""
        return [c for c in self.named("mark") if c[2] != "draining"]


@pytest.fixture
def gcp() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def _draining(
    tmp_path: Path, gcp: subprocess.Popen[bytes], live: list[str], stage_tasks: list[str]
) -> tuple[NodeLifecycle, NodeStateStore, FakeActions, Path]:
    """alice's GCP (pool entry ep1) draining under this test's process as its drain."""
    store = NodeStateStore(tmp_path / "state")
    store.ensure()
    ref = ProcessRef.of(gcp.pid)
    state = UserNodeState("alice", 1000, phase=Phase.DRAINING)
    state.instance = GcpInstance(
        ref.pid, ref.start_ticks, "ep-id", "ep1", "/cfg", "/cfg/log", time.time()
    )
    state.drain = ProcessRef.of(os.getpid())
    state.drain_until, state.drain_tasks, state.stage_tasks = time.time(), live, stage_tasks
    store.write(state)
    log_file = tmp_path / "hooks.log"
    actions = FakeActions(gcp, live)
    lifecycle = lifecycle_with(store, HookLog("drain", log_file, to_stderr=False), actions, cfg=CFG)
    return lifecycle, store, actions, log_file


def test_at_linger_max_the_live_tasks_are_cancelled_before_gcp_stops(
    tmp_path: Path, gcp: subprocess.Popen[bytes]
) -> None:
    lifecycle, store, actions, log_file = _draining(tmp_path, gcp, [STUCK, DONE], [STUCK])
    actions.answers = [{STUCK: CANCELED, DONE: ENDED}]
    message = lifecycle.drain(ALICE, time.time() - 1)
    kinds = [c[0] for c in actions.calls]
    assert kinds.index("cancel") < kinds.index("stop") < kinds.index("release"), kinds
    assert actions.named("cancel") == [("cancel", (STUCK, DONE), False, "ep1")]
    assert actions.named("release") == [("release", "ep1")]
    assert not actions.marks(), "nothing to keep the lease for"
    assert "gave up after linger_max=7200 s" in message and "lease ep1 released" in message
    assert "2 task(s) cancelled or ended first" in message
    log = log_file.read_text()
    assert f"task {STUCK} cancelled" in log
    assert f"task {DONE} needs no cancel: said ended" in log
    state = store.read("alice", 1000)
    assert state.phase == Phase.IDLE and not state.cancel_holds and not state.release_pending
    assert state.stage_tasks == [], "a cancelled stage-out's record says so; not settled again"


def test_a_cancel_that_fails_keeps_the_lease_until_the_repair_gets_through(
    tmp_path: Path, gcp: subprocess.Popen[bytes]
) -> None:
    lifecycle, store, actions, log_file = _draining(tmp_path, gcp, [STUCK, DONE], [])
    actions.answers = [{DONE: CANCELED}]  # STUCK: Globus could not be asked
    before = time.time()
    message = lifecycle.drain(ALICE, time.time() - 1)
    assert not actions.named("release"), "the entry must not run elsewhere"
    (mark,) = actions.marks()
    assert mark[:3] == ("mark", "ep1", "cancelling")
    assert before + HOLD_MAX <= mark[3] <= time.time() + HOLD_MAX
    assert "1 NOT cancelled: lease ep1 kept until they are" in message
    assert "lease ep1 kept for 1 task(s) to cancel" in message
    assert f"task {STUCK} NOT cancelled: said nothing; lease ep1 stays" in log_file.read_text()
    state = store.read("alice", 1000)
    hold = state.cancel_holds["ep1"]
    assert hold.tasks == [STUCK] and hold.marked and hold.error == "said nothing"
    assert state.instance is None and not state.release_pending
    assert not needs_repair(state), "the retry waits for its time"
    assert lifecycle.repair(ALICE) == []

    view = "\n".join(node_view(store, "n1").lines())
    assert f"lease ep1 HELD FOR CANCEL of task(s) {STUCK}" in view and "said nothing" in view
    assert node_view(store, "n1").totals["held_for_cancel"] == 1

    def due() -> None:
        state = store.read("alice", 1000)
        state.cancel_holds["ep1"].next_try = time.time() - 1
        store.write(state)

    due()
    actions.answers = [{}]  # still unreachable: tried again later, and later still
    notes = NodeReconciler(lifecycle).user(ALICE)
    assert "1 task(s) kept by lease ep1 retried: 0 cancelled or ended, 1 not yet" in " ".join(notes)
    hold = store.read("alice", 1000).cancel_holds["ep1"]
    assert hold.tries == 2 and hold.next_try >= time.time() + retry_delay(2) - 5
    assert retry_delay(2) > retry_delay(1)
    assert actions.named("cancel")[-1] == ("cancel", (STUCK,), True, "ep1")
    assert not actions.named("release")

    due()
    actions.answers = [{STUCK: CANCELED}]
    notes = lifecycle.repair(ALICE)
    assert actions.named("release") == [("release", "ep1")]
    assert any("lease ep1 released (its tasks are cancelled or ended)" in n for n in notes)
    retried = "cancel retried: the drain on n1 gave up after linger_max=7200 s"
    assert f"{retried}: task {STUCK} cancelled" in log_file.read_text()
    state = store.read("alice", 1000)
    assert not state.cancel_holds and not state.release_pending and not needs_repair(state)


def test_a_hold_ends_at_its_deadline_even_if_globus_never_answers(
    tmp_path: Path, gcp: subprocess.Popen[bytes]
) -> None:
    lifecycle, store, actions, log_file = _draining(tmp_path, gcp, [STUCK], [])
    actions.answers = [{}]
    lifecycle.drain(ALICE, time.time() - 1)
    state = store.read("alice", 1000)
    state.cancel_holds["ep1"].next_try = state.cancel_holds["ep1"].until = time.time() - 1
    store.write(state)
    notes = lifecycle.repair(ALICE)
    assert len(actions.named("cancel")) == 1, "not asked again past the hold"
    assert actions.named("release") == [("release", "ep1")]
    assert any("hold expired" in n for n in notes)
    assert f"gave up cancelling task(s) {STUCK} after 86400 s" in log_file.read_text()
    assert not store.read("alice", 1000).cancel_holds


def test_a_step_that_dies_leaves_every_task_uncancelled(
    tmp_path: Path, gcp: subprocess.Popen[bytes]
) -> None:
    """The user's step may be killed at its bound, or answer for some tasks only."""
    lifecycle, store, actions, _ = _draining(tmp_path, gcp, [STUCK], [])

    def killed() -> None:
        raise PrivilegeError("the step as the user timed out after 23 s")

    actions.during_cancel = killed
    message = lifecycle.drain(ALICE, time.time() - 1)
    assert "1 NOT cancelled" in message and not actions.named("release")
    hold = store.read("alice", 1000).cancel_holds["ep1"]
    assert hold.error == "the cancel step failed: the step as the user timed out after 23 s"


def test_a_drain_that_died_past_linger_max_is_given_up_by_the_repair(
    tmp_path: Path, gcp: subprocess.Popen[bytes]
) -> None:
    """The next hook (or reconcile) finishes a drain killed at its deadline the same way."""
    lifecycle, store, actions, _ = _draining(tmp_path, gcp, [STUCK], [])
    state = store.read("alice", 1000)
    state.drain = None  # the drain is gone
    state.drain_until = time.time() - 10
    store.write(state)
    actions.answers = [{STUCK: CANCELED}]
    message = lifecycle.after_last_job(ALICE)
    assert "its drain's linger_max had run out" in message
    assert actions.named("cancel") == [("cancel", (STUCK,), False, "ep1")]
    assert actions.named("release") == [("release", "ep1")]


def test_a_job_joining_during_the_give_up_keeps_gcp_and_the_lease(
    tmp_path: Path, gcp: subprocess.Popen[bytes]
) -> None:
    """A Prolog joins while the cancel runs: GCP stays for its job, from the kept entry;
    once the cancel goes through the lease is the running GCP's again, not released."""
    lifecycle, store, actions, _ = _draining(tmp_path, gcp, [STUCK], [])

    def joined_meanwhile() -> None:
        state = store.read("alice", 1000)  # as the Prolog's join does
        state.jobs["9"], state.phase = time.time(), Phase.RUNNING
        state.drain_until, state.drain_tasks = None, []
        store.write(state)
        actions.during_cancel = lambda: None

    actions.during_cancel = joined_meanwhile
    actions.answers = [{}, {STUCK: CANCELED}]
    assert "job(s) 9 joined meanwhile" in lifecycle.drain(ALICE, time.time() - 1)
    assert not actions.named("stop") and gcp.poll() is None
    state = store.read("alice", 1000)
    state.cancel_holds["ep1"].next_try = time.time() - 1
    store.write(state)
    notes = lifecycle.repair(ALICE)
    assert any("lease ep1 no longer kept" in n and "its GCP runs again" in n for n in notes)
    assert actions.named("mark")[-1] == ("mark", "ep1", "running", None)
    assert not actions.named("release")
    assert not store.read("alice", 1000).cancel_holds
