"""PrivateTmp without Slurm: a job container laid out as job_container/tmpfs lays it out
(``BasePath/<node>/<job>`` a bind mount of itself, ``.<job>`` the user's), in a private
mount namespace of a child process (``unshare -m``), so nothing leaks to the host.

The lab tests (tests/e2e/test_e2e_private_tmp.py) run the same code from the SPANK
plugin under a real Slurm; these pin down the mount and rename rules, including the
EXDEV trap (a rename out of the job's own mount into the hold).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

SCENARIO = r"""
import json, os, sys, time
from pathlib import Path
from globus_tmp.config import Config
from globus_tmp.hooklog import HookLog
from globus_tmp.job import UserIdentity
from globus_tmp.mounts import bind
from globus_tmp.nodestate import NodeStateStore
from globus_tmp.privatetmp import PrivateTmp, PrivateTmpError

root, user_name, cap, declared = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
inits, tree = int(sys.argv[5]), sys.argv[6]
dirs_layout = sys.argv[7] == "dirs"  # Slurm 23.02+: the job's /tmp is .<job>/_tmp
user = UserIdentity.from_name(user_name)
base = root / "base" / "n1"
job_dir = base / "77"
job_dir.mkdir(mode=0o700, parents=True)
bind(str(job_dir), str(job_dir))                    # as Slurm does: the job dir is a mount
tmp = container = job_dir / ".77"
tmp.mkdir(mode=0o700)
os.chown(tmp, user.uid, user.gid)
if dirs_layout:
    tmp = container / "_tmp"
    tmp.mkdir(mode=0o700)
    os.chown(tmp, user.uid, user.gid)
(tmp / "result.dat").write_bytes(b"x" * 1000)
(tmp / "sub").mkdir()
(tmp / "sub" / "more.dat").write_bytes(b"y" * 24)
os.symlink("/etc/passwd", tmp / "link")                # never followed, never counted
for p in (tmp / "sub", tmp / "sub" / "more.dat", tmp / "result.dat"):
    os.chown(p, user.uid, user.gid)
os.lchown(tmp / "link", user.uid, user.gid)


def as_user(fn):  # what a job does in its /tmp (its cwd here), done by the job's user
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(tmp)  # the job reaches it through its own /tmp, not through job_dir
            os.setgroups([])
            os.setgid(user.gid)
            os.setuid(user.uid)
            fn()
            code = 0
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0


def mode000():  # mkdir /tmp/d; fill it; chmod 000 /tmp/d (and a directory inside)
    os.makedirs("d/e")
    Path("d/big.dat").write_bytes(b"z" * 65536)
    Path("d/e/more.dat").write_bytes(b"z" * 65536)
    os.chmod("d/e", 0)
    os.chmod("d", 0)


def deep():  # 2,000 levels, deeper than Python's recursion limit; the top unreadable
    top = os.open(".", os.O_RDONLY)
    for _ in range(8):  # 250 levels at a time: a path stays below PATH_MAX
        os.makedirs("d/" * 250)
        os.chdir("d/" * 250)
    Path("f").write_bytes(b"")
    os.chmod("d", 0, dir_fd=top)


def sparse():  # 1 GiB apparent, 4 KiB allocated; one inode under three names
    with open("sparse.dat", "wb") as f:
        f.write(b"s" * 4096)
        f.truncate(1 << 30)
    Path("linked.dat").write_bytes(b"l" * 8192)
    os.link("linked.dat", "linked2.dat")
    os.link("linked.dat", "linked3.dat")


def allocated(top):  # what root's walk must find: st_blocks of every inode, once
    seen, total, stack = set(), 0, [str(top)]
    total += os.lstat(top).st_blocks * 512
    while stack:
        for entry in os.scandir(stack.pop()):
            st = entry.stat(follow_symlinks=False)
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
    return total


if tree not in ("plain", "requeue"):
    as_user({"mode000": mode000, "deep": deep, "sparse": sparse}[tree])
store = NodeStateStore(root / "state")
store.ensure()
cfg = Config(hold_max_bytes=cap)
pt = PrivateTmp(cfg, "n1", store, HookLog("test", to_stderr=False), [base])
out = {"init": pt.init("77", user), "allocated": allocated(tmp) if tree != "deep" else None}
for _ in range(inits - 1):  # again, over the bind the first left (same file system)
    out["init"] = pt.init("77", user)


