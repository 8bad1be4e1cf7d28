"""Stage-out marks: a declaration leaves one on the node, and the Epilog (or the
private-/tmp exit) reads the user's home only for a job that has one. Before them every
Epilog listed the job's records in the home: a hung home file system held every job's
end, declared or not."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

import pytest
from globus_tmp.errors import GlobusTmpError, UserDirError
from globus_tmp.job import JobContext, UserIdentity
from globus_tmp.nodestate import MARKS_SINCE, GcpInstance, NodeStateStore, UserNodeState
from globus_tmp.phases import Phase
from globus_tmp.process import ProcessRef
from globus_tmp.stagemarks import (
    ORPHAN,
    MarkError,
    declared_here,
    has_mark,
    sweep_marks,
    take_mark,
)
from globus_tmp.stageout import StageOut, StageOutError, StageOutStore

from unit.lifecycles import ErrorLines, LocalMarks, lifecycle_with

ME = UserIdentity("alice", os.geteuid(), os.getegid(), "/home/alice")
DEST = "5a8d3a0c-1f7e-4d0e-8c52-0b1b2f0f9a11"


def _record(job: str = "5") -> StageOut:
    return StageOut(
        cluster="c", job_id=job, node="n1", seq=0, source="/tmp/out", source_path="/tmp/out",
        destination_endpoint=DEST, destination_path="/x", label="l",
    )  # fmt: skip


def _store(tmp_path: Path) -> NodeStateStore:
    store = NodeStateStore(tmp_path / "state")
    store.ensure()
    return store


def _marks(store: NodeStateStore) -> Path:
    """The caller's ``declared/<user>`` as the Prolog leaves it (mkdir + chown)."""
    assert store.ensure_marks(ME.name, ME.uid, ME.gid) is None
    return store.marks_dir(ME.name)


# -- the user's side: declaring ---------------------------------------------------------


def test_a_declaration_leaves_its_mark_on_the_node_before_its_record(tmp_path: Path) -> None:
    marks = _marks(_store(tmp_path))
    store = StageOutStore(tmp_path / "home")
    store.declare(_record(), marks)
    store.declare(_record(), marks)  # a second one of the same job: the same mark
    assert sorted(os.listdir(marks)) == ["5"]
    assert len(store.records("c", "5", "n1")) == 2
    assert stat.S_IMODE(os.lstat(marks / "5").st_mode) == 0o600


def test_without_its_marks_directory_a_declaration_is_refused_whole(tmp_path: Path) -> None:
    """The Prolog did not run here (or an older one did): nothing may reach the home,
    or the Epilog, finding no mark, would never submit it."""
    state = _store(tmp_path)
    store = StageOutStore(tmp_path / "home")
    with pytest.raises(MarkError) as info:
        store.declare(_record(), state.marks_dir(ME.name))
    message = str(info.value)
    assert "\n" not in message and "Prolog did not run" in message
    assert "nothing declared" in message and "ask your admin" in message
    assert store.records() == [] and not (tmp_path / "home" / "stage-out").exists()


def test_a_marks_directory_not_the_users_own_is_refused(tmp_path: Path) -> None:
    state = _store(tmp_path)
    mine = tmp_path / "elsewhere"
    mine.mkdir(mode=0o700)
    state.marks_dir(ME.name).symlink_to(mine)  # a symlink, even to a directory of mine
    store = StageOutStore(tmp_path / "home")
    with pytest.raises(MarkError, match="nothing declared"):
        store.declare(_record(), state.marks_dir(ME.name))
    assert os.listdir(mine) == [] and store.records() == []
    if os.geteuid() != 0:
        return
    other = state.marks_dir("bob")
    other.mkdir(mode=0o700)
    os.chown(other, 4242, 4242)
    with pytest.raises(MarkError, match="belongs to uid 4242"):
        store.declare(_record(), other)
    assert os.listdir(other) == [] and store.records() == []


def test_a_record_that_cannot_be_written_takes_its_new_mark_with_it(tmp_path: Path) -> None:
    marks = _marks(_store(tmp_path))
    home = tmp_path / "home"
    home.mkdir()
    (home / "stage-out").write_text("a file where the records go")
    with pytest.raises(OSError):
        StageOutStore(home).declare(_record(), marks)
    assert os.listdir(marks) == []  # no mark without its record
    (home / "stage-out").unlink()
    store = StageOutStore(home)
    store.declare(_record(), marks)
    for _ in range(63):
        store.declare(_record(), marks)
    with pytest.raises(StageOutError, match="declare a directory"):
        store.declare(_record(), marks)
    assert os.listdir(marks) == ["5"]  # the earlier declarations' mark stays


