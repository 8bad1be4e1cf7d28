"""The pool and its registry, run as the current user on a scratch directory."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from globus_tmp.errors import GlobusTmpError, NoPoolError, PoolExhaustedError
from globus_tmp.pool import EndpointPool


class KnownNodes:
    """NodeActivity with a fixed answer (what squeue would say)."""

    def __init__(self, busy: set[str] | None) -> None:
        self.busy = busy
        self.asked = 0

    def nodes_with_jobs(self, user: str) -> set[str] | None:
        self.asked += 1
        return self.busy


def _entry(pool: EndpointPool, name: str) -> str:
    endpoint_id = str(uuid.uuid4())
    lta = pool.endpoints_dir / name / "lta"
    lta.mkdir(parents=True)
    (lta / "client-id.txt").write_text(endpoint_id + "\n")
    return endpoint_id


@pytest.fixture
def pool(tmp_path: Path) -> EndpointPool:
    return EndpointPool(tmp_path / "user_dir", lock_timeout=2)


def test_no_pool(pool: EndpointPool) -> None:
    with pytest.raises(NoPoolError, match="globus-tmp-endpoint adopt"):
        pool.lease("alice", "n1", KnownNodes(set()))


def test_dirs_without_client_id_are_not_entries(pool: EndpointPool) -> None:
    (pool.endpoints_dir / "half-set-up" / "lta").mkdir(parents=True)
    ep = _entry(pool, "ep1")
    assert [(e.name, e.endpoint_id) for e in pool.entries()] == [("ep1", ep)]


def test_lease_is_exclusive_and_released(pool: EndpointPool) -> None:
    _entry(pool, "ep1")
    _entry(pool, "ep2")
    nodes = KnownNodes({"n1", "n2"})
    a, _ = pool.lease("alice", "n1", nodes)
    b, _ = pool.lease("alice", "n2", nodes)
    assert {a.name, b.name} == {"ep1", "ep2"}
    again, _ = pool.lease("alice", "n1", nodes)
    assert again == a, "a node's own lease is reused (GCP restart)"
    with pytest.raises(PoolExhaustedError, match="ep1 -> n1"):
        pool.lease("alice", "n3", nodes)
    assert not pool.release(a.name, "n2"), "only the holder releases"
    assert pool.release(a.name, "n1")
    c, _ = pool.lease("alice", "n3", nodes)
    assert c == a
    assert nodes.asked == 1, "Slurm is asked only when no entry is free"


def test_stale_lease_of_an_idle_node_is_reclaimed(pool: EndpointPool) -> None:
    _entry(pool, "ep1")
    pool.lease("alice", "n1", KnownNodes(set()))
    with pytest.raises(PoolExhaustedError):
        pool.lease("alice", "n2", KnownNodes(None))  # unknown: reclaim nothing
    entry, note = pool.lease("alice", "n2", KnownNodes({"n2"}))
    assert entry.name == "ep1" and note and "reclaimed ep1 from n1" in note
    assert pool.leases()["ep1"].node == "n2"


def test_corrupt_registry_is_kept_aside(pool: EndpointPool) -> None:
    _entry(pool, "ep1")
    pool.root.mkdir(exist_ok=True)
    pool.registry_path.write_text('{"version": 1, "leases": {"ep1": {"node"')
    entry, note = pool.lease("alice", "n1", KnownNodes(set()))
    assert entry.name == "ep1" and note and "unreadable" in note
    assert list(pool.root.glob("registry.json.corrupt-*"))
    assert json.loads(pool.registry_path.read_text())["leases"]["ep1"]["node"] == "n1"


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