def can_list(name, path):  # as another local user: the export must not open Slurm's 0700
    other = UserIdentity.from_name(name)
    pid = os.fork()
    if pid == 0:
        os.setgroups([])
        os.setgid(other.gid)
        os.setuid(other.uid)
        try:
            os.listdir(path)
        except OSError:
            os._exit(1)
        os._exit(0)
    return os.waitpid(pid, 0)[1] == 0


tmp.chmod(0o1777)  # the job (or a site script) makes its /tmp look like a node's
job_tmp_now = store.read(user_name, user.uid).job_tmp["77"]
out["others_list"] = can_list("gtunit2", job_tmp_now)
out["user_lists"] = can_list(user_name, job_tmp_now)
tmp.chmod(0o700)
export = pt.export_root(user_name) / "77"
out["export_sees"] = sorted(os.listdir(export))
out["job_tmp"] = store.read(user_name, user.uid).job_tmp
out["job_tmp_sees"] = sorted(os.listdir(out["job_tmp"]["77"]))
try:
    out["held"], out["exit"] = pt.exit("77", user, declared)
except PrivateTmpError as exc:
    out["held"], out["exit"] = False, str(exc)
out["job_dir_after"] = sorted(os.listdir(job_dir))
hold_root = base / ".globus-tmp-hold"
out["holds_on_disk"] = sorted(os.listdir(hold_root)) if hold_root.exists() else []
out["export_after"] = sorted(os.listdir(export)) if export.exists() else None
job_tmp_after = store.read(user_name, user.uid).job_tmp.get("77")
out["job_tmp_after"] = sorted(os.listdir(job_tmp_after)) if job_tmp_after else None
if job_tmp_after:  # held: nothing may grow it past the cap it was measured against
    try:
        Path(job_tmp_after, "grown.dat").write_bytes(b"z")
        out["held_writable"] = True
    except OSError:
        out["held_writable"] = False
if tree == "requeue":  # the same job id runs again on this node while the hold lives
    rerun = job_dir / ".77"
    rerun.mkdir(mode=0o700)
    os.chown(rerun, user.uid, user.gid)
    (rerun / "second.dat").write_bytes(b"2")
    for step in ("init", "exit"):  # the rerun declared nothing: it would drop the export
        try:
            rerun_step = pt.init if step == "init" else lambda j, u: pt.exit(j, u, 0)
            out["rerun_" + step] = str(rerun_step("77", user))
        except PrivateTmpError as exc:
            out["rerun_" + step] = "refused: " + str(exc)
    out["first_hold_sees"] = sorted(os.listdir(job_tmp_after))
state = store.read(user_name, user.uid)
out["holds"] = {k: v.path for k, v in state.holds.items()}
hold = state.holds.get("77")
if hold is not None:
    out["hold_mode"] = oct(os.stat(Path(hold.path).parent).st_mode & 0o777)
    out["free"] = pt.free(state.job_tmp.get("77"), hold)
    out["hold_left"] = os.path.exists(hold.path)
    out["export_left"] = os.path.exists(export)
print(json.dumps(out))
"""


pytestmark = pytest.mark.root  # every test mounts in a private namespace


def _run(
    tmp_path: Path,
    cap: int,
    declared: int,
    inits: int = 1,
    tree: str = "plain",
    layout: str = "flat",
) -> dict[str, object]:
    if os.geteuid() != 0:
        pytest.skip("mounts need root")
    root = Path(tempfile.mkdtemp(prefix="pt-", dir="/tmp"))  # users reach the state dir
    root.chmod(0o755)
    try:
        res = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", sys.executable, "-c",
             SCENARIO, str(root), "gtunit1", str(cap), str(declared), str(inits), tree,
             layout],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)  # deep, mode-000 leftovers too
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


@pytest.fixture
def user(unit_users: object) -> None:
    """The hooks' test users (gtunit1) exist."""


