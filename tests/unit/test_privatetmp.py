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
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

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
dirs_layout = sys.argv[5] == "dirs"  # Slurm 23.02+: the job's /tmp is .<job>/_tmp
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
store = NodeStateStore(root / "state")
store.ensure()
cfg = Config(hold_max_bytes=cap)
pt = PrivateTmp(cfg, "n1", store, HookLog("test", to_stderr=False), [base])
out = {"init": pt.init("77", user)}
export = pt.export_root(user_name) / "77"
out["export_sees"] = sorted(os.listdir(export))
out["job_tmp"] = store.read(user_name, user.uid).job_tmp
out["job_tmp_sees"] = sorted(os.listdir(out["job_tmp"]["77"]))
try:
    out["held"], out["exit"] = pt.exit("77", user, declared)
except PrivateTmpError as exc:
    out["held"], out["exit"] = False, str(exc)
out["job_dir_after"] = sorted(os.listdir(job_dir))
out["export_after"] = sorted(os.listdir(export)) if export.exists() else None
job_tmp_after = store.read(user_name, user.uid).job_tmp.get("77")
out["job_tmp_after"] = sorted(os.listdir(job_tmp_after)) if job_tmp_after else None
state = store.read(user_name, user.uid)
out["holds"] = {k: v.path for k, v in state.holds.items()}
hold = state.holds.get("77")
if hold is not None:
    out["hold_mode"] = oct(os.stat(Path(hold.path).parent).st_mode & 0o777)
    out["free"] = pt.free(user, state.job_tmp.get("77"), hold)
    out["hold_left"] = os.path.exists(hold.path)
    out["export_left"] = os.path.exists(export)
print(json.dumps(out))
"""


pytestmark = pytest.mark.root  # every test mounts in a private namespace


def _run(tmp_path: Path, cap: int, declared: int, layout: str = "flat") -> dict[str, object]:
    if os.geteuid() != 0:
        pytest.skip("mounts need root")
    root = Path(tempfile.mkdtemp(prefix="pt-", dir="/tmp"))  # users reach the state dir
    root.chmod(0o755)
    try:
        res = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", sys.executable, "-c",
             SCENARIO, str(root), "gtunit1", str(cap), str(declared), layout],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


@pytest.fixture
def user(unit_users: object) -> None:
    """The hooks' test users (gtunit1) exist."""


def test_a_declared_stage_out_holds_the_files_at_the_same_path(
    tmp_path: Path, user: None
) -> None:
    out = _run(tmp_path, cap=10**9, declared=1)
    assert out["export_sees"] == ["link", "result.dat", "sub"]
    assert str(out["job_tmp"]).count("jobtmp/gtunit1/77") == 1
    assert out["held"] is True, out["exit"]
    assert out["job_dir_after"] == []  # Slurm's teardown finds nothing to delete
    assert out["export_after"] == ["link", "result.dat", "sub"]  # same path, from the hold
    assert "(1024 bytes)" in str(out["exit"])
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
    assert out["job_dir_after"] == [".77"] and out["holds"] == {}


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
    assert "freed" in str(out["free"]) and out["hold_left"] is False
    assert out["export_left"] is False
