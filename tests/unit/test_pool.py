"""The pool and its leases, run as the current user on a scratch directory."""

from __future__ import annotations

import errno
import json
import os
import time
import uuid
from pathlib import Path

import pytest
from globus_tmp.errors import GlobusTmpError, NoPoolError, PoolError, PoolExhaustedError
from globus_tmp.leaseproof import SlurmGlobusProver
from globus_tmp.leases import FsOps, Holder
from globus_tmp.pool import EndpointPool


class FakeSlurm:
    """A SlurmView with fixed answers: which nodes run jobs, which are down."""

    def __init__(self, busy: set[str] | None, down: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.busy = busy
        self.down = down
        self.asked = 0

    def nodes_with_jobs(self, user: str) -> set[str] | None:
        self.asked += 1
        return self.busy

    def node_down_since(self, node: str, since: float) -> str | None:
        return f"node {node} rebooted since" if node in self.down else None


def _prover(
    busy: set[str] | None = frozenset(),  # type: ignore[assignment]
    down: set[str] = frozenset(),  # type: ignore[assignment]
    connected: bool | None = False,
    cluster: str = "c1",
) -> SlurmGlobusProver:
    return SlurmGlobusProver(
        "alice",
        cluster,
        FakeSlurm(busy, down),
        lambda endpoint_id: connected,
    )


NEVER = _prover(busy=None, connected=None)  # nothing provable


def _entry(pool: EndpointPool, name: str) -> str:
    endpoint_id = str(uuid.uuid4())
    lta = pool.endpoints_dir / name / "lta"
    lta.mkdir(parents=True)
    (lta / "client-id.txt").write_text(endpoint_id + "\n")
    return endpoint_id


def node(name: str, cluster: str = "c1") -> Holder:
    return Holder(cluster, name, "boot-" + name)


@pytest.fixture
def pool(tmp_path: Path) -> EndpointPool:
    return EndpointPool(tmp_path / "user_dir")


def test_no_pool(pool: EndpointPool) -> None:
    with pytest.raises(NoPoolError, match="globus-tmp-endpoint adopt"):
        pool.lease("alice", node("n1"), NEVER)


def test_dirs_without_client_id_are_not_entries(pool: EndpointPool) -> None:
    (pool.endpoints_dir / "half-set-up" / "lta").mkdir(parents=True)
    ep = _entry(pool, "ep1")
    assert [(e.name, e.endpoint_id) for e in pool.entries()] == [("ep1", ep)]
    entry, _ = pool.lease("alice", node("n1"), NEVER, slot=0)
    assert entry.name == "ep1", "a half-set-up entry is skipped"


def test_lease_is_exclusive_and_released(pool: EndpointPool) -> None:
    _entry(pool, "ep1")
    _entry(pool, "ep2")
    a, _ = pool.lease("alice", node("n1"), NEVER)
    b, _ = pool.lease("alice", node("n2"), NEVER)
    assert {a.name, b.name} == {"ep1", "ep2"}
    again, _ = pool.lease("alice", node("n1"), NEVER)
    assert again == a, "a node's own lease is reused (GCP restart)"
    with pytest.raises(PoolExhaustedError, match=f"{a.name} held by c1/n1"):
        pool.lease("alice", node("n3"), NEVER)
    assert not pool.release(a.name, node("n2")), "only the holder releases"
    assert not pool.release(a.name, node("n1", cluster="c2")), "same name, other cluster"
    assert pool.release(a.name, node("n1"))
    c, _ = pool.lease("alice", node("n3"), NEVER)
    assert c == a
    assert pool.leases()[a.name].owner == "c1/n3"


@pytest.mark.parametrize(
    ("case", "prover", "reclaimed"),
    [
        ("drain in progress", _prover(), False),
        ("holder node rebooted", _prover(busy={"n1"}, down={"n1"}, connected=True), True),
        ("holder runs a (suspended) job", _prover(busy={"n1"}), False),
        ("Globus sees it connected", _prover(connected=True), False),
        ("Globus cannot be asked", _prover(connected=None), False),
        ("Slurm cannot be asked", _prover(busy=None), False),
        ("idle, disconnected, no job", _prover(), True),
        ("holder in another cluster", _prover(cluster="c2"), False),
    ],
)
def test_a_held_lease_is_reclaimed_only_on_proof(
    pool: EndpointPool, case: str, prover: SlurmGlobusProver, reclaimed: bool
) -> None:
    """Issue 8 item 1: two nodes must never run one entry; every reclaim path."""
    _entry(pool, "ep1")
    pool.lease("alice", node("n1"), NEVER)
    if case == "drain in progress":
        assert pool.mark("ep1", node("n1"), "draining", time.time() + 3600)
    if reclaimed:
        entry, note = pool.lease("alice", node("n2"), prover)
        assert entry.name == "ep1" and note and "reclaimed ep1 from c1/n1" in note
        assert pool.leases()["ep1"].owner == "c1/n2"
        assert not pool.release("ep1", node("n1")), "the old holder no longer holds it"
    else:
        with pytest.raises(PoolExhaustedError, match="none is provably free"):
            pool.lease("alice", node("n2"), prover)
        assert pool.leases()["ep1"].owner == "c1/n1"


def test_a_killed_drain_keeps_its_lease_until_its_deadline(pool: EndpointPool) -> None:
    _entry(pool, "ep1")
    pool.lease("alice", node("n1"), NEVER)
    pool.mark("ep1", node("n1"), "draining", time.time() + 3600)
    with pytest.raises(PoolExhaustedError, match="draining until"):
        pool.lease("alice", node("n2"), _prover())
    pool.mark("ep1", node("n1"), "draining", time.time() - 1)  # deadline passed
    entry, _ = pool.lease("alice", node("n2"), _prover())
    assert entry.name == "ep1"


def test_a_lease_kept_for_a_task_to_cancel_runs_nowhere_until_its_deadline(
    pool: EndpointPool,
) -> None:
    """Issue 18: Globus resumes a task through whichever node runs the entry next, from
    that node's /tmp. Kept for a cancel, the entry is taken by nobody, not even on proof
    that the holder is down, nor by the holder itself for a new GCP; only ``running``
    or a release lifts it, never a drain's mark."""
    _entry(pool, "ep1")
    _entry(pool, "ep2")
    pool.lease("alice", node("n1"), NEVER)
    until = time.time() + 3600
    assert pool.mark("ep1", node("n1"), "cancelling", until)
    assert pool.mark("ep1", node("n1"), "draining", time.time() + 60)  # a GCP run again
    record = pool.leases()["ep1"]
    assert (record.phase, record.drain_until) == ("cancelling", until), "the stronger mark"
    assert "kept for a Globus task to cancel until" in record.describe()
    rebooted = _prover(busy={"n2"}, down={"n1"})  # n1 down, n2 runs a job
    entry, _ = pool.lease("alice", node("n2"), rebooted)
    assert entry.name == "ep2"
    with pytest.raises(PoolExhaustedError, match=r"ep1 held by c1/n1 .*task to cancel"):
        pool.lease("alice", node("n3"), rebooted)
    pool.release("ep2", node("n2"))
    again, _ = pool.lease("alice", node("n1"), NEVER)
    assert again.name == "ep2", "the holder starts its next GCP from another entry"
    assert pool.mark("ep1", node("n1"), "running", None)  # the cancel is done
    assert pool.leases()["ep1"].phase == "running"
    pool.mark("ep1", node("n1"), "cancelling", time.time() - 1)  # the hold expired
    entry, note = pool.lease("alice", node("n3"), rebooted)
    assert entry.name == "ep1" and note and "rebooted" in note


def test_registry_json_is_migrated_on_first_use(pool: EndpointPool) -> None:
    _entry(pool, "ep1")
    _entry(pool, "ep2")
    pool.root.mkdir(exist_ok=True)
    pool.registry_path.write_text(
        json.dumps({"version": 1, "leases": {"ep1": {"node": "n1", "since": 1000.0}}})
    )
    entry, note = pool.lease("alice", node("n2"), NEVER)
    assert note and "migrated 1 lease(s)" in note
    assert entry.name == "ep2"
    assert pool.leases()["ep1"].owner == "c1/n1" and pool.leases()["ep1"].since == 1000.0
    assert not pool.registry_path.exists()
    again, _ = pool.lease("alice", node("n1"), NEVER)
    assert again.name == "ep1", "the migrated holder finds its own lease"


def test_corrupt_registry_is_kept_aside(pool: EndpointPool) -> None:
    _entry(pool, "ep1")
    pool.root.mkdir(exist_ok=True)
    pool.registry_path.write_text('{"version": 1, "leases": {"ep1": {"node"')
    entry, note = pool.lease("alice", node("n1"), NEVER)
    assert entry.name == "ep1" and note and "unreadable" in note
    assert list(pool.root.glob("registry.json.corrupt-*"))
    assert pool.leases()["ep1"].owner == "c1/n1"


class CountingFs(FsOps):
    def __init__(self) -> None:
        self.calls = 0

    def listdir(self, path: Path) -> list[str]:
        self.calls += 1
        return super().listdir(path)

    def read(self, path: Path) -> bytes:
        self.calls += 1
        return super().read(path)

    def link(self, source: Path, target: Path) -> None:
        self.calls += 1
        super().link(source, target)


def test_nodes_of_a_wide_job_find_distinct_entries_at_once(tmp_path: Path) -> None:
    """Issue 8 item 3: O(1) work per node, no global lock: slot = index in the job."""
    fs = CountingFs()
    pool = EndpointPool(tmp_path / "user_dir", fs)
    for i in range(50):
        _entry(pool, f"ep{i:02d}")
    fs.calls = 0
    names = {pool.lease("alice", node(f"n{i}"), NEVER, slot=1234 + i)[0].name for i in range(50)}
    assert len(names) == 50
    assert fs.calls / 50 < 12, f"{fs.calls / 50:.1f} file-system calls per lease"


def test_link_refused_by_the_file_system_is_one_clear_line(tmp_path: Path) -> None:
    """Issue 8 item 2: a file system without hard links gets a one-line error."""

    class NoLinks(FsOps):
        def link(self, source: Path, target: Path) -> None:
            raise OSError(errno.EPERM, "Operation not permitted")

    pool = EndpointPool(tmp_path / "user_dir", NoLinks())
    _entry(pool, "ep1")
    with pytest.raises(PoolError, match=r"refuses hard links.*user_dir"):
        pool.lease("alice", node("n1"), NEVER)


def test_config_paths_escape_like_gcp(pool: EndpointPool) -> None:
    _entry(pool, "ep1")
    (entry,) = pool.entries()
    pool.write_config_paths(entry, ["/tmp", "/scratch/a,b%c"])
    text = (entry.config_dir / "lta" / "config-paths").read_text()
    assert text == "/tmp,0,1\n/scratch/a%2Cb%25c,0,1\n"
    assert os.stat(entry.config_dir / "lta" / "config-paths").st_mode & 0o077 == 0


def test_adopt_moves_a_set_up_dir(pool: EndpointPool, tmp_path: Path) -> None:
    source = tmp_path / ".globusonline"
    (source / "lta").mkdir(parents=True)
    (source / "lta" / "client-id.txt").write_text("0b2c3d4e-0000-4000-8000-000000000001\n")
    entry = pool.adopt(source, None)
    assert entry.name == "globusonline" and not source.exists()
    assert entry.endpoint_id == "0b2c3d4e-0000-4000-8000-000000000001"
    with pytest.raises(GlobusTmpError, match="not a set-up GCP config dir"):
        pool.adopt(tmp_path / "empty", "x")


@pytest.mark.parametrize("name", ["\x1b]0;pwned\x07", "a b", "-x", ".hidden", "a/b", "é", "x" * 33])
def test_adopt_refuses_a_name_that_is_not_a_short_plain_word(
    pool: EndpointPool, tmp_path: Path, name: str
) -> None:
    """Entry names reach node state, the hook log and admins' terminals."""
    source = tmp_path / "gcp-dir"
    (source / "lta").mkdir(parents=True)
    (source / "lta" / "client-id.txt").write_text("0b2c3d4e-0000-4000-8000-000000000001\n")
    with pytest.raises(GlobusTmpError) as info:
        pool.adopt(source, name)
    text = str(info.value)
    assert "not a valid pool entry name" in text and "pass --name NAME" in text
    assert text.isprintable() and source.exists() and pool.names() == []


def test_adopt_takes_a_default_name_only_if_it_is_plain(pool: EndpointPool, tmp_path: Path) -> None:
    source = tmp_path / "My Endpoint"
    (source / "lta").mkdir(parents=True)
    (source / "lta" / "client-id.txt").write_text("0b2c3d4e-0000-4000-8000-000000000001\n")
    with pytest.raises(GlobusTmpError, match="'My Endpoint' is not a valid pool entry name"):
        pool.adopt(source, None)
    assert pool.adopt(source, "my-endpoint.1").name == "my-endpoint.1"
