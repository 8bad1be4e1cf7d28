"""Root's walk over a held tree (globus_tmp.holdtree): what a hostile user can put in
their /tmp before it is held. Runs as root (mode-000 directories, mounts)."""

from __future__ import annotations

import os
import resource
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from globus_tmp import holdtree

pytestmark = pytest.mark.root


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[Path]:
    """``<tmp>/hold/t``: the tree under a root-owned 0700 parent, as in a hold."""
    if os.geteuid() != 0:
        pytest.skip("root's walk: needs root")
    parent = tmp_path / "hold"
    parent.mkdir(mode=0o700)
    (parent / "t").mkdir()
    yield parent / "t"
    subprocess.run(["rm", "-rf", str(parent)], check=True)  # what a failed test left, deep


def _blocks(*paths: Path) -> int:
    return sum(os.lstat(p).st_blocks * 512 for p in paths)


def _soon(seconds: float = 30.0) -> float:
    return time.monotonic() + seconds


def _chain(top: Path, depth: int) -> None:
    """``top/d/d/.../d`` (``depth`` directories) built by descriptors: the paths get
    longer than PATH_MAX."""
    fd = os.open(top, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    os.close(fd)


def test_nested_mode_000_directories_are_measured_and_removed(hold: Path) -> None:
    (hold / "a" / "b").mkdir(parents=True)
    (hold / "a" / "x.dat").write_bytes(b"x" * 65536)
    (hold / "a" / "b" / "y.dat").write_bytes(b"y" * 65536)
    expected = _blocks(
        hold, hold / "a", hold / "a" / "b", hold / "a" / "x.dat", hold / "a" / "b" / "y.dat"
    )
    os.chmod(hold / "a" / "b", 0)
    os.chmod(hold / "a", 0)
    assert holdtree.measure(hold.parent, "t", _soon()) == holdtree.Measured(expected)
    removed = holdtree.remove(hold.parent, "t", _soon())
    assert removed == holdtree.Removed(True, 5)
    assert not os.path.lexists(hold)


@pytest.mark.parametrize("depth", [2000, 20000])
def test_trees_deeper_than_the_recursion_limit_in_few_descriptors(
    hold: Path, depth: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk keeps MAX_OPEN descriptors whatever the depth: with the process limit
    a few above what is open now, a walk that kept one per level would fail."""
    _chain(hold, depth)
    expected = (depth + 1) * os.lstat(hold).st_blocks * 512  # directories; f is empty
    monkeypatch.setattr(holdtree, "MAX_OPEN", 8)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))
    try:
        measured = holdtree.measure(hold.parent, "t", _soon(60))
        removed = holdtree.remove(hold.parent, "t", _soon(60))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert measured == holdtree.Measured(expected)
    assert removed == holdtree.Removed(True, depth + 2)
    assert not os.path.lexists(hold)


def test_symlinks_out_of_the_tree_are_never_followed(hold: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "dir" / "precious.dat").write_bytes(b"p" * (1 << 20))
    (outside / "file.dat").write_bytes(b"f" * (1 << 20))
    os.symlink(outside / "dir", hold / "to-dir")
    os.symlink(outside / "file.dat", hold / "to-file")
    os.symlink("../../outside", hold / "relative")
    expected = _blocks(hold, hold / "to-dir", hold / "to-file", hold / "relative")
    assert holdtree.measure(hold.parent, "t", _soon()) == holdtree.Measured(expected)
    assert holdtree.remove(hold.parent, "t", _soon()).gone
    assert (outside / "dir" / "precious.dat").stat().st_size == 1 << 20
    assert (outside / "file.dat").stat().st_size == 1 << 20


def test_a_tree_that_is_a_symlink_is_refused(hold: Path, tmp_path: Path) -> None:
    os.rmdir(hold)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep").write_bytes(b"k")
    os.symlink(tmp_path / "elsewhere", hold)
    assert holdtree.measure(hold.parent, "t", _soon()).size is None
    assert not holdtree.remove(hold.parent, "t", _soon()).gone
    assert (tmp_path / "elsewhere" / "keep").exists()


def test_hard_links_count_once_and_sparse_files_what_they_allocate(hold: Path) -> None:
    (hold / "one.dat").write_bytes(b"1" * 40960)
    os.link(hold / "one.dat", hold / "two.dat")
    (hold / "sub").mkdir()
    os.link(hold / "one.dat", hold / "sub" / "three.dat")
    with open(hold / "sparse.dat", "wb") as f:
        f.write(b"s" * 4096)
        f.truncate(1 << 30)
    measured = holdtree.measure(hold.parent, "t", _soon())
    assert measured.size == _blocks(hold, hold / "one.dat", hold / "sub", hold / "sparse.dat")
    assert measured.size < 1 << 20  # not the 1 GiB st_size says, nor 40 KiB three times
    assert holdtree.remove(hold.parent, "t", _soon()) == holdtree.Removed(True, 6)


@pytest.fixture
def mounted(hold: Path, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A tmpfs at ``hold/m`` and a bind of an outside directory (same file system, same
    st_dev) at ``hold/b``; both unmounted afterwards."""
    (hold / "m").mkdir()
    (hold / "b").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "theirs.dat").write_bytes(b"t" * 8192)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(hold / "m")], check=True)
    try:
        subprocess.run(["mount", "--bind", str(outside), str(hold / "b")], check=True)
        try:
            (hold / "m" / "on-tmpfs.dat").write_bytes(b"m" * 8192)
            yield hold / "m", outside
        finally:
            subprocess.run(["umount", str(hold / "b")], check=True)
    finally:
        subprocess.run(["umount", str(hold / "m")], check=True)


