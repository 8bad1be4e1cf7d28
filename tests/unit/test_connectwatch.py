"""A job never waits on Globus: the Prolog returns once GCP runs, a watcher records the
connect (or stops GCP and frees its lease), and after the last job GCP lingers for the
user's next job (``idle_linger``) inside the drain."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from globus_tmp.activity import Activity
from globus_tmp.config import Config, parse_config
from globus_tmp.errors import ConfigError
from globus_tmp.gcp import GcpStatus
from globus_tmp.hooklog import HookLog
from globus_tmp.job import JobContext, UserIdentity
from globus_tmp.lifecycle import NodeLifecycle, needs_repair
from globus_tmp.nodestate import GcpInstance, NodeStateStore, UserNodeState
from globus_tmp.phases import Phase
from globus_tmp.process import ProcessRef
from globus_tmp.slurmconf import read_slurm_settings
from globus_tmp.useractions import Started

from unit.lifecycles import lifecycle_with

ME = UserIdentity("alice", os.getuid(), os.getgid(), "/nonexistent")
CFG = Config(gcp_cgroup="", stop_grace=1, start_timeout=2, gcp_path=sys.executable)


@pytest.fixture
def gcp() -> Iterator[ProcessRef]:
    """A process standing in for GCP: alive until stopped (its own session, as GCP)."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield ProcessRef.of(proc.pid)
    proc.kill()
    proc.wait()


class FakeActions:
    """The user's side: ``-status`` answers from ``online``; records stops and releases."""

    def __init__(self, online: list[str], gcp: ProcessRef | None = None) -> None:
        self.online = online
        self.gcp = gcp
        self.released: list[str] = []
        self.stops = 0
        self.marked: list[str] = []

    def status(self, timeout: float) -> GcpStatus:
        said = self.online.pop(0) if len(self.online) > 1 else self.online[0]
        return GcpStatus(said, "idle")

    def request_stop(self, timeout: float) -> bool:
        self.stops += 1
        return True

    def release(self, name: str, timeout: float) -> bool:
        self.released.append(name)
        return True

    def mark_lease(self, name: str, phase: str, until: float | None, timeout: float) -> bool:
        self.marked.append(f"{name} {phase}")
        return True

    def start(self, node: str, budget: float, **kwargs: Any) -> Started:
        assert self.gcp is not None
        return Started(_instance(self.gcp, connected=None), None)

    def settle_stage_outs(self, *args: object) -> list[dict[str, Any]]:
        return []


class RecordingWatch:
    """A :class:`ConnectWatchLauncher` that keeps the watch for the test to run."""

    def __init__(self) -> None:
        self.watches: list[Callable[[], str]] = []

    def launch(self, watch: Callable[[], str], log: HookLog, bound: float) -> ProcessRef:
        self.watches.append(watch)
        return ProcessRef.of(os.getpid())  # the watch runs in this process


class InProcessDrain:
    def __init__(self) -> None:
        self.launched = 0

    def launch(self, user: UserIdentity, node: str, until: float) -> ProcessRef:
        self.launched += 1
        return ProcessRef.of(os.getpid())


class FixedActivity:
    def __init__(self, activity: Activity | None) -> None:
        self.activity = activity
        self.calls = 0

    def check(
        self, actions: object, instance: object, timeout: float, shared: bool = False
    ) -> Activity:
        self.calls += 1
        if self.activity is None:
            raise AssertionError("the Epilog must not ask about transfers with idle_linger")
        return self.activity


def _instance(ref: ProcessRef, connected: float | None) -> GcpInstance:
    now = time.time()
    return GcpInstance(ref.pid, ref.start_ticks, "ep-id", "ep1", "/c", "/l", now, connected)


def _setup(
    tmp_path: Path, actions: FakeActions, cfg: Config = CFG, **parts: Any
) -> tuple[NodeStateStore, NodeLifecycle, Path]:
    store = NodeStateStore(tmp_path / "state")
    store.ensure()
    log_file = tmp_path / "hooks.log"
    lifecycle = lifecycle_with(
        store, HookLog("t", log_file, to_stderr=False), actions, cfg=cfg, **parts
    )
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=c\n")
    lifecycle._slurm = read_slurm_settings(conf)
    return store, lifecycle, log_file


