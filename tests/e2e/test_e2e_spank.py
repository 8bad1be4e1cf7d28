"""The SPANK plugin (spank/globus_tmp_spank.c) under Slurm's job_container/tmpfs.

With job_container/tmpfs, a job's private /tmp (``BasePath/<node>/<job>/.<job>``) is made
by its extern step after the Prolog and removed before the Epilog; the plugin runs a
helper in the extern step at exactly those moments. Here the helper is a recorder (test
equipment, below): each call leaves a JSON record of what it saw (argv, environment, uid,
mount namespace, whether the job's private /tmp existed), so the tests check the plugin's
contract, not globus-tmp's helper.

The module switches job_container on for its tests and off afterwards: the rest of the
session sees the lab as before.
"""

from __future__ import annotations

import json
import pwd
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from slurmlab import SlurmLab, _all_pids, _mnt_ns, _proc_alive, _proc_argv

USER = "gtalice"
TIMEOUT = 15
"""The plugin's timeout= for the module: far above what the recorder takes."""
HANG_TIMEOUT = 2

RECORDER = r"""#!/usr/bin/python3
# Written by tests/e2e/test_e2e_spank.py: the SPANK plugin's helper, as test equipment.
# Records one call (HELPER init|exit JOBID UID) to OUT/<job>.<node>.<what>.<pid>.json; with
# OUT/hang present, then hangs (with a child in its process group) until killed.
import json, os, subprocess, sys, time

OUT = __OUT__
BASE = __BASE__
if sys.argv[1:2] == ["sleeper"]:
    time.sleep(3600)
    sys.exit(0)
what, job = sys.argv[1], sys.argv[2]
node = os.environ.get("SLURMD_NODENAME", "")
rec = {
    "argv": sys.argv[1:],
    # As execve passed it (os.environ may have gained LC_CTYPE from Python's C-locale coercion).
    "env": dict(kv.split("=", 1) for kv in open("/proc/self/environ").read().split("\0") if kv),
    "uid": os.getuid(),
    "euid": os.geteuid(),
    "mnt": os.readlink("/proc/self/ns/mnt"),
    "pid": os.getpid(),
    "sid": os.getsid(0),
    "pgid": os.getpgid(0),
    "stdin": os.readlink("/proc/self/fd/0"),
    "stdout": os.readlink("/proc/self/fd/1"),
    "fds": sorted(int(f) for f in os.listdir("/proc/self/fd")),
    "container_exists": os.path.isdir(os.path.join(BASE, node, job, "." + job)),
    "time": time.time(),
}
path = os.path.join(OUT, "%s.%s.%s.%d.json" % (job, node, what, os.getpid()))
with open(path + ".tmp", "w") as f:
    json.dump(rec, f)
os.rename(path + ".tmp", path)
if os.path.exists(os.path.join(OUT, "hang")):
    subprocess.Popen([sys.executable, sys.argv[0], "sleeper"])
    time.sleep(3600)
"""


def _records_dir(lab: SlurmLab) -> Path:
    return lab.root / "spank-test" / "records"


def _recorder(lab: SlurmLab) -> Path:
    return lab.root / "spank-test" / "recorder"


def _records(lab: SlurmLab, job: str) -> list[dict[str, Any]]:
    out = []
    for p in sorted(_records_dir(lab).glob(f"{job}.*.json")):
        rec = json.loads(p.read_text())
        rec["file"] = p.name
        out.append(rec)
    return out


def _leftovers(lab: SlurmLab) -> list[tuple[int, tuple[str, ...]]]:
    """Live processes running the recorder (a helper or its sleeper child)."""
    path = str(_recorder(lab))
    return [(p, argv) for p in _all_pids() if path in (argv := _proc_argv(p)) and _proc_alive(p)]