def test_a_declared_stage_out_holds_the_files_at_the_same_path(tmp_path: Path, user: None) -> None:
    out = _run(tmp_path, cap=10**9, declared=1)
    assert out["export_sees"] == ["link", "result.dat", "sub"]
    assert str(out["job_tmp"]).count("jobtmp/gtunit1/77") == 1
    assert out["held"] is True, out["exit"]
    assert out["job_dir_after"] == []  # Slurm's teardown finds nothing to delete
    assert out["export_after"] == ["link", "result.dat", "sub"]  # same path, from the hold
    assert f"({out['allocated']} bytes)" in str(out["exit"])  # allocated, not apparent
    assert str(out["holds"]).endswith(".globus-tmp-hold/77'}")
    assert out["hold_mode"] == "0o700"
    assert "freed" in str(out["free"]) and out["hold_left"] is False
    assert out["export_left"] is False


def test_without_a_declaration_nothing_is_held(tmp_path: Path, user: None) -> None:
    out = _run(tmp_path, cap=10**9, declared=0)
    assert out["held"] is False and "declared no stage-out" in str(out["exit"])
    assert out["job_dir_after"] == [".77"]  # left to Slurm, which deletes it
    assert out["export_after"] is None and out["holds"] == {}


def test_past_the_cap_nothing_is_held_and_the_reason_names_the_key(
    tmp_path: Path, user: None
) -> None:
    out = _run(tmp_path, cap=1023, declared=1)
    assert out["held"] is False
    assert "not held" in str(out["exit"]) and "hold_max_bytes" in str(out["exit"])
    assert out["holds"] == {} and out["export_after"] is None
    # measured in the hold (out of the user's reach), then deleted there by root
    assert out["job_dir_after"] == [] and out["holds_on_disk"] == []
    assert "freed" in str(out["exit"])


def test_slurm_23_02_layout_exports_the_job_tmp_inside_the_container(
    tmp_path: Path, user: None
) -> None:
    """From 23.02 the job's /tmp is ``.<job>/_tmp``: GLOBUS_TMP_PATHS and stage-out must
    name that, not the container (they pointed one level too high)."""
    out = _run(tmp_path, cap=10**9, declared=1, layout="dirs")
    assert out["export_sees"] == ["_tmp"]  # the whole container: every Dirs entry reachable
    assert str(out["job_tmp"]).endswith("jobtmp/gtunit1/77/_tmp'}")
    assert out["job_tmp_sees"] == ["link", "result.dat", "sub"]
    assert out["held"] is True, out["exit"]
    assert out["job_tmp_after"] == ["link", "result.dat", "sub"]  # the same path, held
    assert out["held_writable"] is False  # bound read-only: not even root writes through it
    assert "freed" in str(out["free"]) and out["hold_left"] is False
    assert out["export_left"] is False


def test_init_over_its_own_leftover_bind_on_the_same_file_system(
    tmp_path: Path, user: None
) -> None:
    """A second init of the same job id (a leftover of an earlier run) finds the export
    path mounted with the user's directory: the mount table says it is a mount point,
    though a bind of the same file system keeps the parent's ``st_dev``."""
    out = _run(tmp_path, cap=10**9, declared=1, inits=2)
    assert "exported at" in str(out["init"]), out["init"]
    assert out["export_sees"] == ["link", "result.dat", "sub"]
    assert out["held"] is True, out["exit"]


def test_a_mode_000_directory_counts_and_is_not_held_past_the_cap(
    tmp_path: Path, user: None
) -> None:
    """``chmod 000 /tmp/d``: measured as the user, d counted 0 bytes and the cap was
    bypassed. Root measures it, all of it, and deletes what it will not hold."""
    out = _run(tmp_path, cap=100_000, declared=1, tree="mode000")
    assert int(str(out["allocated"])) > 100_000
    assert out["held"] is False, out["exit"]
    assert f"holds {out['allocated']} bytes" in str(out["exit"])
    assert out["holds_on_disk"] == [] and "freed" in str(out["exit"])


def test_a_held_mode_000_directory_is_freed(tmp_path: Path, user: None) -> None:
    """Deleted as the user, an unreadable directory could not be emptied: the hold
    stayed on disk through every reconcile."""
    out = _run(tmp_path, cap=10**9, declared=1, tree="mode000")
    assert out["held"] is True, out["exit"]
    assert "freed" in str(out["free"]), out["free"]
    assert out["hold_left"] is False


def test_a_hold_deeper_than_the_recursion_limit_is_freed(tmp_path: Path, user: None) -> None:
    """2,000 nested directories: ``shutil.rmtree`` hit RecursionError and left them."""
    out = _run(tmp_path, cap=10**9, declared=1, tree="deep")
    assert out["held"] is True, out["exit"]
    assert "freed" in str(out["free"]), out["free"]
    assert out["hold_left"] is False


