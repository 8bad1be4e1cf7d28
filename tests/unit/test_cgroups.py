"""globus_tmp.cgroups: a GCP's own cgroup, against cgroup trees in a plain directory
(v1, v2, systemd through a fake busctl) and, where this machine allows it, the real one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from globus_tmp.cgroups import CgroupTree, NodeCgroups, Placement, escape_name
from globus_tmp.commands import CommandResult
from globus_tmp.config import Config
from globus_tmp.process import ProcessRef

UID = os.getuid()


@pytest.fixture
def leader() -> Iterator[subprocess.Popen[bytes]]:
    """A process standing for GCP: a session of its own, like GCP's."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _ref(proc: subprocess.Popen[bytes]) -> ProcessRef:
    return ProcessRef.of(proc.pid)


def _v2_tree(root: Path, controllers: str = "cpu memory pids io") -> Path:
    root.mkdir(exist_ok=True)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "cgroup.procs").write_text("")
    return root


def _v1_tree(root: Path, comount: bool = False) -> Path:
    root.mkdir(exist_ok=True)
    names = ["cpu,cpuacct", "memory", "pids"] if comount else ["cpu", "cpuacct", "memory", "pids"]
    for name in names:
        (root / name).mkdir()
        (root / name / "cgroup.procs").write_text("")
    cpu = root / ("cpu,cpuacct" if comount else "cpu")
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    (root / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    if comount:  # what distributions mount: cpu and cpuacct as links to the shared one
        (root / "cpu").symlink_to("cpu,cpuacct")
        (root / "cpuacct").symlink_to("cpu,cpuacct")
    return root


# -- names ---------------------------------------------------------------------------


def test_names_cannot_climb_hide_or_nest() -> None:
    assert escape_name("node-01") == "node-01"
    assert escape_name("a/b") == "a%2Fb"
    assert escape_name("..") == "%2E."
    assert escape_name(".x") == "%2Ex"
    assert escape_name("") == "%"
    assert escape_name("ü") == "%C3%BC"
    tree = CgroupTree("globus-tmp", root="/nonexistent", systemd=False)
    assert tree.name("n1", "alice") == "n1-alice"


# -- cgroup v2 -----------------------------------------------------------------------


def test_v2_places_the_process_with_its_limits(
    tmp_path: Path, leader: subprocess.Popen[bytes]
) -> None:
    root = _v2_tree(tmp_path / "cg")
    tree = CgroupTree("gt", cpu_max=1.5, memory_max=2 << 30, root=root, systemd=False)
    placed = tree.place("n1", "alice", UID, _ref(leader))
    leaf = root / "gt" / "n1-alice"
    assert placed == Placement(1, str(leaf), None)
    assert (leaf / "cgroup.procs").read_text().split() == [str(leader.pid)]
    assert (leaf / "cpu.max").read_text() == "150000 100000"
    assert (leaf / "memory.max").read_text() == str(2 << 30)
    for path in (root, root / "gt"):  # the controllers reach the leaf
        assert (path / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert tree.pids("n1", "alice") == [leader.pid]


def test_v2_without_limits_writes_max(tmp_path: Path, leader: subprocess.Popen[bytes]) -> None:
    root = _v2_tree(tmp_path / "cg")
    tree = CgroupTree("gt", root=root, systemd=False)
    assert tree.place("n1", "alice", UID, _ref(leader)).problem is None
    leaf = root / "gt" / "n1-alice"
    assert (leaf / "cpu.max").read_text() == "max 100000"
    assert (leaf / "memory.max").read_text() == "max"


def test_v2_missing_controller_places_but_says_which_limit(
    tmp_path: Path, leader: subprocess.Popen[bytes]
) -> None:
    root = _v2_tree(tmp_path / "cg", controllers="pids")
    tree = CgroupTree("gt", cpu_max=1.0, memory_max=0, root=root, systemd=False)
    placed = tree.place("n1", "alice", UID, _ref(leader))
    assert placed.moved == 1 and placed.where
    assert placed.problem == "gcp_cpu_max not applied: no cpu controller"


# -- cgroup v1 -----------------------------------------------------------------------


@pytest.mark.parametrize("comount", [False, True])
def test_v1_places_in_every_hierarchy_with_its_limits(
    tmp_path: Path, leader: subprocess.Popen[bytes], comount: bool
) -> None:
    root = _v1_tree(tmp_path / "cg", comount)
    tree = CgroupTree("gt", cpu_max=1.5, memory_max=512 << 20, root=root, systemd=False)
    placed = tree.place("n1", "alice", UID, _ref(leader))
    assert placed.moved == 1 and placed.problem is None
    hierarchies = ["cpu,cpuacct", "memory", "pids"] if comount else V1
    assert sorted(p.parent.parent.name for p in tree.paths("n1", "alice")) == sorted(
        "cpu" if h == "cpu,cpuacct" else h for h in hierarchies
    )
    for h in hierarchies:  # a co-mounted hierarchy is written once, not once per name
        assert (root / h / "gt" / "n1-alice" / "cgroup.procs").read_text() == f"{leader.pid}\n"
    cpu = root / ("cpu,cpuacct" if comount else "cpu") / "gt" / "n1-alice"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "150000"
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    memory = root / "memory" / "gt" / "n1-alice"
    assert (memory / "memory.limit_in_bytes").read_text() == str(512 << 20)


V1 = ["cpu", "cpuacct", "memory", "pids"]


def test_v1_without_limits_resets_them(tmp_path: Path, leader: subprocess.Popen[bytes]) -> None:
    root = _v1_tree(tmp_path / "cg")
    CgroupTree("gt", cpu_max=0.25, root=root, systemd=False).place("n1", "a", UID, _ref(leader))
    tree = CgroupTree("gt", root=root, systemd=False)  # the admin removed the limit
    assert tree.place("n1", "a", UID, _ref(leader)).problem is None
    assert (root / "cpu" / "gt" / "n1-a" / "cpu.cfs_quota_us").read_text() == "-1"
    assert (root / "memory" / "gt" / "n1-a" / "memory.limit_in_bytes").read_text() == "-1"


def test_v1_moves_the_whole_session(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        ref = _ref(proc)
        while len(ref.members(UID)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        root = _v1_tree(tmp_path / "cg")
        tree = CgroupTree("gt", root=root, systemd=False)
        assert tree.place("n1", "a", UID, ref).moved == 3
        written = (root / "pids" / "gt" / "n1-a" / "cgroup.procs").read_text()
        assert written.startswith(str(proc.pid))  # the leader first: later forks are inside
        assert sorted(tree.pids("n1", "a")) == sorted(m.pid for m in ref.members(UID))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# -- trust ---------------------------------------------------------------------------


def test_a_recycled_or_foreign_pid_is_not_moved(
    tmp_path: Path, leader: subprocess.Popen[bytes]
) -> None:
    root = _v2_tree(tmp_path / "cg")
    tree = CgroupTree("gt", root=root, systemd=False)
    ref = _ref(leader)
    stale = ProcessRef(ref.pid, ref.start_ticks - 1)  # the pid now names another process
    assert tree.place("n1", "a", UID, stale) == Placement(0, "", None)
    assert tree.place("n1", "a", UID + 4242, ref) == Placement(0, "", None)  # not the user's
    assert not (root / "gt").exists()


# -- kill and remove -----------------------------------------------------------------


def test_kill_by_listing_and_remove(tmp_path: Path, leader: subprocess.Popen[bytes]) -> None:
    root = _v1_tree(tmp_path / "cg")
    tree = CgroupTree("gt", root=root, systemd=False)
    tree.place("n1", "a", UID, _ref(leader))
    assert not tree.remove("n1", "a"), "a cgroup with a process in it stays"
    assert tree.kill("n1", "a", UID + 4242, grace=0.2) == 0, "only the user's processes"
    assert tree.kill("n1", "a", UID, grace=2) == 1
    assert leader.wait(timeout=5) == -signal.SIGTERM
    for path in tree.paths("n1", "a"):  # what the kernel does when the process exits
        (path / "cgroup.procs").write_text("")
    assert tree.remove("n1", "a")
    assert all(not p.exists() for p in tree.paths("n1", "a"))
    assert all((root / h / "gt").is_dir() for h in V1), "the shared parent stays"
    assert tree.remove("n1", "a"), "removing twice is fine"


# -- degrading -----------------------------------------------------------------------


def test_degrade_paths_say_why(tmp_path: Path, leader: subprocess.Popen[bytes]) -> None:
    ref = _ref(leader)
    placed = CgroupTree("gt", root=tmp_path / "none", systemd=False).place("n1", "a", UID, ref)
    assert placed.where == "" and placed.problem == f"no cgroup file system at {tmp_path}/none"
    placed = CgroupTree("gt", root=tmp_path, systemd=False).place("n1", "a", UID, ref)
    assert placed.where == "" and "no cgroup v2 and no cgroup v1" in str(placed.problem)
    assert CgroupTree("", root=tmp_path, systemd=False).layout() == "gcp_cgroup is empty"
    root = _v2_tree(tmp_path / "ro")
    (root / "gt").mkdir()
    (root / "gt" / "n1-a").write_text("not a directory")
    placed = CgroupTree("gt", root=root, systemd=False).place("n1", "a", UID, ref)
    assert placed.where == "" and "cannot create cgroup n1-a" in str(placed.problem)


def test_node_cgroups_logs_one_line_per_run(
    tmp_path: Path, leader: subprocess.Popen[bytes]
) -> None:
    lines: list[str] = []
    cfg = Config(gcp_cgroup="gt")
    tree = CgroupTree("gt", root=tmp_path / "none", systemd=False)
    cgroups = NodeCgroups(cfg, "n1", lines.append, tree)
    for _ in range(3):
        placed = cgroups.place("a", UID, _ref(leader))
        assert placed is not None and placed.where == ""
    assert lines == [f"GCP stays in slurmd's cgroup: no cgroup file system at {tmp_path}/none"]
    assert cgroups.cleanup("a", UID) == 0
    off = NodeCgroups(Config(gcp_cgroup=""), "n1", lines.append, tree)
    assert off.place("a", UID, _ref(leader)) is None and len(lines) == 1, "off: silent"


# -- systemd -------------------------------------------------------------------------


def test_systemd_scope_through_busctl(tmp_path: Path, leader: subprocess.Popen[bytes]) -> None:
    calls: list[list[str]] = []

    def busctl(argv: Sequence[str], timeout: float) -> CommandResult:
        calls.append(list(argv))
        return CommandResult(tuple(argv), 0, "o /org/freedesktop/systemd1/job/1", "")

    root = _v2_tree(tmp_path / "cg")
    tree = CgroupTree("globus-tmp", 1.5, 1 << 30, root=root, systemd=True, runner=busctl)
    placed = tree.place("n1", "alice", UID, _ref(leader))
    slice_, scope = r"globus\x2dtmp.slice", r"globus\x2dtmp\x2dn1\x2dalice.scope"
    assert placed == Placement(1, f"{slice_}/{scope}", None)
    (argv,) = calls
    assert argv[:7] == [
        "busctl", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager", "StartTransientUnit", "ssa(sv)a(sa(sv))",
    ]  # fmt: skip
    assert argv[7:] == [
        scope, "fail", "5", "PIDs", "au", "1", str(leader.pid), "Slice", "s", slice_,
        "CollectMode", "s", "inactive-or-failed", "CPUQuotaPerSecUSec", "t", "1500000",
        "MemoryMax", "t", str(1 << 30), "0",
    ]  # fmt: skip
    assert tree.paths("n1", "alice") == [root / slice_ / scope]


def test_systemd_refusal_is_a_reason(tmp_path: Path, leader: subprocess.Popen[bytes]) -> None:
    def busctl(argv: Sequence[str], timeout: float) -> CommandResult:
        return CommandResult(tuple(argv), 1, "", "Call failed: Access denied\n")

    tree = CgroupTree("gt", root=_v2_tree(tmp_path / "cg"), systemd=True, runner=busctl)
    placed = tree.place("n1", "a", UID, _ref(leader))
    assert placed.where == "" and placed.problem == (
        "systemd refused scope gt\\x2dn1\\x2da.scope: Call failed: Access denied"
    )


def test_systemd_scope_left_behind_is_joined(
    tmp_path: Path, leader: subprocess.Popen[bytes]
) -> None:
    """A scope that already exists (GetUnit answers) is joined, whatever busctl's
    refusal of the new one said."""
    calls: list[str] = []

    def busctl(argv: Sequence[str], timeout: float) -> CommandResult:
        calls.append(argv[5])
        rc = 1 if argv[5] == "StartTransientUnit" else 0
        return CommandResult(tuple(argv), rc, "", "Call failed: some wording\n" if rc else "")

    tree = CgroupTree("gt", root=_v2_tree(tmp_path / "cg"), systemd=True, runner=busctl)
    placed = tree.place("n1", "a", UID, _ref(leader))
    assert calls == ["StartTransientUnit", "GetUnit", "AttachProcessesToUnit"]
    assert placed == Placement(1, "gt.slice/gt\\x2dn1\\x2da.scope", None)


# -- the real cgroup tree of this machine ---------------------------------------------


def _real_v1_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (only root places processes into cgroups)"
    if os.path.isdir("/run/systemd/system"):
        return "systemd is PID 1 here: GCPs go into systemd scopes, not written directly"
    for h in ("cpu", "memory"):
        if not os.access(f"/sys/fs/cgroup/{h}/cgroup.procs", os.W_OK):
            return f"no writable cgroup v1 {h} hierarchy at /sys/fs/cgroup/{h}"
    return None


@pytest.mark.root
@pytest.mark.skipif(_real_v1_reason() is not None, reason=str(_real_v1_reason()))
def test_real_v1_cgroup_place_limit_kill_remove() -> None:
    parent = f"globus-tmp-unit-{uuid.uuid4().hex[:8]}"
    tree = CgroupTree(parent, cpu_max=0.5, memory_max=256 << 20, systemd=False)
    # a GCP that, once placed, starts a helper leaving its session (setsid): only the
    # cgroup still knows it
    script = "import subprocess, sys; sys.stdin.readline(); "
    script += "subprocess.Popen(['setsid', 'sleep', '60']); sys.stdout.write('x\\n'); "
    script += "sys.stdout.flush(); sys.stdin.readline()"
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        ref = _ref(proc)
        placed = tree.place("n1", "u", UID, ref)
        assert placed.moved == 1 and placed.problem is None, placed
        cgroup = f"/{parent}/n1-u"
        lines = Path(f"/proc/{proc.pid}/cgroup").read_text().splitlines()
        for h in ("cpu", "memory", "pids"):
            assert any(ln.split(":")[1] == h and ln.split(":")[2] == cgroup for ln in lines), lines
        base = Path("/sys/fs/cgroup")
        assert (base / "cpu" / parent / "n1-u" / "cpu.cfs_quota_us").read_text() == "50000\n"
        assert (base / "cpu" / parent / "n1-u" / "cpu.cfs_period_us").read_text() == "100000\n"
        limit = int((base / "memory" / parent / "n1-u" / "memory.limit_in_bytes").read_text())
        assert limit == 256 << 20
        deadline = time.monotonic() + 5
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"x\n"
        pids = tree.pids("n1", "u")
        assert len(pids) == 2 and proc.pid in pids, pids
        (helper,) = (p for p in pids if p != proc.pid)
        while os.getsid(helper) == proc.pid and time.monotonic() < deadline:
            time.sleep(0.02)  # setsid(1) runs setsid() after its exec
        assert os.getsid(helper) != proc.pid, "the helper left GCP's session"
        assert helper not in {m.pid for m in ref.members(UID)}
        assert tree.kill("n1", "u", UID, grace=2) == 2
        proc.wait(timeout=5)
        deadline = time.monotonic() + 5
        while tree.pids("n1", "u") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tree.pids("n1", "u") == []
        assert tree.remove("n1", "u")
        assert not any(p.exists() for p in tree.paths("n1", "u"))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
        for p in tree.paths("n1", "u"):
            for pid in (p / "cgroup.procs").read_text().split() if p.exists() else []:
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.2)
        for p in tree.paths("n1", "u"):
            for d in (p, p.parent):
                if d.exists():
                    d.rmdir()


def test_the_shipped_defaults_limit_each_gcp(
    tmp_path: Path, leader: subprocess.Popen[bytes]
) -> None:
    """GCP runs outside the job's cgroup: out of the box it must not take the node."""
    cfg = Config()
    assert (cfg.gcp_cgroup, cfg.gcp_cpu_max, cfg.gcp_memory_max) == ("globus-tmp", 2.0, 2 << 30)
    root = _v2_tree(tmp_path / "cg")
    tree = CgroupTree(cfg.gcp_cgroup, cfg.gcp_cpu_max, cfg.gcp_memory_max, root=root, systemd=False)
    assert tree.place("n1", "alice", UID, _ref(leader)).problem is None
    leaf = root / "globus-tmp" / "n1-alice"
    assert (leaf / "cpu.max").read_text() == "200000 100000"
    assert (leaf / "memory.max").read_text() == str(2 << 30)