@pytest.fixture(scope="module")
def spank_lab(lab: SlurmLab) -> Iterator[SlurmLab]:
    """The session lab with job_container/tmpfs and the plugin running the recorder."""
    base = lab.root / "spank-test"
    shutil.rmtree(base, ignore_errors=True)
    _records_dir(lab).mkdir(parents=True)
    base.chmod(0o755)
    rec = _recorder(lab)
    rec.write_text(
        RECORDER.replace("__OUT__", repr(str(_records_dir(lab)))).replace(
            "__BASE__", repr(str(lab.job_tmp_base))
        )
    )
    rec.chmod(0o755)
    lab.cancel_all_jobs()
    try:
        took = lab.set_job_container(True, helper=rec, timeout=TIMEOUT)
        print(f"job_container on in {took:.1f}s")
        yield lab
    finally:
        lab.cancel_all_jobs(check=False)
        took = lab.set_job_container(False)
        print(f"job_container off in {took:.1f}s")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture()
def recording(spank_lab: SlurmLab) -> Iterator[SlurmLab]:
    """Fresh records, the recorder not hanging, the module's timeout."""
    for p in _records_dir(spank_lab).iterdir():
        p.unlink()
    spank_lab.set_job_container(True, helper=_recorder(spank_lab), timeout=TIMEOUT)
    yield spank_lab
    (_records_dir(spank_lab) / "hang").unlink(missing_ok=True)


NS_MOUNT_FAILURE = "error: _create_ns: ns base mount failed"
"""Slurm's job_container/tmpfs failing to bind the job's new mount namespace (EINVAL), whatever
the plugin does: on this kernel when the node's and the job's namespaces are made on different
CPUs (the lab pins each node to one CPU with job_container on; see SlurmLab._node_pinning)."""


def _submit(lab: SlurmLab, script: str, *args: str, running: bool = False) -> str:
    """sbatch as USER; wait until it runs (``running``) or is over.

    A job cancelled by job_container/tmpfs's own namespace failure fails here, named."""
    job = lab.sbatch(USER, script, *args)
    try:
        if running:
            lab.wait_running(job)
        else:
            lab.wait_jobs([job])
    finally:
        logs = "".join(lab.slurmd_log(n).read_text(errors="replace") for n in lab.nodes)
        assert f"[{job}.extern] {NS_MOUNT_FAILURE}" not in logs, (
            f"job {job}: job_container/tmpfs could not make the job's namespace "
            f"({NS_MOUNT_FAILURE}): node pinning ineffective?"
        )
    return job


def _check_call(lab: SlurmLab, rec: dict[str, Any], what: str, job: str, node: str) -> None:
    uid = pwd.getpwnam(USER).pw_uid
    assert rec["argv"] == [what, job, str(uid)], rec
    assert rec["uid"] == 0 and rec["euid"] == 0, rec
    # A clean environment: exactly what the plugin passes, nothing of slurmstepd's.
    assert rec["env"] == {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "SLURMD_NODENAME": node,
        "SLURM_CONF": str(lab.slurm_conf),
        "GLOBUS_TMP_TIMEOUT": f"{TIMEOUT:g}",  # the helper budgets its steps within it
    }, rec
    # slurmd's mount namespace on that node (not the job's, not another node's).
    assert rec["mnt"] == _mnt_ns(lab.slurmd_pid(node)), rec
    # Its own session; stdin from /dev/null; no descriptor of slurmstepd's inherited
    # (0-2, and the one os.listdir had open).
    assert rec["sid"] == rec["pid"] == rec["pgid"], rec
    assert rec["stdin"] == "/dev/null" and rec["stdout"] == "/dev/null", rec
    assert len(rec["fds"]) <= 4, rec
    assert rec["container_exists"] is True, f"{what}: no {lab.job_tmp_dir(node, job)}: {rec}"


