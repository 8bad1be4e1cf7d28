"""The fault matrix (docs/RELIABILITY.md), hook-level rows: real hooks as root for real
users against the GCP emulator, with hooks killed at named failpoints, forged witnesses,
squatted sockets, hostile files, and ``globus-tmp-admin reconcile`` as the repair.

Each test names the row it proves; the columns it checks are asserted by
:func:`assert_consistent` (no orphan GCP, no lease without an instance, no lost job id).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable

import psutil
import pytest
from hooksite import Site, all_user_processes, drain_processes, gcp_processes
from polling import wait_for


def assert_consistent(site: Site, user: str = "gtunit1", node: str = "n1") -> None:
    """What must hold after a repair: every GCP of the user is the recorded instance,
    and the node holds no lease but the recorded instance's."""
    u = site.users[user]
    state = site.state(user, node)
    instance = state.get("instance")
    running = {p.pid for p in gcp_processes(u.uid)}
    recorded = {instance["pid"]} if isinstance(instance, dict) else set()
    assert running <= recorded, f"orphan GCP: running {running}, recorded {recorded}"
    held = {n for n, lease in u.registry().items() if lease["node"] == node}
    entry = {instance["endpoint_name"]} if isinstance(instance, dict) else set()
    assert held <= entry, f"leases {held} held without an instance ({entry})"


# -- hook killed at each step (failpoints) ---------------------------------------------

PROLOG_POINTS = ["prolog.after_add", "prolog.after_spawn", "prolog.before_record"]
EPILOG_POINTS = [
    "epilog.after_remove",
    "epilog.after_stopping",
    "epilog.before_release",
    "epilog.after_drain",
]


@pytest.mark.parametrize("point", PROLOG_POINTS)
def test_prolog_killed_at_each_step_leaves_nothing_after_one_reconcile(
    site: Site, point: str
) -> None:
    user = site.users["gtunit1"]
    user.make_pool(2)
    res = site.hook("prolog", "1", "gtunit1", failpoint=f"{point}=kill")
    assert res.returncode == -signal.SIGKILL
    assert "1" in site.state("gtunit1")["jobs"], "the job id is recorded before anything else"
    rec = site.admin("reconcile")
    assert rec.returncode == 0, rec.stderr
    assert_consistent(site)
    assert "1" in site.state("gtunit1")["jobs"], "a repair never loses a live job id"
    if point != "prolog.after_add":  # GCP was spawned: taken over for the waiting job
        assert site.endpoint("gtunit1").returncode == 0, "job 1 has its endpoint"
        assert "took over the GCP" in rec.stdout, rec.stdout
    # the job's node still works: the next prolog starts or joins one GCP
    assert site.prolog("2").returncode == 0
    assert len(gcp_processes(user.uid)) == 1
    assert_consistent(site)
    site.epilog("1")
    site.epilog("2")
    site.wait_gcp_stopped()
    assert user.registry() == {}


@pytest.mark.parametrize("point", EPILOG_POINTS)
def test_epilog_killed_at_each_step_leaves_nothing_after_one_reconcile(
    site: Site, point: str
) -> None:
    user = site.users["gtunit1"]
    user.make_pool(1)
    assert "started GCP" in site.prolog("1").stderr
    res = site.hook("epilog", "1", "gtunit1", failpoint=f"{point}=kill")
    # without the Transfer API the stop happens in the drain: the point kills the drain
    assert res.returncode in (0, -signal.SIGKILL)
    wait_for(lambda: not drain_processes(), what="the drain to end or be killed")
    if point == "epilog.after_stopping":
        assert gcp_processes(user.uid), "killed between 'stopping' and the stop"
    if point == "epilog.before_release":
        assert "ep1" in user.registry(), "killed between the stop and the lease release"
    rec = site.admin("reconcile")
    assert rec.returncode == 0, rec.stderr
    site.wait_gcp_stopped()  # an unverified idle GCP is drained for linger_unverified
    assert all_user_processes(user.uid) == []
    assert user.registry() == {}
    state = site.state("gtunit1")
    assert state["jobs"] == {} and state["instance"] is None and state["phase"] == "idle"


