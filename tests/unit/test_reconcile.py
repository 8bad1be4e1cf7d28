"""The epilog reconciles the job set against the jobs that really run on the node."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest
from globus_tmp.config import Config
from globus_tmp.hooklog import HookLog
from globus_tmp.job import JobContext, UserIdentity
from globus_tmp.lifecycle import NodeLifecycle
from globus_tmp.nodestate import NodeStateStore, UserNodeState
from globus_tmp.slurmconf import read_slurm_settings
from globus_tmp.slurmjobs import SlurmJobProbe, step_jobs


class GoneJobs:
    """A JobProbe with a fixed answer: which of the asked jobs are proven gone."""

    def __init__(self, gone: set[str]) -> None:
        self.gone_ids = gone
        self.asked = 0

    def gone(self, user: str, job_ids: Collection[str]) -> tuple[set[str], str]:
        self.asked += 1
        return {j for j in job_ids if j in self.gone_ids}, "test"

    def running_here(self, user: str) -> set[str] | None:
        return {"7", "8"}


def _lifecycle(tmp_path: Path, probe: GoneJobs) -> tuple[NodeLifecycle, NodeStateStore]:
    store = NodeStateStore(tmp_path / "state")
    store.ensure()
    cfg = Config(job_grace=60)
    log = HookLog("test", to_stderr=False)
    return NodeLifecycle(cfg, "n1", store, log, time.monotonic() + 30, jobs=probe), store


def test_gone_old_jobs_are_dropped_young_ones_kept(tmp_path: Path) -> None:
    probe = GoneJobs({"1", "4"})
    lifecycle, store = _lifecycle(tmp_path, probe)
    user = UserIdentity("alice", 1000, 1000, "/home/alice")
    old, young = time.time() - 3600, time.time()
    store.write(UserNodeState("alice", 1000, jobs={"1": old, "2": old, "3": old, "4": young}))
    message = lifecycle.epilog(JobContext("3", "n1", user))
    assert "dropped gone job(s) 1 (test)" in message
    assert sorted(store.read("alice", 1000).jobs) == ["2", "4"]


def test_no_probe_when_every_job_is_young(tmp_path: Path) -> None:
    probe = GoneJobs(set())
    lifecycle, store = _lifecycle(tmp_path, probe)
    user = UserIdentity("alice", 1000, 1000, "/home/alice")
    store.write(UserNodeState("alice", 1000, jobs={"1": time.time(), "2": time.time()}))
    lifecycle.epilog(JobContext("1", "n1", user))
    assert probe.asked == 0
    assert sorted(store.read("alice", 1000).jobs) == ["2"]


def test_an_unreadable_state_file_gets_its_job_set_back_from_slurm(tmp_path: Path) -> None:
    """A lost job set would let the next epilog stop GCP under the jobs it forgot."""
    lifecycle, store = _lifecycle(tmp_path, GoneJobs(set()))
    store.path("alice").write_text("{truncated")
    user = UserIdentity("alice", 1000, 1000, "/home/alice")
    message = lifecycle.epilog(JobContext("7", "n1", user))
    assert "1 job(s) remain" in message
    assert sorted(store.read("alice", 1000).jobs) == ["8"]


# the probe: slurmd's step sockets, Contain, and what is never taken as proof ----------


_STEPS: list[socket.socket] = []  # listening, like a live slurmstepd, until the test ends


@pytest.fixture(autouse=True)
def _close_steps() -> Iterator[None]:
    yield
    while _STEPS:
        _STEPS.pop().close()


def _spool(tmp_path: Path, node: str, jobs: dict[str, str], live: bool = True) -> Path:
    """A spool dir like slurmd's: root-owned sockets ``<node>_<job>.<step>``, listened on
    (``live``) or left behind by a dead step."""
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o755, exist_ok=True)
    for job, step in jobs.items():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(spool / f"{node}_{job}.{step}"))
        if live:
            sock.listen(1)
            _STEPS.append(sock)
        else:
            sock.close()
    return spool


def _conf(tmp_path: Path, spool: Path, flags: str) -> Path:
    conf = tmp_path / "slurm.conf"
    conf.write_text(
        f"# lab\nClusterName=x\nSlurmdSpoolDir={spool}\nPrologFlags={flags}\nNodeName=n1 CPUs=1\n"
    )
    return conf


def test_step_sockets_are_read_and_only_root_owned_sockets_count(tmp_path: Path) -> None:
    spool = _spool(tmp_path, "n1", {"10": "4294967292", "11": "0"})
    (spool / "n1_12.0").write_text("a plain file is no step")
    (spool / "n2_13.0").touch()
    forged = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    forged.bind(str(spool / "n1_14.0"))
    forged.close()
    os.chown(spool / "n1_14.0", 65534, 65534)  # a user's socket is no witness
    assert step_jobs(spool, "n1") == {"10", "11"}


def test_a_dead_steps_socket_left_behind_is_no_witness(tmp_path: Path) -> None:
    """A node that died hard leaves its steps' sockets; nobody listens on them."""
    _spool(tmp_path, "n1", {"10": "4294967292"}, live=False)
    spool = _spool(tmp_path, "n1", {"11": "4294967292"})
    assert step_jobs(spool, "n1") == {"10", "11"}, "not probed: present counts"
    assert step_jobs(spool, "n1", probe=["10", "11"]) == {"11"}
    probe = SlurmJobProbe(read_slurm_settings(_conf(tmp_path, spool, "Alloc,Contain")), "n1")
    assert probe.gone("alice", ["10", "11"])[0] == {"10"}


