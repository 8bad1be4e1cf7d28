"""The epilog reconciles the job set against the jobs that really run on the node."""

from __future__ import annotations

import time
from pathlib import Path

from globus_tmp.config import Config
from globus_tmp.hooklog import HookLog
from globus_tmp.job import JobContext, UserIdentity
from globus_tmp.lifecycle import NodeLifecycle
from globus_tmp.nodestate import NodeStateStore, UserNodeState


class LiveJobs:
    """A JobProbe with a fixed answer (what the slurmstepd scan would find)."""

    def __init__(self, live: set[str]) -> None:
        self.live = live
        self.asked = 0

    def live_job_ids(self) -> set[str]:
        self.asked += 1
        return self.live


def _lifecycle(tmp_path: Path, probe: LiveJobs) -> tuple[NodeLifecycle, NodeStateStore]:
    store = NodeStateStore(tmp_path / "state")
    store.ensure()
    cfg = Config(job_grace=60)
    log = HookLog("test", to_stderr=False)
    return NodeLifecycle(cfg, "n1", store, log, time.monotonic() + 30, jobs=probe), store


def test_vanished_old_jobs_are_dropped_young_ones_kept(tmp_path: Path) -> None:
    probe = LiveJobs({"2"})
    lifecycle, store = _lifecycle(tmp_path, probe)
    user = UserIdentity("alice", 1000, 1000, "/home/alice")
    old, young = time.time() - 3600, time.time()
    store.write(UserNodeState("alice", 1000, jobs={"1": old, "2": old, "3": old, "4": young}))
    message = lifecycle.epilog(JobContext("3", "n1", user))
    assert "dropped vanished job(s) 1" in message
    assert sorted(store.read("alice", 1000).jobs) == ["2", "4"]


def test_no_scan_when_every_job_is_young(tmp_path: Path) -> None:
    probe = LiveJobs(set())
    lifecycle, store = _lifecycle(tmp_path, probe)
    user = UserIdentity("alice", 1000, 1000, "/home/alice")
    store.write(UserNodeState("alice", 1000, jobs={"1": time.time(), "2": time.time()}))
    lifecycle.epilog(JobContext("1", "n1", user))
    assert probe.asked == 0
    assert sorted(store.read("alice", 1000).jobs) == ["2"]