def test_the_next_hook_repairs_its_own_user_without_reconcile(site: Site) -> None:
    """Row "hook killed": a Prolog killed after spawning GCP; the user's next job on the
    node finds the leftover and cleans it before starting afresh."""
    user = site.users["gtunit1"]
    user.make_pool(1)
    site.hook("prolog", "1", "gtunit1", failpoint="prolog.after_spawn=kill")
    (spawned,) = gcp_processes(user.uid)
    res = site.prolog("2")
    assert "interrupted start: took over the GCP" in res.stderr, res.stderr
    assert [p.pid for p in gcp_processes(user.uid)] == [spawned.pid]
    assert sorted(site.state("gtunit1")["jobs"]) == ["1", "2"]
    assert_consistent(site)
    # with no job left, the spawned GCP is stopped instead
    site.epilog("1")
    site.epilog("2")
    site.wait_gcp_stopped()
    site.hook("prolog", "3", "gtunit1", failpoint="prolog.after_spawn=kill")
    site.hook("epilog", "3", "gtunit1")
    site.wait_gcp_stopped()
    assert user.registry() == {}


def test_start_killed_at_its_bound_leaves_no_gcp(site: Site) -> None:
    """Row "GCP never connecting", with ``start_wait = "connected"`` (the Prolog waits
    for the connect): the start step is killed at its bound while GCP runs; root learnt
    the pid from the step's progress and stops it."""
    user = site.users["gtunit1"]
    user.make_pool(1)
    site.configure(
        gcp_path=site.gcp_wrapper("never", GCP_EMULATOR_MODE="never-connect"),
        start_timeout=2,
        start_wait="connected",
    )
    res = site.prolog("1")
    assert res.returncode == 0 and "did not connect" in res.stderr, res.stderr
    assert gcp_processes(user.uid) == []
    assert user.registry() == {}
    assert_consistent(site)


# -- epilog skipped, doubled, out of order, without prolog -------------------------------


def test_skipped_epilog_is_reconciled_with_contain(site: Site) -> None:
    """Row "epilog skipped": with PrologFlags=Contain a job without a step socket here is
    gone; reconcile drops it and stops the GCP nobody needs."""
    user = site.users["gtunit1"]
    user.make_pool(1)
    site.slurm_conf("Alloc,Contain")
    site.configure(job_grace=1)
    site.step("1")
    site.prolog("1")
    time.sleep(1.2)
    assert site.admin("reconcile").returncode == 0
    assert list(site.state("gtunit1")["jobs"]) == ["1"], "a job with a step here is alive"
    site.step("1", live=False)  # the job ended; its epilog never ran
    rec = site.admin("reconcile")
    assert "dropped gone job(s) 1" in rec.stdout, rec.stdout
    site.wait_gcp_stopped()
    assert user.registry() == {}


def test_doubled_epilog_starts_one_drain(site: Site) -> None:
    """Row "epilog doubled": two epilogs of one job at once under a transfer: one drain."""
    user = site.users["gtunit1"]
    user.make_pool(1)
    site.prolog("1")
    site.emulate_transfer(4)
    procs = [site.hook("epilog", "1", "gtunit1", wait=False) for _ in range(2)]
    for proc in procs:
        proc.communicate(timeout=60)
        assert proc.returncode == 0
    assert len(drain_processes()) == 1
    assert site.hook_log().count("keeps GCP up for ") == 1, site.hook_log()
    site.wait_gcp_stopped(timeout=20)
    assert user.registry() == {}


# -- job liveness: multi-node jobs, forged slurmstepd ------------------------------------


def test_multi_node_job_between_steps_keeps_its_gcp_without_contain(site: Site) -> None:
    """Issue item 1: with only PrologFlags=Alloc, a node of a multi-node job has no step
    between sruns; another job's epilog must not take that as "gone"."""
    user = site.users["gtunit1"]
    user.make_pool(1)
    site.slurm_conf("Alloc")
    site.configure(job_grace=1)
    site.prolog("1")  # the multi-node job: no step on this node now
    site.prolog("2")
    time.sleep(1.2)
    res = site.epilog("2")
    assert "1 job(s) remain, GCP stays" in res.stderr, res.stderr
    assert len(gcp_processes(user.uid)) == 1
    assert list(site.state("gtunit1")["jobs"]) == ["1"]


