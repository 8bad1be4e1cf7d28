"""Task ids from the user's side enter root's node state only UUID-shaped and bounded.

A stage-out record (or the user's step) can say anything: a ~1 MiB "task id" pushed the
state file past its read bound, and the next hook "started afresh", forgetting the
job set and the holds.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from globus_tmp.activity import TransferAwareActivity
from globus_tmp.config import Config
from globus_tmp.gcp import GcpStatus
from globus_tmp.hooklog import HookLog
from globus_tmp.job import JobContext, UserIdentity
from globus_tmp.nodestate import (
    MAX_STAGE_TASKS,
    MAX_TASKS,
    GcpInstance,
    HeldTmp,
    NodeStateStore,
    UserNodeState,
    accept_task_ids,
    is_task_id,
)
from globus_tmp.process import ProcessRef

from unit.lifecycles import lifecycle_with

ALICE = UserIdentity("alice", 1000, 1000, "/home/alice")


def _ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def test_only_uuid_shaped_ids_are_taken_and_at_most_the_bound() -> None:
    good = _ids(MAX_TASKS + 5)
    assert is_task_id(good[0]) and is_task_id(good[0].upper())
    for bad in ("x" * (1 << 20), good[0] + "\n", good[0].replace("-", "_"), 7, None, ""):
        assert not is_task_id(bad)
    taken, refused = accept_task_ids(["../x", good[0], good[0], *good[1:]])
    assert taken == good[:MAX_TASKS] and refused == 1 + 5


class FakeActions:
    """The user's side, answering what a forged stage-out record would make it answer."""

    def __init__(self, outcomes: list[Any], live: list[Any] | None = None) -> None:
        self.outcomes = outcomes
        self.live = live or []

    def submit_stage_outs(self, *args: object) -> list[dict[str, Any]]:
        return self.outcomes

    def settle_stage_outs(self, *args: object) -> list[dict[str, Any]]:
        return []

    def status(self, timeout: float) -> GcpStatus:
        return GcpStatus("connected", "idle")

    def active_tasks(self, *args: object) -> list[Any]:
        return self.live


def _epilog(tmp_path: Path, actions: FakeActions, stage_tasks: list[str]) -> tuple[str, Path]:
    """The Epilog of job 5 (a held private /tmp, so its stage-outs are submitted; job 6
    stays, so GCP does): its message, and the hook log."""
    store = NodeStateStore(tmp_path / "state")
    store.ensure()
    log_file = tmp_path / "hooks.log"
    log = HookLog("epilog", log_file, to_stderr=False)
    now = time.time()
    hold = HeldTmp(path=str(tmp_path / "hold"), size=1, since=now)
    state = UserNodeState("alice", 1000, jobs={"5": now, "6": now}, holds={"5": hold})
    state.job_tmp, state.stage_tasks = {"5": str(tmp_path / "export")}, stage_tasks
    store.write(state)
    lifecycle = lifecycle_with(store, log, actions)
    message = lifecycle.epilog(JobContext("5", "n1", ALICE))
    return message, log_file


def _outcome(task_id: object) -> dict[str, Any]:
    return {"key": "c.5/n1.1", "source": "/tmp/x", "destination": "d:/x",
            "state": "submitted", "task_id": task_id, "error": None}  # fmt: skip


def test_a_forged_huge_task_id_cannot_make_the_state_start_afresh(tmp_path: Path) -> None:
    good = _ids(MAX_TASKS + 36)
    outcomes = [_outcome("f" * (1 << 20)), *map(_outcome, good)]
    message, log_file = _epilog(tmp_path, FakeActions(outcomes), [])
    store = NodeStateStore(tmp_path / "state")
    assert store.path("alice").stat().st_size < 16 << 10
    state = store.read("alice", 1000)
    assert state.recovered_from is None and sorted(state.jobs) == ["6"]
    assert state.stage_tasks == sorted(good[:MAX_TASKS])
    assert state.holds["5"].tasks == good[:MAX_TASKS]  # the hold is kept for them
    assert "1 job(s) remain" in message
    assert "37 task id(s) from alice's records refused" in log_file.read_text()


def test_ids_awaiting_their_outcome_are_bounded_per_user_and_node(tmp_path: Path) -> None:
    waiting = sorted(_ids(MAX_STAGE_TASKS - 10))
    new = _ids(MAX_TASKS)
    _, log_file = _epilog(tmp_path, FakeActions([_outcome(t) for t in new]), waiting)
    state = NodeStateStore(tmp_path / "state").read("alice", 1000)
    assert len(state.stage_tasks) == MAX_STAGE_TASKS
    assert set(new[:10]) <= set(state.stage_tasks)
    assert f"{MAX_TASKS - 10} task id(s) from alice's records refused" in log_file.read_text()


def test_a_drains_live_tasks_are_bounded_and_unusable_ones_are_no_proof() -> None:
    me = ProcessRef.of(os.getpid())
    instance = GcpInstance(me.pid, me.start_ticks, "ep-id", "ep1", "/c", "/l", time.time())
    activity = TransferAwareActivity(Config(globus_client_id="app"))
    live = _ids(MAX_TASKS + 1)
    seen = activity.check(FakeActions([], ["x" * 4096, *live]), instance, 5)  # type: ignore[arg-type]
    assert seen.active and seen.verified and seen.tasks == tuple(live[:MAX_TASKS])
    assert "2 task id(s) from the user's side refused" in seen.detail
    forged = activity.check(FakeActions([], ["x" * 4096]), instance, 5)  # type: ignore[arg-type]
    assert not forged.verified and forged.tasks == ()  # GCP's idle alone proves nothing