def test_an_untrusted_spool_dir_proves_nothing(tmp_path: Path) -> None:
    spool = _spool(tmp_path, "n1", {"10": "0"})
    spool.chmod(0o777)
    assert step_jobs(spool, "n1") is None
    probe = SlurmJobProbe(read_slurm_settings(_conf(tmp_path, spool, "Alloc,Contain")), "n1")
    gone, _ = probe.gone("nobody-such", ["10", "20"])
    assert gone == set(), "without a trusted witness nothing is dropped"


def test_with_contain_a_job_without_a_step_here_is_gone(tmp_path: Path) -> None:
    spool = _spool(tmp_path, "n1", {"10": "4294967292"})
    probe = SlurmJobProbe(read_slurm_settings(_conf(tmp_path, spool, "Alloc,Contain")), "n1")
    gone, how = probe.gone("alice", ["10", "20"])
    assert gone == {"20"} and "Contain" in how


def _squeue(tmp_path: Path, script: str) -> str:
    path = tmp_path / "squeue"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return str(path)


def test_without_contain_absence_here_is_no_proof(tmp_path: Path) -> None:
    """Issue 7 item 1: a node of a multi-node job has no step between sruns (Alloc only),
    so only slurmctld's word can prove the job gone; no answer proves nothing."""
    spool = _spool(tmp_path, "n1", {})
    settings = read_slurm_settings(_conf(tmp_path, spool, "Alloc"))
    running = _squeue(tmp_path, 'echo "20 RUNNING"; echo "21 COMPLETED"')
    gone, how = SlurmJobProbe(settings, "n1", squeue=running).gone("alice", ["20", "21", "22"])
    assert gone == {"21", "22"} and how == "not listed by squeue"
    assert SlurmJobProbe(settings, "n1", squeue=running).running_here("alice") == {"20"}
    broken = _squeue(tmp_path, "echo 'slurm_load_jobs error: Unable to contact' >&2; exit 1")
    gone, how = SlurmJobProbe(settings, "n1", squeue=broken).gone("alice", ["20"])
    assert gone == set() and "not provable" in how
    missing = SlurmJobProbe(settings, "n1", squeue=str(tmp_path / "no-squeue"))
    assert missing.gone("alice", ["20"])[0] == set()
    assert missing.running_here("alice") is None


def test_slurm_conf_include_and_case(tmp_path: Path) -> None:
    inc = tmp_path / "more.conf"
    inc.write_text("prologflags=Contain,Alloc # comment\nJobContainerType=job_container/tmpfs\n")
    conf = tmp_path / "slurm.conf"
    conf.write_text("SlurmdSpoolDir=/var/spool/slurmd.%n\nInclude more.conf\n")
    settings = read_slurm_settings(conf)
    assert settings.contain and settings.job_container == "job_container/tmpfs"
    assert str(settings.spool_dir_for("n7")) == "/var/spool/slurmd.n7"
    missing = read_slurm_settings(tmp_path / "none.conf")
    assert not missing.found and not missing.contain
