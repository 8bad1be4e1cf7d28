"""Fixtures of the tests that run the hooks (tests/hooks, tests/globus); support in hooksite.py."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hooksite import (
    HERE,
    UNIT_USERS,
    USER_DIR,
    Site,
    UnixUser,
    ensure_user,
    kill_drains,
    kill_user_processes,
)

ROOT_FIXTURES = frozenset({"site", "unit_users"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by what they run on: ``-m 'not lab'`` is the quick run, and a test that
    drives the hooks for real users (or the Slurm lab) says it needs root."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if "lab" in names:
            item.add_marker(pytest.mark.lab)
            item.add_marker(pytest.mark.root)
        elif names & ROOT_FIXTURES:
            item.add_marker(pytest.mark.root)


@pytest.fixture(scope="session")
def unit_users() -> dict[str, UnixUser]:
    if os.geteuid() != 0:
        pytest.fail("the hook tests run as root (as slurmd runs the hooks): use tests/run")
    users = {}
    for name in UNIT_USERS:
        pw = ensure_user(name)
        users[name] = UnixUser(name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))
    return users


@pytest.fixture
def site(unit_users: dict[str, UnixUser]) -> Iterator[Site]:
    root = Path(tempfile.mkdtemp(prefix="globus-tmp-test-", dir="/tmp"))
    root.chmod(0o755)
    shutil.copytree(HERE / "emulators", root / "emulators")
    for path in (root / "emulators").rglob("*"):
        path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
    for user in unit_users.values():
        kill_user_processes(user.uid)
        shutil.rmtree(user.user_dir, ignore_errors=True)
        Path(f"/tmp/globusconnect_{user.uid}.sock").unlink(missing_ok=True)
    s = Site(root=root, config=root / "globus-tmp.conf", users=unit_users)
    s.configure(
        gcp_path=s.gcp_wrapper("normal"),
        state_dir=str(root / "state" / "%n"),
        user_dir=USER_DIR,
        start_timeout=15,
        hook_timeout=40,
        stop_grace=3,
        linger_max=20,
        linger_poll_seconds=0.5,
        linger_unverified=1,
        idle_linger=0,  # a test of the linger sets it
    )
    try:
        yield s
    finally:
        for listener in s.steps.values():
            listener.close()
        kill_drains()
        for user in unit_users.values():
            kill_user_processes(user.uid)
            shutil.rmtree(user.user_dir, ignore_errors=True)
            Path(f"/tmp/globusconnect_{user.uid}.sock").unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)