# -- root's side: the Prolog makes the directory ---------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_every_prolog_makes_the_users_marks_directory_and_never_looks_inside(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    parent = store.root / "declared"
    assert stat.S_IMODE(os.lstat(parent).st_mode) == 0o711  # users pass, none lists it
    assert os.lstat(parent).st_uid == 0 and (store.root / MARKS_SINCE).exists()
    bob = UserIdentity("bob", 4242, 4343, "/home/bob")
    me = ProcessRef.of(os.getpid())  # bob's GCP runs: the Prolog's join path
    instance = GcpInstance(me.pid, me.start_ticks, "ep-id", "ep1", "/c", "/l", time.time())
    store.write(UserNodeState("bob", 4242, phase=Phase.RUNNING, instance=instance))
    lifecycle = lifecycle_with(store, ErrorLines(), object())
    assert "joined GCP" in lifecycle.prolog(JobContext("7", "n1", bob))
    st = os.lstat(store.marks_dir("bob"))
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert (st.st_uid, st.st_gid) == (4242, 4343)
    # the user's own from now on: what they put there is never followed, chowned, listed
    os.rmdir(store.marks_dir("bob"))
    target = tmp_path / "target"
    target.mkdir(mode=0o755)
    store.marks_dir("bob").symlink_to(target)
    assert "joined GCP" in lifecycle.prolog(JobContext("8", "n1", bob))
    assert store.marks_dir("bob").is_symlink()
    assert os.lstat(target).st_uid == 0 and stat.S_IMODE(os.lstat(target).st_mode) == 0o755


# -- root's side: the Epilog's decision -------------------------------------------------


def _hung_home(user: UserIdentity, job_id: str) -> int:
    raise AssertionError("the home was read for a job without a mark")


def _epilog(
    tmp_path: Path, marks: LocalMarks, store: NodeStateStore, added: float | None = None
) -> tuple[str, ErrorLines]:
    """The Epilog of job 5 while job 6 stays (the not-last path)."""
    now = time.time()
    jobs = {"6": now} if added is None else {"5": added, "6": now}
    state = UserNodeState(ME.name, ME.uid, jobs=jobs)
    store.write(state)
    log = ErrorLines()
    lifecycle = lifecycle_with(store, log, _NoStageOut(), marks)
    return lifecycle.epilog(JobContext("5", "n1", ME)), log


class _NoStageOut:
    """The user's side of a submission: what the home held (nothing, here)."""

    def __init__(self) -> None:
        self.submitted: list[str] = []

    def submit_stage_outs(self, job_id: str, *args: object) -> list[object]:
        self.submitted.append(job_id)
        return []