def test_sparse_files_and_hard_links_count_what_they_allocate(tmp_path: Path, user: None) -> None:
    """A 1 GiB sparse file allocates 4 KiB; three names of one inode count it once."""
    out = _run(tmp_path, cap=1 << 20, declared=1, tree="sparse")
    assert out["held"] is True, out["exit"]
    assert f"({out['allocated']} bytes)" in str(out["exit"])


def test_a_hold_is_freed_in_what_is_left_of_the_callers_deadline(tmp_path: Path) -> None:
    """The Epilog's (or a drain's, or reconcile's) deadline bounds deleting its holds,
    not a fixed minute of its own: with the deadline spent the hold is left, found
    by the next reconcile as a hold no state knows, and deleted then."""
    from globus_tmp.config import Config
    from globus_tmp.hooklog import HookLog
    from globus_tmp.job import UserIdentity
    from globus_tmp.lifecycle import NodeLifecycle
    from globus_tmp.nodestate import HeldTmp, NodeStateStore, UserNodeState
    from globus_tmp.slurmconf import read_slurm_settings

    (tmp_path / "etc").mkdir()
    conf = tmp_path / "etc" / "slurm.conf"
    conf.write_text("JobContainerType=job_container/tmpfs\n")
    (tmp_path / "etc" / "job_container.conf").write_text(f"BasePath={tmp_path / 'base'}\n")
    hold = tmp_path / "base" / "n1" / ".globus-tmp-hold" / "77"
    (hold / "d").mkdir(parents=True)
    hold.parent.chmod(0o700)
    (hold / "d" / "f.dat").write_bytes(b"f" * 4096)
    store = NodeStateStore(tmp_path / "state")
    store.ensure()
    user = UserIdentity("alice", 1000, 1000, "/home/alice")
    held = HeldTmp(path=str(hold), size=8192, since=time.time() - 3600)
    store.write(UserNodeState("alice", 1000, holds={"77": held}))

    def lifecycle(seconds_left: float) -> NodeLifecycle:
        log = HookLog("test", to_stderr=False)
        lc = NodeLifecycle(Config(), "n1", store, log, time.monotonic() + seconds_left)
        lc._slurm = read_slurm_settings(conf)
        return lc

    (note,) = lifecycle(1.0).free_unserved_private_tmp(user)
    assert "NOT removed" in note and "time ran out" in note, note
    assert hold.exists() and store.read("alice", 1000).holds == {}
    reconcile = lifecycle(60.0).private_tmp
    assert reconcile.orphan_holds() == [hold]
    assert "freed" in reconcile.delete_orphan(hold) and not hold.exists()


def test_the_export_is_for_the_job_user_alone_even_with_a_1777_tmp(
    tmp_path: Path, user: None
) -> None:
    """Slurm keeps a job's /tmp private through its root-owned 0700 parent; the export
    root used to be 0755, so a job /tmp made 1777 was open to every local user there."""
    out = _run(tmp_path, cap=10**9, declared=0)
    assert out["user_lists"] is True
    assert out["others_list"] is False


def test_a_requeued_job_never_touches_the_first_runs_hold(tmp_path: Path, user: None) -> None:
    """Same job id, same node: init unmounted the first run's export and bound the new
    /tmp there, and the second exit dropped the first hold's record."""
    out = _run(tmp_path, cap=10**9, declared=1, tree="requeue")
    assert out["held"] is True, out["exit"]
    assert str(out["rerun_init"]).startswith("refused: ") and "requeued" in str(out["rerun_init"])
    assert str(out["rerun_exit"]).startswith("refused: "), out["rerun_exit"]
    assert out["first_hold_sees"] == ["link", "result.dat", "sub"]  # not the second run's
    assert str(out["holds"]).endswith(".globus-tmp-hold/77'}")
    assert "freed" in str(out["free"]) and out["hold_left"] is False