def _running(store: NodeStateStore, inst: GcpInstance, jobs: tuple[str, ...] = ("1",)) -> None:
    state = UserNodeState(ME.name, ME.uid, jobs=dict.fromkeys(jobs, time.time()))
    state.phase, state.instance = Phase.RUNNING, inst
    store.write(state)


def test_a_cold_prolog_returns_before_connect_and_leaves_a_watcher(
    tmp_path: Path, gcp: ProcessRef
) -> None:
    watches = RecordingWatch()
    store, lifecycle, _ = _setup(tmp_path, FakeActions(["connecting"], gcp), watches=watches)
    message = lifecycle.prolog(JobContext("1", "n1", ME))
    assert f"started GCP pid {gcp.pid}" in message and "connecting: watcher pid" in message
    state = store.read(ME.name, ME.uid)
    assert state.phase == Phase.RUNNING and state.instance is not None
    assert state.instance.connected is None and state.watch == ProcessRef.of(os.getpid())
    assert len(watches.watches) == 1
    assert "joined GCP" in lifecycle.prolog(JobContext("2", "n1", ME))
    assert len(watches.watches) == 1, "a join starts no second watcher"


def test_the_watcher_records_the_connect(tmp_path: Path, gcp: ProcessRef) -> None:
    actions = FakeActions(["connecting", "connecting", "connected"])
    store, lifecycle, _ = _setup(tmp_path, actions)
    _running(store, _instance(gcp, connected=None))
    said = lifecycle.watch_connect(ME, gcp.pid, time.time() + 10)
    assert "connected" in said
    state = store.read(ME.name, ME.uid)
    assert state.instance is not None and state.instance.connected is not None
    assert state.watch is None and gcp.alive() and actions.released == []


def test_a_gcp_that_never_connects_is_stopped_and_its_lease_freed(
    tmp_path: Path, gcp: ProcessRef
) -> None:
    actions = FakeActions(["connecting"])
    store, lifecycle, log_file = _setup(tmp_path, actions)
    _running(store, _instance(gcp, connected=None))
    start = time.monotonic()
    lifecycle.watch_connect(ME, gcp.pid, time.time() + 1.0)
    assert time.monotonic() - start < 1.0 + CFG.stop_grace + 2
    assert not gcp.alive() and actions.stops == 1 and actions.released == ["ep1"]
    state = store.read(ME.name, ME.uid)
    assert state.phase == Phase.FAILED and state.instance is None
    assert "did not connect within start_timeout=2 s" in (state.error or "")
    assert "last status: connecting" in log_file.read_text()


def test_a_killed_watcher_is_replaced_by_the_next_repair(tmp_path: Path, gcp: ProcessRef) -> None:
    watches = RecordingWatch()
    store, lifecycle, _ = _setup(tmp_path, FakeActions(["connected"]), watches=watches)
    _running(store, _instance(gcp, connected=None))  # no watcher recorded: it was killed
    assert needs_repair(store.read(ME.name, ME.uid))
    notes = lifecycle.repair(ME)
    assert any("watcher pid" in n for n in notes) and len(watches.watches) == 1
    watches.watches[0]()
    state = store.read(ME.name, ME.uid)
    assert state.instance is not None and state.instance.connected is not None
    assert not needs_repair(state)


def test_the_last_epilog_hands_over_to_the_linger_without_asking_globus(
    tmp_path: Path, gcp: ProcessRef
) -> None:
    drains, activity = InProcessDrain(), FixedActivity(None)
    cfg = Config(gcp_cgroup="", idle_linger=30)
    store, lifecycle, _ = _setup(
        tmp_path, FakeActions(["connected"]), cfg, drains=drains, activity=activity
    )
    _running(store, _instance(gcp, connected=time.time()))
    message = lifecycle.epilog(JobContext("1", "n1", ME))
    assert "idle_linger=30 s: drain pid" in message, message
    state = store.read(ME.name, ME.uid)
    assert state.phase == Phase.DRAINING and drains.launched == 1 and activity.calls == 0
    assert state.idle_until is not None and 25 < state.idle_until - time.time() <= 30