def test_the_epilog_of_a_job_without_a_mark_reads_no_home(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _marks(store)
    marks = LocalMarks(store, _hung_home)
    message, log = _epilog(tmp_path, marks, store, added=time.time())
    assert marks.home_reads == [] and log.errors == []
    assert "1 job(s) remain" in message and sorted(store.read(ME.name, ME.uid).jobs) == ["6"]


def test_a_mark_makes_the_epilog_read_the_home_and_is_consumed(tmp_path: Path) -> None:
    store = _store(tmp_path)
    marks_dir = _marks(store)
    (marks_dir / "5").touch()  # what stage-out --at-exit left
    (marks_dir / "6").touch()  # another job's: not this Epilog's
    marks = LocalMarks(store, lambda user, job: 0)  # a forged mark: no record in the home
    message, log = _epilog(tmp_path, marks, store, added=time.time())
    assert marks.home_reads == ["5"] and log.errors == []
    assert os.listdir(marks_dir) == ["6"]
    assert "stage-out" not in message


def test_a_marked_job_with_declarations_is_submitted(tmp_path: Path) -> None:
    store = _store(tmp_path)
    (_marks(store) / "5").touch()
    marks = LocalMarks(store, lambda user, job: 2)
    actions = _NoStageOut()
    store.write(UserNodeState(ME.name, ME.uid, jobs={"5": time.time(), "6": time.time()}))
    lifecycle_with(store, ErrorLines(), actions, marks).epilog(JobContext("5", "n1", ME))
    assert marks.home_reads == ["5"] and actions.submitted == ["5"]


def test_a_job_added_before_marks_existed_here_is_looked_up_in_the_home(tmp_path: Path) -> None:
    """An upgrade under running jobs: the job may have declared with an older
    stage-out, which left no mark."""
    store = _store(tmp_path)
    _marks(store)
    since = os.lstat(store.root / MARKS_SINCE).st_mtime
    marks = LocalMarks(store)
    _epilog(tmp_path, marks, store, added=since - 60)
    assert marks.home_reads == ["5"]
    (store.root / MARKS_SINCE).unlink()  # a hook killed before the stamp: conservative
    assert store.predates_marks(time.time() - 1) and (store.root / MARKS_SINCE).exists()
    assert not store.predates_marks(None)  # a job its Prolog never added: its marks decide


def test_a_mark_that_cannot_be_looked_at_falls_back_to_the_home(tmp_path: Path) -> None:
    """A step that times out (a mount of the user's over their marks directory) is no
    answer: losing a declared stage-out is worse than a slow Epilog."""

    class Stuck(LocalMarks):
        def look(self, user: UserIdentity, job_id: str, timeout: float, take: bool) -> bool:
            raise GlobusTmpError(f"step as alice (take_mark) did not finish within {timeout:.0f} s")

    store = _store(tmp_path)
    marks = Stuck(store, lambda user, job: 0)
    _, log = _epilog(tmp_path, marks, store, added=time.time())
    assert marks.home_reads == ["5"]
    (line,) = log.errors
    assert "did not finish within 5 s" in line and "reading the user_dir" in line


def test_a_home_that_cannot_be_read_is_one_line_and_the_job_leaves(tmp_path: Path) -> None:
    def refused(user: UserIdentity, job_id: str) -> int:
        raise UserDirError("user_dir /home/alice/.globus-tmp: cannot check /home: hung")

    store = _store(tmp_path)
    (_marks(store) / "5").touch()
    message, log = _epilog(tmp_path, LocalMarks(store, refused), store, added=time.time())
    (line,) = log.errors
    assert "could not look for stage-outs of job 5" in line and "1 job(s) remain" in message
    assert sorted(store.read(ME.name, ME.uid).jobs) == ["6"]


def test_the_private_tmp_exit_leaves_the_mark_for_the_epilog(tmp_path: Path) -> None:
    store = _store(tmp_path)
    marks_dir = _marks(store)
    marks = LocalMarks(store, lambda user, job: 1)
    budget = lambda: 15.0  # noqa: E731
    assert declared_here(marks, ME, "5", budget, False, False, ErrorLines().error) == 0
    (marks_dir / "5").touch()
    assert declared_here(marks, ME, "5", budget, False, False, ErrorLines().error) == 1
    assert os.listdir(marks_dir) == ["5"] and marks.home_reads == ["5"]


# -- leftovers: jobs whose Epilog never ran --------------------------------------------


def test_reconcile_orphans_marks_of_jobs_gone_and_removes_them_later(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    for name in ("5", "6", "junk", "9" + ORPHAN):
        (marks / name).touch()
    assert sweep_marks(str(marks), keep=["6", "9"]) == 2
    assert sorted(os.listdir(marks)) == ["5" + ORPHAN, "6", "9" + ORPHAN]
    assert has_mark(str(marks), "5")  # a late Epilog still finds it
    assert sweep_marks(str(marks), keep=["6", "9"]) == 0  # not a day old yet
    assert sweep_marks(str(marks), keep=["6", "9"], max_age=0.0) == 1
    assert sorted(os.listdir(marks)) == ["6", "9" + ORPHAN]
    assert take_mark(str(marks), "9") and not has_mark(str(marks), "9")
    assert not take_mark(str(marks), "9")
    assert sweep_marks(str(tmp_path / "missing"), keep=[]) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="a step as another user needs root")
def test_the_mark_steps_never_enter_a_hung_home(tmp_path: Path) -> None:
    """A step as the user began with a chdir into the home: on a hung home file system
    that alone blocked it, whatever the step was for."""
    from globus_tmp.config import Config
    from globus_tmp.privileges import run_as
    from globus_tmp.stagemarks import ForkedStageMarks
    from hooksite import hung_file_system

    root = Path(tempfile.mkdtemp(prefix="globus-tmp-marks-", dir="/tmp"))  # users pass
    root.chmod(0o755)
    try:
        (root / "home").mkdir(mode=0o755)
        nobody = UserIdentity("nobody", 65534, 65534, str(root / "home" / "nobody"))
        state = NodeStateStore(root / "state")
        state.ensure()
        assert state.ensure_marks(nobody.name, nobody.uid, nobody.gid) is None
        mark = state.marks_dir(nobody.name) / "5"
        mark.touch()
        os.chown(mark, nobody.uid, nobody.gid)
        steps = ForkedStageMarks(Config(), "n1", state.marks_dir)
        with hung_file_system(root / "home"):
            with pytest.raises(GlobusTmpError, match="did not finish within 2 s"):
                run_as(nobody, 2, os.getcwd)  # an ordinary step: stuck in its chdir
            start = time.monotonic()
            assert steps.look(nobody, "5", 5, take=False) and mark.exists()
            assert steps.look(nobody, "5", 5, take=True) and not mark.exists()
            assert not steps.look(nobody, "5", 5, take=True)
            assert steps.sweep(nobody, [], 5) == 0
            assert time.monotonic() - start < 4
    finally:
        shutil.rmtree(root, ignore_errors=True)