def test_reconcile_sweeps_view_mounts_a_killed_helper_left(tmp_path: Path) -> None:
    """A helper SIGKILLed mid-move (its plugin's timeout) left ``.view-*`` behind and
    nothing removed it; a running helper's own (young) view is left alone."""
    from globus_tmp.config import Config
    from globus_tmp.hooklog import HookLog
    from globus_tmp.nodestate import NodeStateStore
    from globus_tmp.privatetmp import PrivateTmp

    store = NodeStateStore(tmp_path / "state")
    store.ensure()
    old, young = store.root / ".view-old", store.root / ".view-young"
    old.mkdir()
    young.mkdir()
    os.utime(old, (1, 1))
    pt = PrivateTmp(Config(), "n1", store, HookLog("test", to_stderr=False), [])
    notes = pt.sweep_views()
    assert notes == [f"view {old} removed"]
    assert not old.exists() and young.exists()


def test_reconcile_never_takes_a_hold_recorded_while_it_looks_for_orphans(
    tmp_path: Path, unit_users: object
) -> None:
    """A job's exit records its hold, then makes it: reconcile must list the disk
    before reading the states, or a hold made in between looks like an orphan."""
    from globus_tmp.config import Config
    from globus_tmp.hooklog import HookLog
    from globus_tmp.job import UserIdentity
    from globus_tmp.nodestate import HeldTmp, NodeStateStore
    from globus_tmp.privatetmp import HOLD_DIR, PrivateTmp

    user = UserIdentity.from_name("gtunit1")
    base = tmp_path / "base"
    (base / HOLD_DIR).mkdir(parents=True)

    class ExitMeanwhile(NodeStateStore):
        exits = 1

        def read(self, name: str, uid: int) -> Any:  # right after reconcile reads it
            state = super().read(name, uid)
            if uid == -1 and self.exits:  # reconcile's read: a job exits meanwhile
                self.exits -= 1
                hold = base / HOLD_DIR / "9"
                mine = super().read(user.name, user.uid)
                mine.holds["9"] = HeldTmp(path=str(hold), size=1, since=1.0)
                self.write(mine)
                hold.mkdir()
            return state

    store = ExitMeanwhile(tmp_path / "state")
    store.ensure()
    with store.jobs_lock(user.name):
        store.write(store.read(user.name, user.uid))  # the user has a state here
    pt = PrivateTmp(Config(), "n1", store, HookLog("test", to_stderr=False), [base])
    assert pt.orphan_holds() == []


def test_the_epilog_waits_for_a_private_tmp_exit_yet_to_come_or_running(
    tmp_path: Path, unit_users: object
) -> None:
    """On 25.11 CloneNSEpilog overlaps the job's Epilog (seen in the lab): an Epilog that
    decided first dropped the export the exit was about to hold."""
    import threading
    import time

    from globus_tmp.config import Config
    from globus_tmp.hooklog import HookLog
    from globus_tmp.job import UserIdentity
    from globus_tmp.nodestate import NodeStateStore
    from globus_tmp.privatetmp import PrivateTmp

    user = UserIdentity.from_name("gtunit1")
    base = tmp_path / "base"
    (base / "8" / ".8").mkdir(parents=True)
    store = NodeStateStore(tmp_path / "state")
    store.ensure()
    with store.jobs_lock(user.name):
        state = store.read(user.name, user.uid)
        state.job_tmp["8"] = str(tmp_path / "export" / "8")
        store.write(state)
    pt = PrivateTmp(Config(), "n1", store, HookLog("test", to_stderr=False), [base])
    assert pt.wait_for_exit(user, "8", time.monotonic() + 0.3) is False  # exit yet to come

    def exit_runs() -> None:  # the exit: takes its lock, moves the tree, drops the export
        with store.tmp_exit_lock(user.name, "8"):
            (base / "8" / ".8").rmdir()
            time.sleep(0.5)
            with store.jobs_lock(user.name):
                state = store.read(user.name, user.uid)
                del state.job_tmp["8"]
                store.write(state)

    t0 = time.monotonic()
    exiting = threading.Thread(target=exit_runs)
    exiting.start()
    time.sleep(0.1)
    assert pt.wait_for_exit(user, "8", time.monotonic() + 10) is True
    assert time.monotonic() - t0 >= 0.5  # it waited for the running exit's lock
    exiting.join()
    assert pt.wait_for_exit(user, "8", time.monotonic()) is True  # done: no wait at all
    assert not list((store.root / "locks").glob("*tmpexit*")), "lock files pile up"