def test_without_idle_linger_an_idle_gcp_stops_at_the_last_epilog(
    tmp_path: Path, gcp: ProcessRef
) -> None:
    activity = FixedActivity(Activity(False, "no task", True))
    cfg = Config(gcp_cgroup="", idle_linger=0, stop_grace=1)
    actions = FakeActions(["connected"])
    store, lifecycle, _ = _setup(tmp_path, actions, cfg, drains=InProcessDrain(), activity=activity)
    _running(store, _instance(gcp, connected=time.time()))
    assert "stopped" in lifecycle.epilog(JobContext("1", "n1", ME)) or not gcp.alive()
    assert actions.released == ["ep1"] and store.read(ME.name, ME.uid).phase == Phase.IDLE


def _lingering(store: NodeStateStore, inst: GcpInstance, seconds: float) -> None:
    state = UserNodeState(ME.name, ME.uid)
    state.phase, state.instance = Phase.DRAINING, inst
    state.drain, state.drain_until = ProcessRef.of(os.getpid()), time.time() + 60
    state.idle_until = time.time() + seconds
    store.write(state)


def test_the_drain_keeps_an_idle_gcp_up_for_idle_linger(tmp_path: Path, gcp: ProcessRef) -> None:
    activity = FixedActivity(Activity(False, "no task", True))
    cfg = Config(gcp_cgroup="", idle_linger=1.5, linger_poll_seconds=30, stop_grace=1)
    actions = FakeActions(["connected"])
    store, lifecycle, _ = _setup(tmp_path, actions, cfg, activity=activity)
    _lingering(store, _instance(gcp, connected=time.time()), 1.5)
    start = time.monotonic()
    said = lifecycle.drain(ME, time.time() + 60)
    took = time.monotonic() - start
    assert 1.4 <= took < 1.5 + cfg.stop_grace + 2, took  # woke at the linger's end, not 30 s
    assert "idle_linger=1.5 s over" in said and actions.released == ["ep1"]
    assert actions.marked == ["ep1 draining"], "the drain, not the Epilog, marks the lease"


def test_a_job_arriving_during_the_linger_joins_it(tmp_path: Path, gcp: ProcessRef) -> None:
    activity = FixedActivity(Activity(False, "no task", True))
    cfg = Config(gcp_cgroup="", idle_linger=60, linger_poll_seconds=0.2)
    actions = FakeActions(["connected"])
    store, lifecycle, _ = _setup(tmp_path, actions, cfg, activity=activity)
    _lingering(store, _instance(gcp, connected=time.time()), 60)
    message = lifecycle.prolog(JobContext("2", "n1", ME))
    assert "during its drain" in message
    state = store.read(ME.name, ME.uid)
    assert state.phase == Phase.RUNNING and state.idle_until is None
    assert "joined" in lifecycle.drain(ME, time.time() + 60)
    assert gcp.alive() and actions.released == []


class SleepDrain:
    """A :class:`DrainLauncher` whose drain is another live process (so the drain the
    test runs in-process can see itself replaced)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def launch(self, user: UserIdentity, node: str, until: float) -> ProcessRef:
        self.procs.append(subprocess.Popen(["sleep", "60"]))
        return ProcessRef.of(self.procs[-1].pid)

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def test_a_job_that_comes_and_goes_between_two_looks_of_the_drain_gets_a_fresh_linger(
    tmp_path: Path, gcp: ProcessRef
) -> None:
    """Found in the lab: job 2 joined the linger and ended before the drain looked
    again; its Epilog left the drain be, and the drain, its linger cleared by the join,
    stopped GCP at its next look under job 3's nose."""
    drains = SleepDrain()
    try:
        cfg = Config(gcp_cgroup="", idle_linger=30, linger_poll_seconds=30, stop_grace=1)
        actions = FakeActions(["connected"])
        store, lifecycle, _ = _setup(
            tmp_path, actions, cfg, drains=drains, activity=FixedActivity(None)
        )
        _lingering(store, _instance(gcp, connected=time.time()), 0.5)
        assert "during its drain" in lifecycle.prolog(JobContext("2", "n1", ME))
        said = lifecycle.epilog(JobContext("2", "n1", ME))
        assert "idle_linger=30 s: drain pid" in said and len(drains.procs) == 1, said
        state = store.read(ME.name, ME.uid)
        assert state.drain == ProcessRef.of(drains.procs[0].pid), "the drain is replaced"
        assert state.phase == Phase.DRAINING and state.drain_until is not None
        assert state.idle_until is not None and state.idle_until - time.time() > 25
        assert "another drain" in lifecycle.drain(ME, time.time() + 60)  # the old one
        assert gcp.alive() and actions.released == [] and actions.stops == 0
    finally:
        drains.close()


