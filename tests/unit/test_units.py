"""Small pieces: GCP status parsing, node state documents, the lock, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from globus_tmp.errors import GcpError, StateError
from globus_tmp.gcp import GcpStatus
from globus_tmp.locks import FlockFile, LockTimeout
from globus_tmp.nodestate import NodeStateStore, UserNodeState


def test_status_parsing() -> None:
    status = GcpStatus.parse("Globus Online:   connected\nTransfer Status: active\n")
    assert status.connected and status.transfer_active
    assert not GcpStatus.parse("Globus Online:   connecting\nTransfer Status: idle\n").connected
    with pytest.raises(GcpError, match="cannot parse"):
        GcpStatus.parse("something else")


def test_state_round_trip_and_corruption(tmp_path: Path) -> None:
    store = NodeStateStore(tmp_path / "state")
    store.ensure()
    state = UserNodeState(user="alice", uid=1000, jobs={"5": 1.0})
    store.write(state)
    assert store.read("alice", 1000).jobs == {"5": 1.0}
    store.path("alice").write_text(json.dumps({"version": 99}))
    fresh = store.read("alice", 1000)
    assert fresh.jobs == {} and fresh.recovered_from and "unreadable" in fresh.recovered_from


def test_lock_excludes_and_times_out(tmp_path: Path) -> None:
    first = FlockFile(tmp_path / "l")
    first.acquire(1)
    with pytest.raises(LockTimeout):
        FlockFile(tmp_path / "l").acquire(0.2)
    first.release()
    second = FlockFile(tmp_path / "l")
    second.acquire(0.2)
    second.release()


def test_state_dir_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(StateError, match="not a directory"):
        NodeStateStore(tmp_path / "link").ensure()


@pytest.mark.parametrize(
    "module",
    [
        "globus_tmp_prolog.prolog",
        "globus_tmp_prolog.taskprolog",
        "globus_tmp_epilog.epilog",
        "globus_tmp.cli",
    ],
)
def test_hot_paths_import_nothing_heavy(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "heavy = [m for m in ('globus_sdk', 'requests', 'urllib3', 'filelock', 'asyncio') "
        "if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_mount_table_is_parsed_with_its_escapes(tmp_path: Path) -> None:
    from globus_tmp.mounts import is_mount_point, mount_points

    table = tmp_path / "mountinfo"
    table.write_bytes(
        b"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        b"97 22 8:1 /srv/a /state/jobtmp/u/7 rw shared:1 - ext4 /dev/sda1 rw\n"
        b"98 22 0:5 / /with\\040space\\134x rw - tmpfs tmpfs rw\n"
    )
    assert mount_points(str(table)) == ["/", "/state/jobtmp/u/7", "/with space\\x"]
    assert is_mount_point("/state/jobtmp/u/7", str(table))  # a bind: same device as "/"
    assert not is_mount_point("/state/jobtmp/u", str(table))
    assert not is_mount_point("/", str(tmp_path / "missing"))  # unreadable: not a mount


def test_status_of_many_nodes_escapes_what_the_nodes_send() -> None:
    """A pool entry name (the user's) or an error text with escape sequences must not
    rewrite the admin's terminal: ``status --nodes`` prints other nodes' fields."""
    from globus_tmp.clusterview import parse_clush, table

    user = {
        "user": "mallory\x1b[2J",
        "phase": "failed",
        "jobs": ["1"],
        "gcp_pid": 5,
        "gcp_alive": True,
        "endpoint_name": "\x1b]0;owned\x07ep1",
        "error": "bad\rthing\u2028",
    }
    doc = {"node": "n1", "users": [user], "totals": {"jobs": 1}}
    output = f"n1: {json.dumps(doc)}\nn2: \x1b[31mssh: refused\n"
    views, problems = parse_clush(output)
    lines = table(views, problems)
    assert all(line.isprintable() for line in lines), lines
    text = "\n".join(lines)
    assert "\\x1b]0;owned\\x07ep1" in text and "mallory\\x1b[2J" in text
    assert "NO ANSWER: \\x1b[31mssh: refused" in text
