"""user_dir is one user's alone: per-user in the config, and checked as the user before use.

Each check runs as ``nobody`` in a child (``run_as``), as the hooks run it: owners are
compared with the step's own uid. ``OTHER`` stands for another user of the cluster.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from globus_tmp.config import Config, parse_config
from globus_tmp.errors import ConfigError, UserDirError
from globus_tmp.job import UserIdentity
from globus_tmp.privileges import run_as
from globus_tmp.stageout import declared_count
from globus_tmp.userdir import check_user_dir, ensure_user_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: checks run as nobody")

NOBODY = 65534
OTHER = 65533


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory every user can traverse (pytest's own tmp_path is root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="globus-tmp-userdir-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _dir(path: Path, uid: int, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, uid)
    path.chmod(mode)
    return path


def _nobody(home: Path) -> UserIdentity:
    return UserIdentity("nobody", NOBODY, NOBODY, str(home))


def _checked(user_dir: Path, home: str) -> None:
    check_user_dir(user_dir, home)  # a step's answer is JSON: not the Path


def _ensured(user_dir: Path, home: str) -> None:
    ensure_user_dir(user_dir, home)


def _check(user_dir: Path, home: Path) -> str:
    """What the check says as nobody: "ok" or the error's message."""
    try:
        run_as(_nobody(home), 20, _checked, user_dir, str(home))
    except UserDirError as exc:
        assert "\n" not in str(exc)
        return str(exc)
    return "ok"


# -- the configuration ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("/shared/globus-tmp", "one directory shared by every user"),
        ("/shared/%%u", "one directory shared by every user"),
        ("~/../../scratch/shared", "must not contain '..'"),
        ("/scratch/%u/../shared", "must not contain '..'"),
        ("/scratch/%n", "not %n"),
        ("globus-tmp", 'must give each user their own directory: "~/..."'),
        ("~alice/globus-tmp", 'must give each user their own directory: "~/..."'),
    ],
)
def test_a_user_dir_without_a_per_user_part_is_refused_at_load(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"user_dir": value}, "/etc/slurm/globus-tmp.conf")
    text = str(info.value)
    assert message in text and "/etc/slurm/globus-tmp.conf: key 'user_dir'" in text
    assert "%u" in text or ".." in text  # names the fix
    assert "\n" not in text


def test_placeholders_expand_everywhere_the_user_dir_is_built() -> None:
    alice = UserIdentity("alice", 1001, 1001, "/home/alice")
    cfg = parse_config({"user_dir": "/scratch/%u/gt-%U/100%%"}, "t")
    assert cfg.user_dir_for(alice) == Path("/scratch/alice/gt-1001/100%")
    assert Config().user_dir_for(alice) == Path("/home/alice/.globus-tmp")
    with pytest.raises(ConfigError, match=r"cannot be expanded for user name '\.\.'"):
        cfg.user_dir_for(UserIdentity("..", 1002, 1002, "/home/x"))
    with pytest.raises(ConfigError, match="shared by every user"):
        Config(user_dir="/shared").user_dir_for(alice)  # built in code, not parsed


# -- at run time, as the user -----------------------------------------------------------


def test_the_users_own_dir_under_the_home_is_trusted(base: Path) -> None:
    home = _dir(base / "home", NOBODY, 0o755)
    assert _check(_dir(home / ".globus-tmp", NOBODY), home) == "ok"
    assert _check(home / "not-made-yet", home) == "ok"  # nothing in it to trust
    assert "not an absolute path" in _check(Path(".globus-tmp"), Path(""))  # no home


def test_a_dir_planted_by_another_user_is_refused(base: Path) -> None:
    """The finding: A's files in B's user_dir are submitted with B's tokens."""
    home = _dir(base / "home", NOBODY, 0o755)
    planted = _dir(base / "shared", OTHER, 0o777)
    _dir(planted / "stage-out" / "c.5", OTHER, 0o777)
    assert "belongs to uid 65533, not you (uid 65534)" in _check(planted, home)
    with pytest.raises(UserDirError, match="nothing in it is used"):
        run_as(_nobody(home), 20, declared_count, planted, str(home), "c", "5", "n1")


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o1777])
def test_a_user_dir_others_may_write_is_refused(base: Path, mode: int) -> None:
    home = _dir(base / "home", NOBODY, 0o755)
    user_dir = _dir(home / ".globus-tmp", NOBODY, mode)
    assert "can be written by group or others" in _check(user_dir, home)
    assert f"chmod go-w {user_dir}" in _check(user_dir, home)


def test_parents_up_to_the_home_must_be_the_users_or_roots(base: Path) -> None:
    home = _dir(base / "home", NOBODY, 0o755)
    middle = _dir(home / "a", OTHER, 0o755)
    user_dir = _dir(middle / "gt", NOBODY)
    assert f"{middle} belongs to uid 65533, not you or root" in _check(user_dir, home)
    os.chown(middle, 0, 0)
    assert _check(user_dir, home) == "ok"
    home.chmod(0o775)
    assert f"{home} can be written by group or others" in _check(user_dir, home)
    base.chmod(0o777)  # above the home: the site's business, not checked
    home.chmod(0o755)
    assert _check(user_dir, home) == "ok"


def test_outside_the_home_every_parent_up_to_root_counts(base: Path) -> None:
    home = _dir(base / "home", NOBODY, 0o755)
    scratch = _dir(base / "scratch", 0, 0o1777)
    user_dir = _dir(scratch / "nobody", NOBODY)
    assert _check(user_dir, home) == "ok"  # sticky and root's: others cannot rename it
    scratch.chmod(0o777)
    assert f"{scratch} can be written by group or others" in _check(user_dir, home)
    scratch.chmod(0o1777)
    os.chown(scratch, OTHER, OTHER)  # a sticky dir's owner may still remove anything
    assert f"{scratch} belongs to uid 65533" in _check(user_dir, home)


def test_a_symlink_on_the_way_must_be_the_users_or_roots(base: Path) -> None:
    home = _dir(base / "home", NOBODY, 0o755)
    scratch = _dir(base / "scratch", 0, 0o1777)
    target = _dir(base / "target", NOBODY)
    link = scratch / "nobody"
    link.symlink_to(target)
    os.lchown(link, OTHER, OTHER)  # another user's link: they may point it anywhere
    assert f"{link} belongs to uid 65533" in _check(link / "gt", home)
    os.lchown(link, NOBODY, NOBODY)
    assert _check(link, home) == "ok"
    os.chown(target, OTHER, OTHER)
    assert "belongs to uid 65533, not you (uid 65534)" in _check(link, home)


def test_the_cli_creates_a_missing_dir_as_the_user_and_checks_again(base: Path) -> None:
    home = _dir(base / "home", NOBODY, 0o755)
    scratch = _dir(base / "scratch", 0, 0o1777)
    made = scratch / "nobody" / ".globus-tmp"
    run_as(_nobody(home), 20, _ensured, made, str(home))
    for path in (made, made.parent):
        assert path.stat().st_uid == NOBODY and path.stat().st_mode & 0o777 == 0o700
    squatted = scratch / "squatted" / ".globus-tmp"
    _dir(squatted.parent, OTHER, 0o777)  # another user was first
    with pytest.raises(UserDirError, match="belongs to uid 65533"):
        run_as(_nobody(home), 20, _ensured, squatted, str(home))
    assert not squatted.exists()