class JobDuringLook(FixedActivity):
    """The drain's look at transfers, during which a job joins and ends (``visit``)."""

    def __init__(self, visit: Callable[[], None]) -> None:
        super().__init__(Activity(False, "no task", True))
        self.visit: Callable[[], None] | None = visit

    def check(
        self, actions: object, instance: object, timeout: float, shared: bool = False
    ) -> Activity:
        visit, self.visit = self.visit, None
        if visit is not None:
            visit()
        return super().check(actions, instance, timeout, shared)


def test_the_drain_does_not_stop_gcp_that_a_job_re_armed_during_its_look(
    tmp_path: Path, gcp: ProcessRef
) -> None:
    """Its linger over, the drain asks about transfers; meanwhile a job comes and goes
    and its Epilog re-arms the linger: the stop is decided afresh under the lock."""
    drains = SleepDrain()
    try:
        cfg = Config(gcp_cgroup="", idle_linger=30, linger_poll_seconds=30, stop_grace=1)
        actions = FakeActions(["connected"])
        lifecycle: NodeLifecycle | None = None

        def job_comes_and_goes() -> None:
            assert lifecycle is not None
            lifecycle.prolog(JobContext("2", "n1", ME))
            lifecycle.epilog(JobContext("2", "n1", ME))

        store, lifecycle, _ = _setup(
            tmp_path, actions, cfg, drains=drains, activity=JobDuringLook(job_comes_and_goes)
        )
        _lingering(store, _instance(gcp, connected=time.time()), 0)
        assert "another drain" in lifecycle.drain(ME, time.time() + 60)
        assert gcp.alive() and actions.stops == 0 and len(drains.procs) == 1
    finally:
        drains.close()


def test_a_join_repairs_after_the_jobs_lock_not_under_it(tmp_path: Path, gcp: ProcessRef) -> None:
    """Found in the lab: three Prologs of one user at once; one joined a GCP whose
    watcher was not recorded yet and ran the repair (which takes the jobs lock itself)
    still holding the jobs lock: it waited for itself until slurmd's
    PrologEpilogTimeout. The repair runs once the join's write is done."""
    import threading

    watches = RecordingWatch()
    store, lifecycle, _ = _setup(tmp_path, FakeActions(["connecting"], gcp), watches=watches)
    _running(store, _instance(gcp, connected=None))  # started; its watcher not yet recorded
    said: list[str] = []
    job = JobContext("2", "n1", ME)
    joining = threading.Thread(target=lambda: said.append(lifecycle.prolog(job)), daemon=True)
    joining.start()
    joining.join(10)
    assert not joining.is_alive(), "the join hung on its own jobs lock"
    assert said and "joined GCP" in said[0] and "watcher pid" in said[0], said
    assert len(watches.watches) == 1


def test_idle_linger_is_checked_against_linger_max() -> None:
    assert parse_config({"idle_linger": 0}, "f").idle_linger == 0
    with pytest.raises(ConfigError, match=r"'idle_linger' \(900\) must not exceed linger_max"):
        parse_config({"idle_linger": 900, "linger_max": 600}, "f")
    with pytest.raises(ConfigError, match='must be "spawned" or "connected"'):
        parse_config({"start_wait": "forever"}, "f")