def test_forged_slurmstepd_does_not_keep_a_job_alive(site: Site) -> None:
    """Issue item 2: another user runs a process titled like slurmstepd of job 1; job 1
    (ended, epilog skipped) is still dropped, because only slurmd's root-owned step
    sockets count."""
    victim = site.users["gtunit1"]
    victim.make_pool(1)
    site.slurm_conf("Alloc,Contain")
    site.configure(job_grace=1)
    fake_dir = site.root / "fake"
    fake_dir.mkdir(mode=0o755)
    fake = fake_dir / "slurmstepd"
    shutil.copy("/bin/sleep", fake)
    fake.chmod(0o755)
    title = f'exec -a "slurmstepd: [1.0]" {fake} 60'
    forger = subprocess.Popen(["runuser", "-u", "gtunit2", "--", "/bin/bash", "-c", title])
    try:
        wait_for(
            lambda: any(
                p.name() == "slurmstepd" for p in all_user_processes(site.users["gtunit2"].uid)
            ),
            what="the forged slurmstepd",
        )
        site.prolog("1")
        site.prolog("2")
        site.step("2")
        time.sleep(1.2)
        site.step("2", live=False)
        res = site.epilog("2")
        assert "dropped gone job(s) 1" in res.stderr, res.stderr
        site.wait_gcp_stopped()
    finally:
        forger.kill()
        forger.wait()


# -- GCP faults ------------------------------------------------------------------------


def test_gcp_ignoring_stop_is_killed_with_its_children(site: Site) -> None:
    user = site.users["gtunit1"]
    user.make_pool(1)
    site.configure(gcp_path=site.gcp_wrapper("deaf", GCP_EMULATOR_MODE="ignore-stop"))
    site.prolog("1")
    site.epilog("1")
    site.wait_gcp_stopped(timeout=20)
    assert "killed after 3 s grace" in site.hook_log(), site.hook_log()
    assert all_user_processes(user.uid) == []
    assert user.registry() == {}


def test_children_outliving_a_killed_gcp_are_killed(site: Site) -> None:
    """Issue item 4: kill_tree used to return at once when the leader was gone."""
    user = site.users["gtunit1"]
    user.make_pool(1)
    site.configure(gcp_path=site.gcp_wrapper("kids", GCP_EMULATOR_MODE="leave-children"))
    site.prolog("1")
    site.wait_connected()  # the emulator forks its helpers as it connects
    (leader,) = gcp_processes(user.uid)
    children = leader.children(recursive=True)
    assert children, "the emulated GCP runs helper children"
    leader.send_signal(signal.SIGKILL)
    wait_for(lambda: not gcp_processes(user.uid), what="the leader to die")
    assert any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    rec = site.admin("reconcile")
    assert "had exited (killed" in rec.stdout, rec.stdout
    wait_for(lambda: not all_user_processes(user.uid), what="the orphaned children to die")
    assert_consistent(site)


def test_killed_drain_is_resumed_by_reconcile(site: Site) -> None:
    """Row "drain killed": a drain killed mid-transfer; reconcile resumes the wait and
    GCP stops only once the transfer is over."""
    user = site.users["gtunit1"]
    user.make_pool(1)
    site.prolog("1")
    site.emulate_transfer(5)
    res = site.epilog("1")
    assert "drain pid" in res.stderr
    (drain,) = drain_processes()
    drain.send_signal(signal.SIGKILL)
    wait_for(lambda: not drain_processes(), what="the drain to die")
    start = time.monotonic()
    rec = site.admin("reconcile")
    assert "its drain had died" in rec.stdout and "drain pid" in rec.stdout, rec.stdout
    assert len(gcp_processes(user.uid)) == 1, "GCP stays while the transfer is active"
    site.wait_gcp_stopped(timeout=20)
    assert time.monotonic() - start >= 2
    assert user.registry() == {}


