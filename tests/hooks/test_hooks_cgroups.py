"""The hooks put each (node, user) GCP into a cgroup of its own (globus_tmp.cgroups):
real hooks as root for a real user against the GCP emulator, in this machine's real
cgroup tree, below a parent cgroup unique to the test."""

from __future__ import annotations

import os
import pwd
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from globus_tmp.cgroups import CgroupTree
from hooksite import Site, all_user_processes, gcp_processes
from polling import wait_for


def _unusable() -> str | None:
    if os.geteuid() != 0:
        return "the hook tests run as root"
    layout = CgroupTree("probe").layout()
    if isinstance(layout, str):
        return f"no usable cgroup tree here: {layout}"
    if layout[0] == "systemd":
        return "systemd is PID 1 here: placement goes through systemd scopes"
    return None


pytestmark = pytest.mark.skipif(_unusable() is not None, reason=str(_unusable()))


@pytest.fixture
def parent() -> Iterator[str]:
    """A parent cgroup only this test uses; removed (with what is left in it) after."""
    name = f"globus-tmp-hooktest-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        tree = CgroupTree(name)
        for node, user in (("n1", "gtunit1"),):
            tree.kill(node, user, pwd.getpwnam(user).pw_uid, grace=1)
            tree.remove(node, user)
        for path in tree.paths("n1", "gtunit1"):
            if path.parent.is_dir():
                path.parent.rmdir()


def _cgroup_of(pid: int, layout_mode: str) -> dict[str, str]:
    """``/proc/PID/cgroup`` as controller -> path (``""`` for the v2 line)."""
    out = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _id, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            out[c] = path
    return out


def test_gcp_runs_in_its_own_cgroup_with_limits_and_it_goes_with_gcp(
    site: Site, parent: str
) -> None:
    user = site.users["gtunit1"]
    user.make_pool(1)
    site.configure(gcp_cgroup=parent, gcp_cpu_max=0.5, gcp_memory_max=256 << 20)
    tree = CgroupTree(parent)
    layout = tree.layout()
    assert not isinstance(layout, str)
    mode = layout[0]
    want = f"/{parent}/n1-gtunit1"

    assert site.prolog("1").returncode == 0
    site.wait_connected()  # its watcher's -status steps (the user's, not GCP's) are over
    (gcp,) = gcp_processes(user.uid)
    # GCP and every helper it forked (the emulator's relay and GridFTP stand-ins)
    procs = all_user_processes(user.uid)
    assert len(procs) >= 2, procs
    for proc in procs:
        where = _cgroup_of(proc.pid, mode)
        if mode == "v1":
            assert where["cpu"] == where["memory"] == where["pids"] == want, (proc, where)
        else:
            assert where[""] == want, (proc, where)
    assert sorted(tree.pids("n1", "gtunit1")) == sorted(p.pid for p in procs)
    paths = {p.parent.parent.name: p for p in tree.paths("n1", "gtunit1")}
    if mode == "v1":
        assert (paths["cpu"] / "cpu.cfs_quota_us").read_text() == "50000\n"
        assert int((paths["memory"] / "memory.limit_in_bytes").read_text()) == 256 << 20
    else:
        (leaf,) = paths.values()
        assert (leaf / "cpu.max").read_text() == "50000 100000\n"
        assert (leaf / "memory.max").read_text() == f"{256 << 20}\n"
    assert "slurmd's cgroup" not in site.hook_log()

    # a helper that left GCP's session (setsid): the cgroup still knows it
    helper = subprocess.Popen(["runuser", "-u", "gtunit1", "--", "setsid", "-w", "sleep", "300"])
    try:
        sleeper = wait_for(
            lambda: [p for p in all_user_processes(user.uid) if p.name() == "sleep"],
            what="the escaping helper",
        )
        pid = sleeper[0].pid
        for path in tree.paths("n1", "gtunit1"):  # as if GCP had spawned it
            (path / "cgroup.procs").write_text(f"{pid}\n")
        assert os.getsid(pid) != gcp.pid

        assert site.prolog("2").returncode == 0  # the join path: no cgroup work
        assert site.epilog("1").returncode == 0
        assert site.epilog("2").returncode == 0
        site.wait_gcp_stopped()
        wait_for(lambda: not any(p.is_dir() for p in tree.paths("n1", "gtunit1")),
                 what="the GCP's cgroup to go")  # fmt: skip
        wait_for(lambda: not all_user_processes(user.uid), what="the escaped helper to die")
        assert "more in its cgroup" in site.hook_log("n1"), site.hook_log()
        assert all(p.parent.is_dir() for p in tree.paths("n1", "gtunit1")), "parent stays"
    finally:
        helper.kill()
        helper.wait()
        time.sleep(0.1)