def test_mount_points_inside_are_not_crossed(hold: Path, mounted: tuple[Path, Path]) -> None:
    tmpfs, outside = mounted
    (hold / "mine.dat").write_bytes(b"x" * 4096)
    measured = holdtree.measure(hold.parent, "t", _soon())
    assert measured.size == _blocks(hold, hold / "mine.dat")
    assert "2 mount point(s)" in measured.reason
    removed = holdtree.remove(hold.parent, "t", _soon())
    assert not removed.gone and removed.removed == 1 and removed.left == 3
    assert "2 mount point(s)" in removed.reason, removed
    assert (tmpfs / "on-tmpfs.dat").exists() and (outside / "theirs.dat").exists()


def test_a_tree_that_is_a_mount_point_is_refused(hold: Path) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(hold)], check=True)
    try:
        (hold / "on-tmpfs.dat").write_bytes(b"m")
        assert holdtree.measure(hold.parent, "t", _soon()).size is None
        assert not holdtree.remove(hold.parent, "t", _soon()).gone
        assert (hold / "on-tmpfs.dat").exists()
    finally:
        subprocess.run(["umount", str(hold)], check=True)


def test_past_the_deadline_nothing_is_measured_and_the_rest_is_left(hold: Path) -> None:
    _chain(hold, 50)
    measured = holdtree.measure(hold.parent, "t", time.monotonic() - 1)
    assert measured.size is None and "time ran out" in measured.reason
    removed = holdtree.remove(hold.parent, "t", time.monotonic() - 1)
    assert not removed.gone and "time ran out" in removed.reason
    assert (hold / "d").is_dir()


def test_a_deadline_that_expires_during_the_walk(
    hold: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock moves a second per call: the walk stops partway, whatever it is."""
    _chain(hold, 50)
    clock = iter(range(10**6))
    monkeypatch.setattr(time, "monotonic", lambda: float(next(clock)))
    measured = holdtree.measure(hold.parent, "t", 20.0)
    assert measured.size is None and "time ran out" in measured.reason
    removed = holdtree.remove(hold.parent, "t", 60.0)
    assert not removed.gone and "time ran out" in removed.reason
    monkeypatch.undo()
    assert holdtree.remove(hold.parent, "t", _soon()).gone  # the next run finishes


def test_a_hold_already_gone_is_gone(hold: Path) -> None:
    os.rmdir(hold)
    assert holdtree.remove(hold.parent, "t", _soon()) == holdtree.Removed(True, 0)


def test_past_max_pending_measuring_gives_up_and_deleting_reads_again(
    hold: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(30):
        (hold / f"s{i}" / "inner").mkdir(parents=True)
    monkeypatch.setattr(holdtree, "MAX_PENDING", 5)
    assert holdtree.measure(hold.parent, "t", _soon()).size is None
    assert holdtree.remove(hold.parent, "t", _soon()) == holdtree.Removed(True, 61)


def test_a_directory_moved_under_the_walk_stops_it(
    hold: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Back up through ``..`` only into the directory it came down through: a user
    holding a descriptor inside could move a directory elsewhere (here, d9 to the top)."""
    _chain(hold, 10)
    monkeypatch.setattr(holdtree, "MAX_OPEN", 2)
    leave = holdtree._Remove.leave
    d9 = hold.joinpath(*["d"] * 9)

    def move_once(self: holdtree._Remove, frame: holdtree._Frame, parent_fd: int) -> None:
        if d9.exists():
            os.rename(d9, hold / "moved")
        leave(self, frame, parent_fd)

    monkeypatch.setattr(holdtree._Remove, "leave", move_once)
    removed = holdtree.remove(hold.parent, "t", _soon())
    assert not removed.gone and "changed under the walk" in removed.reason
    assert (hold / "moved").is_dir() and not (hold / "moved" / "d").exists()


def test_without_a_mount_table_nothing_is_measured_or_deleted(
    hold: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from globus_tmp import mounts

    (hold / "f").write_bytes(b"f")
    monkeypatch.setattr(mounts, "MOUNTINFO", str(hold / "no-such-table"))
    assert "mount table" in holdtree.measure(hold.parent, "t", _soon()).reason
    removed = holdtree.remove(hold.parent, "t", _soon())
    assert not removed.gone and "mount table" in removed.reason
    assert (hold / "f").exists()
