"""The export root's ACL: the kernel's xattr format, read back, idempotent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from globus_tmp.posixacl import allowed_uids, only_root_and, restrict_to


def test_acl_layout_is_the_kernels() -> None:
    data = only_root_and(1234)
    assert data[:4] == b"\x02\x00\x00\x00" and len(data) == 4 + 5 * 8
    assert b"\x02\x00\x05\x00\xd2\x04\x00\x00" in data  # user:1234:r-x


@pytest.mark.root
def test_restrict_to_one_user(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("root sets ACLs on root's directories")
    d = tmp_path / "root-only"
    d.mkdir(mode=0o755)
    restrict_to(str(d), 1234)
    restrict_to(str(d), 1234)  # again: a no-op
    assert allowed_uids(str(d)) == {1234}
    assert d.stat().st_mode & 0o007 == 0  # nothing for others
    assert allowed_uids(str(tmp_path)) == set()
