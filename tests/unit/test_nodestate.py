"""Node state phases: the words on disk, and the transitions a write may make."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from globus_tmp.errors import IllegalTransition, StateError
from globus_tmp.locks import LockTimeout
from globus_tmp.nodestate import NodeStateStore
from globus_tmp.phases import TRANSITIONS, Phase

# a state file as version 1 has always written it
LEGACY = {
    "user": "alice", "uid": 1000, "jobs": {"7": 1.0}, "phase": "draining", "instance": None,
    "error": None, "error_at": None, "drain_pid": None, "drain_start_ticks": None,
    "drain_until": None, "drain_tasks": [], "starting": None, "release_pending": [],
    "job_tmp": {}, "holds": {}, "stage_tasks": [], "updated": 1.0, "version": 1,
}  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> NodeStateStore:
    store = NodeStateStore(tmp_path / "state")
    store.ensure()
    return store


def test_phases_are_the_words_on_disk(store: NodeStateStore) -> None:
    store.path("alice").write_text(json.dumps(LEGACY))
    state = store.read("alice", 1000)
    assert state.phase is Phase.DRAINING and state.phase.value == "draining"
    assert f"{state.phase}" == str(state.phase) == "draining"
    state.phase = Phase.RUNNING
    store.write(state)
    doc = json.loads(store.path("alice").read_text())
    added = {"watch_pid": None, "watch_start_ticks": None, "idle_until": None}  # with defaults
    doc_rest = {"phase": "running", "updated": doc["updated"], "cancel_holds": {}}
    assert doc == {**LEGACY, **added, **doc_rest}


def test_an_unknown_phase_is_an_unreadable_file(store: NodeStateStore) -> None:
    store.path("alice").write_text(json.dumps({**LEGACY, "phase": "levitating"}))
    state = store.read("alice", 1000)
    assert state.phase is Phase.IDLE and state.jobs == {} and state.recovered_from


def test_an_illegal_transition_writes_nothing(store: NodeStateStore) -> None:
    state = store.read("alice", 1000)
    state.phase = Phase.STARTING
    store.write(state)
    before = store.path("alice").read_text()
    state.phase = Phase.DRAINING  # a start that has not ended cannot be drained
    with pytest.raises(IllegalTransition) as caught:
        store.write(state)
    assert (caught.value.from_phase, caught.value.to_phase) == ("starting", "draining")
    assert isinstance(caught.value, StateError)
    assert store.path("alice").read_text() == before
    state.phase = Phase.RUNNING  # from what is on disk, not from the refused phase
    store.write(state)
    assert store.read("alice", 1000).phase is Phase.RUNNING


@pytest.mark.parametrize("old", list(Phase))
def test_every_transition_is_checked(store: NodeStateStore, old: Phase) -> None:
    for new in Phase:
        store.path("alice").write_text(json.dumps({**LEGACY, "phase": old.value}))
        state = store.read("alice", 1000)
        state.phase = new
        if new is old or new in TRANSITIONS[old]:
            store.write(state)
            assert store.read("alice", 1000).phase is new
        else:
            with pytest.raises(IllegalTransition):
                store.write(state)


def test_the_graph_leaves_no_phase_stuck() -> None:
    """From every phase GCP can be stopped for good (IDLE) and started again."""
    for phase in Phase:
        seen, todo = {phase}, [phase]
        while todo:
            for nxt in TRANSITIONS[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        assert {Phase.IDLE, Phase.STARTING, Phase.RUNNING} <= seen, phase


def test_lock_timeout_is_a_state_error_with_fields(store: NodeStateStore) -> None:
    with store.jobs_lock("alice"), pytest.raises(LockTimeout) as caught:
        store.jobs_lock("alice", timeout=0.1).__enter__()
    exc = caught.value
    assert isinstance(exc, StateError) and exc.timeout == 0.1
    assert exc.path == str(store.root / "locks" / "alice.jobs.lock")