def test_one_node_job_private_tmp_and_helper_calls(recording: SlurmLab) -> None:
    lab = recording
    node = "n1"
    flag = lab.home(USER) / "spank-go"
    flag.unlink(missing_ok=True)
    script = f"""#!/bin/bash
echo "job $SLURM_JOB_ID" > /tmp/spank-probe
stat -c 'tmp %U %a' /tmp
for i in $(seq 300); do [ -e {flag} ] && break; sleep 0.1; done
"""
    job = _submit(lab, script, "-w", node, running=True)
    private = lab.job_tmp_dir(node, job)
    deadline = time.monotonic() + 30
    while not (private / "spank-probe").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        # The job's /tmp is its private dir under BasePath, not the node's /tmp.
        assert (private / "spank-probe").read_text() == f"job {job}\n"
        node_tmp = lab.node_exec(node, ["ls", "-A", "/tmp"], check=True).stdout.split()
        assert "spank-probe" not in node_tmp, node_tmp
        st = private.stat()
        assert st.st_uid == pwd.getpwnam(USER).pw_uid and st.st_mode & 0o777 == 0o700
        running = _records(lab, job)
        assert [r["argv"][0] for r in running] == ["init"], running
    finally:
        flag.write_text("")
        flag.chmod(0o644)
    infos = lab.wait_jobs([job])
    info = infos[job]
    assert info is not None and info.state == "COMPLETED" and info.exit_code == "0:0", info
    assert f"tmp {USER} 700" in lab.job_output(job)
    flag.unlink(missing_ok=True)

    recs = _records(lab, job)
    assert sorted(r["argv"][0] for r in recs) == ["exit", "init"], recs
    init, exit_ = sorted(recs, key=lambda r: r["time"])
    assert init["argv"][0] == "init"
    _check_call(lab, init, "init", job, node)
    _check_call(lab, exit_, "exit", job, node)
    # exit ran while the private /tmp still held the job's file, and it is gone now.
    assert not private.parent.exists(), f"{private.parent} left behind"


def test_two_node_job_calls_once_per_node(recording: SlurmLab) -> None:
    lab = recording
    nodes = ["n1", "n2"]
    job = _submit(lab, "#!/bin/bash\nsrun hostname\n", "-N2", "-w", ",".join(nodes))
    info = lab.wait_jobs([job])[job]
    assert info is not None and info.state == "COMPLETED" and info.exit_code == "0:0", info
    recs = _records(lab, job)
    calls = sorted((r["env"].get("SLURMD_NODENAME"), r["argv"][0]) for r in recs)
    # Once per node and hook: not from the batch step, srun's step or sbatch/srun's own
    # loading of plugstack.conf (local and allocator contexts).
    assert calls == [(n, w) for n in nodes for w in ("exit", "init")], recs
    for rec in recs:
        _check_call(lab, rec, rec["argv"][0], job, rec["env"]["SLURMD_NODENAME"])
    for node in nodes:
        assert not (lab.job_tmp_base / node / job).exists()


def test_hanging_helper_is_killed_at_timeout(recording: SlurmLab) -> None:
    lab = recording
    node = "n2"
    lab.set_job_container(True, helper=_recorder(lab), timeout=HANG_TIMEOUT)
    (_records_dir(lab) / "hang").write_text("")
    t0 = time.monotonic()
    job = _submit(lab, "#!/bin/bash\necho ran\n", "-w", node)
    info = lab.wait_jobs([job], timeout=60)[job]
    took = time.monotonic() - t0
    assert info is not None and info.state == "COMPLETED" and info.exit_code == "0:0", info
    assert "ran" in lab.job_output(job)
    recs = _records(lab, job)
    assert sorted(r["argv"][0] for r in recs) == ["exit", "init"], recs
    init, exit_ = sorted(recs, key=lambda r: r["time"])
    # The job started only once init was given up on (the helper sleeps an hour).
    assert exit_["time"] - init["time"] >= HANG_TIMEOUT, recs
    assert 2 * HANG_TIMEOUT <= took < 2 * HANG_TIMEOUT + 60, took
    # The helper and the child in its process group are gone (the node's init reaps).
    deadline = time.monotonic() + 10
    while _leftovers(lab) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _leftovers(lab), _leftovers(lab)
    log = lab.slurmd_log(node).read_text(errors="replace")
    for what in ("init", "exit"):
        line = (
            f"globus_tmp: {what} job {job}: {_recorder(lab)} killed after {HANG_TIMEOUT}s timeout"
        )
        assert line in log, f"no {line!r} in {lab.slurmd_log(node)}"