def test_unrecorded_gcp_from_the_pool_is_stopped_by_reconcile(site: Site) -> None:
    """Row "GCP orphaned": a GCP running from the pool that node state does not know
    (state lost with the hook that started it) is stopped and its lease released."""
    user = site.users["gtunit1"]
    user.make_pool(1)
    site.prolog("1")
    site.epilog("1")
    site.wait_gcp_stopped()
    gcp = str(site.settings["gcp_path"])
    ep1 = str(user.user_dir / "endpoints" / "ep1")
    launcher = subprocess.Popen(
        ["runuser", "-u", "gtunit1", "--", "setsid", "-f", gcp, "-dir", ep1, "-start"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    launcher.wait()
    wait_for(lambda: gcp_processes(user.uid), what="the unrecorded GCP")
    rec = site.admin("reconcile")
    assert "stopped unrecorded GCP" in rec.stdout, rec.stdout + rec.stderr
    wait_for(lambda: not gcp_processes(user.uid), what="the orphan to stop")
    assert_consistent(site)


# -- hostile neighbours ----------------------------------------------------------------


def _squat(site: Site, victim_uid: int) -> subprocess.Popen[bytes]:
    """Another user binds the victim's GCP control socket path and answers on it."""
    path = f"/tmp/globusconnect_{victim_uid}.sock"
    code = (
        "import os, socket\n"
        f"s = socket.socket(socket.AF_UNIX); s.bind({path!r}); os.chmod({path!r}, 0o777)\n"
        "s.listen(8)\n"
        "while True:\n"
        "    c, _ = s.accept(); c.sendall(b'Globus Online:   connected\\n'); c.close()\n"
    )
    proc = subprocess.Popen(["runuser", "-u", "gtunit2", "--", "/usr/bin/python3", "-c", code])
    wait_for(lambda: os.path.exists(path), what="the squatter's socket")
    return proc


def test_squatted_control_socket_is_cleared_and_gcp_starts(site: Site) -> None:
    """Issue item 3: another user binds /tmp/globusconnect_<uid>.sock for the victim."""
    victim = site.users["gtunit1"]
    ids = victim.make_pool(1)
    site.configure(on_failure="fail")
    squatter = _squat(site, victim.uid)
    try:
        res = site.prolog("1")
        assert res.returncode == 0, res.stderr
        assert "squatted GCP's control socket" in res.stderr and "started GCP" in res.stderr
        out = site.endpoint("gtunit1")
        assert out.stdout.strip() == ids[0]
        st = os.lstat(f"/tmp/globusconnect_{victim.uid}.sock")
        assert st.st_uid == victim.uid
    finally:
        squatter.kill()
        squatter.wait()


def test_status_from_a_squatter_is_not_believed(site: Site) -> None:
    victim = site.users["gtunit1"]
    victim.make_pool(1)
    squatter = _squat(site, victim.uid)
    try:
        gcp = str(site.settings["gcp_path"])
        probe = (
            "import sys; sys.path[:0] = []\n"
            "from globus_tmp.gcp import GcpCommand\n"
            "from globus_tmp.errors import ControlSocketSquatted\n"
            "try:\n"
            f"    GcpCommand({gcp!r}).status(timeout=3)\n"
            "except ControlSocketSquatted as exc:\n"
            "    print('refused:', exc)\n"
        )
        import sys

        res = site.as_user("gtunit1", [sys.executable, "-c", probe])
        assert "refused:" in res.stdout and "held by uid" in res.stdout, res.stdout + res.stderr
    finally:
        squatter.kill()
        squatter.wait()


def _with_peak_rss(
    run: Callable[[], subprocess.CompletedProcess[str]],
) -> tuple[subprocess.CompletedProcess[str], int]:
    """``run()``'s result and the peak RSS (KiB) of the processes it started, measured in
    a forked child: this process's own RUSAGE_CHILDREN keeps the peak of every earlier
    child of the test run (the Slurm lab, globus-cli), which says nothing of this one."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.close(read_end)
            res = run()
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            doc = {"args": res.args, "rc": res.returncode, "out": res.stdout,
                   "err": res.stderr, "peak": peak}  # fmt: skip
            with os.fdopen(write_end, "w") as fh:
                json.dump(doc, fh)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as fh:
        doc = json.load(fh)
    os.waitpid(pid, 0)
    res = subprocess.CompletedProcess(doc["args"], doc["rc"], doc["out"], doc["err"])
    return res, int(doc["peak"])


def test_hostile_pool_files_cannot_stall_or_bloat_the_prolog(site: Site) -> None:
    """Issue item 6 and rows "FIFO / huge / symlinked pool files": a FIFO registry, a
    512 MiB sparse client-id.txt, a symlinked entry; the prolog stays small and quick."""
    user = site.users["gtunit1"]
    ids = user.make_pool(2)
    huge = user.user_dir / "endpoints" / "ep1" / "lta" / "client-id.txt"
    with open(huge, "r+b") as fh:
        fh.truncate(512 << 20)
    os.mkfifo(user.user_dir / "registry.json")
    os.chown(user.user_dir / "registry.json", user.uid, user.gid)
    start = time.monotonic()
    res, peak = _with_peak_rss(lambda: site.prolog("1"))
    took = time.monotonic() - start
    assert res.returncode == 0 and took < 20, (took, res.stderr)
    assert peak < 200 * 1024, f"the prolog or one of its children peaked at {peak} KiB"
    assert "registry" in res.stderr and "unreadable" in res.stderr, res.stderr
    assert site.endpoint("gtunit1").stdout.strip() == ids[1], "the bloated entry is skipped"


def test_control_characters_cannot_forge_log_lines(site: Site) -> None:
    """Issue item 7: an entry named with CR, LF and ANSI escapes."""
    user = site.users["gtunit1"]
    user.make_pool(1)
    bad = "ep\rFAKE prolog: started\x1b[2K\nforged"
    os.rename(user.user_dir / "endpoints" / "ep1", user.user_dir / "endpoints" / bad)
    res = site.prolog("1")
    assert "started GCP" in res.stderr
    log = site.hook_log()
    assert "\r" not in log and "\x1b" not in log
    assert "\\x0dFAKE" in log and "\\x0aforged" in log
    assert all(line[:4].isdigit() for line in log.splitlines()), log


def test_a_hostile_step_cannot_make_root_unpickle(site: Site) -> None:
    """Issue item 8: a step as the user writes a pickle (that would run code) into every
    pipe it holds; root accepts only JSON and refuses it."""
    import pickle
    import sys

    marker = site.root / "pwned"
    code = f"open({str(marker)!r}, 'w').write('x')"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (exec, (code,))

    payload = pickle.dumps((True, Evil())) + b"\n"
    probe = (
        "import json, os, stat, sys\n"
        "from globus_tmp.job import UserIdentity\n"
        "from globus_tmp.privileges import run_as\n"
        f"payload = {payload!r}\n"
        "def hostile():\n"
        "    for fd in [int(f) for f in os.listdir('/proc/self/fd') if int(f) > 2]:\n"
        "        try:\n"
        "            if stat.S_ISFIFO(os.fstat(fd).st_mode): os.write(fd, payload)\n"
        "        except OSError: pass\n"
        "    os._exit(0)\n"
        "try:\n"
        "    run_as(UserIdentity.from_name('gtunit1'), 10, hostile)\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "PrivilegeError" in res.stdout and "unreadable answer" in res.stdout, res
    assert not marker.exists()


# -- node state files ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["truncated", "fifo", "huge", "symlink"])
def test_bad_state_files_are_recovered(site: Site, kind: str) -> None:
    """Rows "corrupt, truncated, FIFO, symlinked, huge state files" (root-owned dir: only
    a bug or a crash could leave them, but a hook must still come through)."""
    user = site.users["gtunit1"]
    user.make_pool(1)
    site.prolog("1")
    path = site.state_dir() / "users" / "gtunit1.json"
    if kind == "truncated":
        path.write_text(path.read_text()[:30])
    else:
        path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "huge":
            with open(path, "wb") as fh:
                fh.truncate(64 << 20)
        else:
            path.symlink_to("/etc/passwd")
    start = time.monotonic()
    res = site.prolog("2")
    assert res.returncode == 0 and time.monotonic() - start < 20, res.stderr
    assert "unreadable" in res.stderr, res.stderr
    assert len(gcp_processes(user.uid)) == 1, "the running GCP is taken over, not doubled"
    assert json.loads(path.read_text())["jobs"].keys() >= {"2"}
    site.epilog("1")
    site.epilog("2")
    site.wait_gcp_stopped()
    assert user.registry() == {}


# -- many jobs of many users -------------------------------------------------------------


def test_reconcile_is_idempotent_and_concurrent_with_hooks(site: Site) -> None:
    """Reconcile runs at any time: during a storm of hooks it changes nothing that is
    right, and run twice it repairs nothing the second time."""
    for name in ("gtunit1", "gtunit2"):
        site.users[name].make_pool(1)
    stop = threading.Event()
    outputs: list[str] = []

    def reconcile_loop() -> None:
        while not stop.is_set():
            outputs.append(site.admin("reconcile").stdout)

    loop = threading.Thread(target=reconcile_loop)
    loop.start()
    try:
        procs = [
            site.hook("prolog", str(100 + i), name, wait=False)
            for i in range(6)
            for name in ("gtunit1", "gtunit2")
        ]
        for proc in procs:
            proc.communicate(timeout=120)
            assert proc.returncode == 0
    finally:
        stop.set()
        loop.join()
    for name in ("gtunit1", "gtunit2"):
        assert len(site.state(name)["jobs"]) == 6
        assert len(gcp_processes(site.users[name].uid)) == 1
        assert_consistent(site, name)
    assert site.admin("reconcile").stdout == "reconciled 2 user(s), 0 repair(s)\n"
    assert not any("stopped" in out for out in outputs), outputs


def test_healthcheck_chains_the_sites_check_and_reconciles(site: Site) -> None:
    """HealthCheckProgram gets only SLURMD_NODENAME: the wrapper keeps the site's verdict
    and starts a reconcile that repairs what a killed epilog left."""
    user = site.users["gtunit1"]
    user.make_pool(1)
    nhc = site.root / "nhc"
    nhc.write_text('#!/bin/sh\necho checked >> "$0.log"\nexit 3\n')
    nhc.chmod(0o755)
    site.configure(chain_health_check=str(nhc))
    site.prolog("1")
    site.hook("epilog", "1", "gtunit1", failpoint="epilog.after_remove=kill")
    assert len(gcp_processes(user.uid)) == 1, "nobody stops GCP after a killed epilog"
    from hooksite import BIN

    res = subprocess.run(
        [str(BIN / "globus-tmp-healthcheck")],
        env={"SLURMD_NODENAME": "n1", "GLOBUS_TMP_CONFIG": str(site.config)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 3, "the site's verdict is kept"
    assert (site.root / "nhc.log").read_text() == "checked\n"
    site.wait_gcp_stopped(timeout=30)
    assert user.registry() == {}
    assert "reconcile node=n1" in site.hook_log()


@pytest.mark.parametrize("how", ["hang", "stall"])
def test_a_hung_drain_still_stops_gcp(site: Site, how: str) -> None:
    """Row "drain hung past linger_max": a drain stuck in a call is ended by its own
    SIGALRM backstop (hang); one that cannot be (stall) is killed by reconcile."""
    user = site.users["gtunit1"]
    user.make_pool(1)
    site.configure(linger_max=2)
    site.prolog("1")
    site.emulate_transfer(120)
    site.hook("epilog", "1", "gtunit1", failpoint=f"drain.poll={how}")
    (drain,) = drain_processes()
    if how == "hang":
        site.wait_gcp_stopped(timeout=40)
        assert "drain failed (HookTimeout" in site.hook_log(), site.hook_log()
    else:
        time.sleep(3 + 3 + 10 + 30 + 1)  # linger_max + stop_grace + backstop + overrun
        assert drain.is_running() and len(gcp_processes(user.uid)) == 1
        rec = site.admin("reconcile")
        assert "hung past linger_max, killed" in rec.stdout, rec.stdout
        site.wait_gcp_stopped()
    assert user.registry() == {}


def test_a_draining_entry_is_not_started_on_another_node(site: Site) -> None:
    """Issue 8 item 1, hook level: pool of one, a drain on n1, a job on n2: n2 must not
    start a second GCP from the same config dir; its job is told why in one line."""
    user = site.users["gtunit1"]
    user.make_pool(1)
    site.prolog("1", node="n1")
    site.emulate_transfer(6)
    assert "drain pid" in site.epilog("1", node="n1").stderr
    wait_for(  # the drain's first step, not the Epilog, marks the lease (as the user)
        lambda: user.registry()["ep1"]["phase"] == "draining", what="the lease marked draining"
    )
    sockets = site.root / "n2-tmp"  # n2 is another host: its own GCP control sockets
    sockets.mkdir(mode=0o1777)
    sockets.chmod(0o1777)
    site.configure(gcp_path=site.gcp_wrapper("n2", GCP_EMULATOR_SOCKET_DIR=str(sockets)))
    res = site.prolog("2", node="n2")
    assert "endpoint pool exhausted" in res.stderr and "draining until" in res.stderr
    assert len(gcp_processes(user.uid)) == 1, "one config dir, one GCP"
    lookup = site.endpoint("gtunit1", node="n2")
    assert lookup.returncode == 1 and len(lookup.stderr.strip().splitlines()) == 1
    site.wait_gcp_stopped(timeout=30)
    assert user.registry() == {}
    assert "started GCP" in site.prolog("3", node="n2").stderr, "free once the drain is over"
