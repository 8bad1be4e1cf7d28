"""The hooks as slurmd runs them: real processes, as root, for real users, against the
GCP emulator. Each test names the guarantee of the core issue it proves."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
from hooksite import (
    BIN,
    USER_DIR,
    Site,
    UnixUser,
    all_user_processes,
    blocks,
    ensure_user,
    gcp_processes,
    hung_file_system,
    kill_user_processes,
)
from polling import wait_for


def _endpoint_id(site: Site, user: str = "gtunit1", node: str = "n1") -> str:
    out = site.endpoint(user, node=node)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


# 1. one GCP per (node, user), shared by the user's jobs ------------------------------


def test_jobs_of_one_user_share_one_gcp(site: Site) -> None:
    user = site.users["gtunit1"]
    ids = user.make_pool(1)
    for job in ("11", "12", "13"):
        res = site.prolog(job)
        assert res.returncode == 0, res.stderr
    procs = gcp_processes(user.uid)
    assert len(procs) == 1
    assert site.hook_log().count("started GCP") == 1
    assert site.hook_log().count("joined GCP") == 2
    assert _endpoint_id(site) == ids[0]
    task = site.taskprolog()
    assert task.returncode == 0
    assert f"export GLOBUS_TMP_ENDPOINT_ID={ids[0]}" in task.stdout.splitlines()
    assert "export GLOBUS_TMP_PATHS=/tmp" in task.stdout.splitlines()
    state = site.state("gtunit1")
    assert sorted(state["jobs"]) == ["11", "12", "13"]
    config_paths = user.user_dir / "endpoints" / "ep1" / "lta" / "config-paths"
    assert config_paths.read_text() == "/tmp,0,1\n"


def test_json_lookup_describes_the_endpoint(site: Site) -> None:
    import json

    ids = site.users["gtunit1"].make_pool(1)
    site.prolog("21")
    site.prolog("22")
    out = site.endpoint("gtunit1", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["endpoint_id"] == ids[0]
    assert info["node"] == "n1" and info["user"] == "gtunit1"
    assert info["paths"] == ["/tmp"] and info["state"] == "running"
    assert info["jobs"] == ["21", "22"] and info["since"] > 0


def test_two_users_on_one_node_get_two_instances(site: Site) -> None:
    a, b = site.users["gtunit1"], site.users["gtunit2"]
    id_a, id_b = a.make_pool(1)[0], b.make_pool(1)[0]
    assert site.prolog("31", "gtunit1").returncode == 0
    assert site.prolog("32", "gtunit2").returncode == 0
    assert len(gcp_processes(a.uid)) == 1 and len(gcp_processes(b.uid)) == 1
    assert _endpoint_id(site, "gtunit1") == id_a
    assert _endpoint_id(site, "gtunit2") == id_b


# 2. the last job stops GCP and frees the lease ----------------------------------------


def test_last_epilog_stops_gcp_and_frees_the_lease(site: Site) -> None:
    user = site.users["gtunit1"]
    user.make_pool(1)
    site.prolog("41")
    site.prolog("42")
    assert user.registry()["ep1"]["node"] == "n1"
    site.epilog("41")
    assert len(gcp_processes(user.uid)) == 1, "GCP must stay while a job remains"
    res = site.epilog("42")
    assert "no Transfer API" in res.stderr and "drain pid" in res.stderr, res.stderr
    site.wait_gcp_stopped()
    assert all_user_processes(user.uid) == [], "no process of GCP (or its children) is left"
    assert user.registry() == {}
    # the lease is free for another node
    assert site.prolog("43", node="n2").returncode == 0
    assert user.registry()["ep1"]["node"] == "n2"
    res = site.endpoint("gtunit1", node="n1")
    assert res.returncode == 1 and "none runs" in res.stderr


# 3. idempotence ----------------------------------------------------------------------


def test_repeated_and_missing_hook_calls_leave_state_right(site: Site) -> None:
    user = site.users["gtunit1"]
    user.make_pool(1)
    assert site.epilog("50").returncode == 0  # epilog without a prolog
    site.prolog("51")
    site.prolog("51")  # prolog twice for one job
    site.prolog("52")
    assert sorted(site.state("gtunit1")["jobs"]) == ["51", "52"]
    assert site.hook_log().count("started GCP") == 1
    site.epilog("52")
    site.epilog("52")  # epilog twice
    assert sorted(site.state("gtunit1")["jobs"]) == ["51"]
    assert len(gcp_processes(user.uid)) == 1
    site.epilog("51")
    site.epilog("51")
    assert site.state("gtunit1")["jobs"] == {}
    site.wait_gcp_stopped()


def test_epilogs_in_any_order(site: Site) -> None:
    user = site.users["gtunit1"]
    user.make_pool(1)
    jobs = [str(j) for j in range(60, 66)]
    for job in jobs:
        site.prolog(job)
    random.shuffle(jobs)
    for i, job in enumerate(jobs):
        site.epilog(job)
        assert len(site.state("gtunit1")["jobs"]) == len(jobs) - i - 1
        assert len(gcp_processes(user.uid)) == 1, "GCP stays while a job (or its linger) is left"
    site.wait_gcp_stopped()


# 4. failing open within bounded time ----------------------------------------------------


def _assert_fails_open(
    site: Site, cause: str, job: str = "70", bound: float = 25.0, other_gcps: int = 0
) -> None:
    start = time.monotonic()
    res = site.prolog(job)
    took = time.monotonic() - start
    assert res.returncode == 0, res.stderr
    assert took < bound, f"prolog took {took:.1f} s: {res.stderr}"
    assert cause in res.stderr, res.stderr
    assert [line for line in site.hook_log().splitlines() if cause in line], site.hook_log()
    lookup = site.endpoint("gtunit1")
    assert lookup.returncode == 1
    assert cause in lookup.stderr, lookup.stderr
    assert len(lookup.stderr.strip().splitlines()) == 1
    task = site.taskprolog()
    assert task.returncode == 0 and task.stdout.startswith("print globus-tmp:"), task.stdout
    assert len(gcp_processes(site.users["gtunit1"].uid)) == other_gcps


def test_missing_gcp_fails_open(site: Site) -> None:
    site.users["gtunit1"].make_pool(1)
    site.configure(gcp_path=str(site.root / "no-such-gcp"))
    _assert_fails_open(site, "is missing or not executable")
    assert site.users["gtunit1"].registry() == {}, "a failed start gives its lease back"


def _assert_fails_after_it_returned(site: Site, cause: str, bound: float) -> None:
    """``start_wait = "spawned"`` (the default): the Prolog returns once GCP is spawned;
    its watcher finds the failure within ``bound``, stops GCP and frees the lease, and
    the job's lookup (``--wait`` too: the failure is the answer) then says why."""
    user = site.users["gtunit1"]
    start = time.monotonic()
    res = site.prolog("70")
    took = time.monotonic() - start
    assert res.returncode == 0 and "started GCP" in res.stderr, res.stderr
    assert took < 8, f"the Prolog waited {took:.1f} s for the connect"
    waited = site.endpoint("gtunit1", "--wait", f"{bound:g}")
    assert waited.returncode == 1 and cause in waited.stderr, waited.stderr
    assert time.monotonic() - start < bound, "the failure ends the --wait"
    assert len(waited.stderr.strip().splitlines()) == 1, waited.stderr
    wait_for(lambda: not gcp_processes(user.uid), timeout=bound, what="GCP to be stopped")
    assert user.registry() == {}, "the watcher gives the lease back"
    assert [line for line in site.hook_log().splitlines() if cause in line], site.hook_log()
    task = site.taskprolog()
    assert task.returncode == 0 and task.stdout.startswith("print globus-tmp:"), task.stdout
    assert site.epilog("70").returncode == 0


def test_gcp_exiting_at_once_fails_open(site: Site) -> None:
    site.users["gtunit1"].make_pool(1)
    site.configure(gcp_path=site.gcp_wrapper("exit", GCP_EMULATOR_MODE="exit-at-once"))
    _assert_fails_after_it_returned(site, "exited before it connected", bound=15)
    assert "log: " in site.hook_log()


def test_gcp_exiting_at_once_fails_the_prolog_that_waits_for_the_connect(site: Site) -> None:
    site.users["gtunit1"].make_pool(1)
    site.configure(
        gcp_path=site.gcp_wrapper("exit", GCP_EMULATOR_MODE="exit-at-once"),
        start_wait="connected",
    )
    _assert_fails_open(site, "GCP exited before it connected")
    assert "log: " in site.hook_log()


def test_gcp_never_connecting_fails_open_within_start_timeout(site: Site) -> None:
    site.users["gtunit1"].make_pool(1)
    site.configure(
        gcp_path=site.gcp_wrapper("never", GCP_EMULATOR_MODE="never-connect"), start_timeout=3
    )
    _assert_fails_after_it_returned(site, "did not connect within start_timeout=3 s", bound=15)


def test_gcp_never_connecting_with_start_wait_connected_holds_the_prolog(site: Site) -> None:
    site.users["gtunit1"].make_pool(1)
    site.configure(
        gcp_path=site.gcp_wrapper("never", GCP_EMULATOR_MODE="never-connect"),
        start_timeout=3,
        start_wait="connected",
    )
    _assert_fails_open(site, "did not connect within 3 s", bound=10)


def test_user_without_pool_fails_open(site: Site) -> None:
    _assert_fails_open(site, "no endpoint pool")


def test_exhausted_pool_fails_open(site: Site) -> None:
    user = site.users["gtunit1"]
    user.make_pool(1)
    # another node holds the only entry (its GCP runs with its own control socket)
    sockets = site.root / "n2-tmp"
    sockets.mkdir(mode=0o1777)
    sockets.chmod(0o1777)
    site.configure(gcp_path=site.gcp_wrapper("n2", GCP_EMULATOR_SOCKET_DIR=str(sockets)))
    assert "started GCP" in site.prolog("71", node="n2").stderr
    site.configure(gcp_path=site.gcp_wrapper("normal"))
    _assert_fails_open(site, "endpoint pool exhausted", other_gcps=1)
    assert "ep1 held by n2" in site.hook_log()


def test_on_failure_fail_fails_the_prolog_for_site_side_causes_only(site: Site) -> None:
    """A user without a pool (their own files) must not drain the node; a missing GCP
    install (the site's) does."""
    site.configure(on_failure="fail")
    res = site.prolog("72")
    assert res.returncode == 0, res.stderr
    assert "no endpoint pool" in res.stderr and "from the job user's side" in res.stderr
    assert site.epilog("72").returncode == 0, "the epilog never fails: it would drain the node"
    site.users["gtunit1"].make_pool(1)
    site.configure(gcp_path="/nonexistent/globusconnectpersonal")
    res = site.prolog("73")
    assert res.returncode == 1
    assert "gcp_path /nonexistent/globusconnectpersonal is missing or not executable" in res.stderr
    assert site.epilog("73").returncode == 0


def test_corrupt_state_file_is_recovered(site: Site) -> None:
    user = site.users["gtunit1"]
    ids = user.make_pool(1)
    site.prolog("80")
    state_file = site.state_dir() / "users" / "gtunit1.json"
    state_file.write_text(state_file.read_text()[:40])  # truncated mid-write
    assert "unreadable" in site.endpoint("gtunit1").stderr
    res = site.prolog("81")
    assert res.returncode == 0
    assert "unreadable" in res.stderr
    # the running GCP is recognised by its -dir in the pool and taken over, not doubled
    assert len(gcp_processes(user.uid)) == 1
    assert "took over running GCP" in site.hook_log()
    assert _endpoint_id(site) == ids[0]


def test_corrupt_registry_is_set_aside(site: Site) -> None:
    user = site.users["gtunit1"]
    ids = user.make_pool(1)
    registry = user.user_dir / "registry.json"
    registry.write_text("{not json")
    os.chown(registry, user.uid, user.gid)
    res = site.prolog("82")
    assert res.returncode == 0, res.stderr
    assert "registry" in res.stderr and "unreadable" in res.stderr
    assert _endpoint_id(site) == ids[0]
    assert list(user.user_dir.glob("registry.json.corrupt-*")), "the bad file is kept"


def test_broken_config_fails_open(site: Site) -> None:
    site.config.write_text('start_timeout = "soon"\n')
    res = site.prolog("83")
    assert res.returncode == 0
    assert "key 'start_timeout' must be a number" in res.stderr
    assert str(site.config) in res.stderr


# 5. privileges -------------------------------------------------------------------------


def test_gcp_runs_as_the_job_user_and_root_leaves_nothing_in_home(site: Site) -> None:
    user = site.users["gtunit1"]
    user.make_pool(1)
    site.prolog("90")
    (proc,) = gcp_processes(user.uid)
    assert proc.uids().real == user.uid and proc.uids().effective == user.uid
    assert proc.gids().real == user.gid
    for child in proc.children(recursive=True):
        assert child.uids().real == user.uid
    env = proc.environ()
    assert env.get("HOME") == str(user.home) and "SLURM_JOB_ID" not in env
    site.epilog("90")
    for path in [user.user_dir, *user.user_dir.rglob("*")]:
        assert path.lstat().st_uid == user.uid, f"{path} is not owned by the user"


def test_symlinks_in_user_dir_cannot_make_root_write(site: Site) -> None:
    user = site.users["gtunit1"]
    user.make_pool(1)
    victim = site.root / "victim"
    victim.mkdir(mode=0o755)
    target_file = victim / "passwd"
    target_file.write_text("root-owned\n")
    (user.user_dir / "logs").symlink_to(victim)
    (user.user_dir / "registry.json").symlink_to(target_file)
    for link in ("logs", "registry.json"):
        os.lchown(user.user_dir / link, user.uid, user.gid)
    res = site.prolog("91")
    assert res.returncode == 0
    assert target_file.read_text() == "root-owned\n"
    assert list(victim.iterdir()) == [target_file], "root wrote through a planted symlink"


def test_state_dir_is_root_owned_and_not_user_writable(site: Site) -> None:
    site.users["gtunit1"].make_pool(1)
    site.prolog("92")
    for path in (site.state_dir(), site.state_dir() / "users", site.state_dir() / "locks"):
        st = path.stat()
        assert st.st_uid == 0 and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    res = site.as_user(
        "gtunit1", ["/bin/sh", "-c", f"echo x > {site.state_dir()}/users/forged.json"]
    )
    assert res.returncode != 0


def test_untrusted_state_dir_is_refused(site: Site) -> None:
    site.users["gtunit1"].make_pool(1)
    state = site.state_dir()
    state.mkdir(parents=True)
    state.chmod(0o777)
    res = site.prolog("93")
    assert res.returncode == 0
    assert "writable by group/others" in res.stderr
    assert gcp_processes(site.users["gtunit1"].uid) == []


# 5b. stage-out marks: the home is read at a job's end only if the job declared ----------


HUNG_HOMES = Path("/var/tmp/globus-tmp-test-homes")
"""Where the home of ``gthung`` is: a hung file system is mounted over it in a test."""


@contextlib.contextmanager
def _user_of_its_own(site: Site) -> Iterator[UnixUser]:
    """``gthung``, a test user no other test run on this machine shares (the gtunit
    users' processes and GCP control sockets are everyone's), with a one-entry pool
    under the site (``user_dir`` off its home); its processes are killed at the end."""
    HUNG_HOMES.mkdir(mode=0o755, exist_ok=True)
    pw = ensure_user("gthung", HUNG_HOMES / "gthung")
    pools = site.root / "pools"
    user = UnixUser(pw.pw_name, pw.pw_uid, pw.pw_gid, pools / pw.pw_name)
    user.home.mkdir(mode=0o755, parents=True)
    site.users = {**site.users, user.name: user}
    site.configure(user_dir=str(pools / "%u" / USER_DIR[2:]))
    user.make_pool(1)
    try:
        yield user
    finally:
        kill_user_processes(user.uid)
        Path(f"/tmp/globusconnect_{user.uid}.sock").unlink(missing_ok=True)


def test_a_not_last_epilog_never_waits_on_a_hung_home(site: Site) -> None:
    """Every Epilog listed the job's stage-out records in the home (a step as the user,
    which also began with a chdir into the home): on a hung home file system every
    job's end waited out that step's 30 s, declared or not. Now a job without a mark on
    the node leaves at once; its mark step starts in /, not in the home."""
    with _user_of_its_own(site) as user:
        site.prolog("81", user.name)
        site.prolog("82", user.name)
        with hung_file_system(HUNG_HOMES):
            assert blocks(["stat", str(HUNG_HOMES / user.name)])  # the home hangs, for real
            start = time.monotonic()
            res = site.epilog("81", user.name)
            took = time.monotonic() - start
        assert took < 10, f"the not-last Epilog took {took:.1f} s: {res.stderr}"
        assert "1 job(s) remain" in res.stderr and "could not" not in res.stderr, res.stderr
        assert sorted(site.state(user.name)["jobs"]) == ["82"]
        site.epilog("82", user.name)
        site.wait_gcp_stopped(user.name)


def test_a_mount_over_the_users_marks_dir_stalls_no_prolog_and_costs_its_epilog_a_bound(
    site: Site,
) -> None:
    """``declared/<user>`` is the user's: they may mount something there (fusermount).
    Root never looks inside (the Prolog only tries a mkdir); the Epilog's mark step as
    the user gives up at its bound and reads the home instead, within the step budget."""
    with _user_of_its_own(site) as user:
        site.prolog("83", user.name)
        marks = site.state_dir() / "declared" / user.name
        st = os.lstat(marks)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (user.uid, user.gid, 0o700)
        assert stat.S_IMODE(os.lstat(marks.parent).st_mode) == 0o711
        with hung_file_system(marks):
            assert blocks(["stat", str(marks / "84")])
            start = time.monotonic()
            res = site.prolog("84", user.name)
            took = time.monotonic() - start
            assert took < 8 and "joined GCP" in res.stderr, f"{took:.1f} s: {res.stderr}"
            start = time.monotonic()
            res = site.epilog("84", user.name)
            took = time.monotonic() - start
        assert took < 20, f"the Epilog took {took:.1f} s: {res.stderr}"
        assert "stage-out mark not looked at" in res.stderr, res.stderr
        assert "1 job(s) remain" in res.stderr and "could not" not in res.stderr, res.stderr
        assert sorted(site.state(user.name)["jobs"]) == ["83"]
        site.epilog("83", user.name)
        site.wait_gcp_stopped(user.name)


def test_a_declaration_leaves_a_mark_the_epilog_takes(site: Site) -> None:
    with _user_of_its_own(site) as user:
        site.as_user(user.name, ["touch", str(user.user_dir / "tokens.db")])  # "logged in"
        site.prolog("85", user.name)
        site.prolog("86", user.name)
        marks = site.state_dir() / "declared" / user.name
        os.rmdir(marks)  # as if an older Prolog had run here
        dest = "5a8d3a0c-1f7e-4d0e-8c52-0b1b2f0f9a11:/x"
        declare = [str(BIN / "globus-tmp-endpoint"), "stage-out", "--at-exit", "/tmp/x", dest]
        res = site.as_user(user.name, declare, job="85")
        assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert "Prolog did not run" in res.stderr and "nothing declared" in res.stderr
        assert not (user.user_dir / "stage-out").exists()
        site.prolog("85", user.name)  # a Prolog of this version (a rerun) makes it again
        res = site.as_user(user.name, declare, job="85")
        assert res.returncode == 0 and "declared" in res.stdout, res.stderr
        assert os.listdir(marks) == ["85"] and os.lstat(marks / "85").st_uid == user.uid
        res = site.epilog("85", user.name)  # not the last job; no Globus: it fails to submit
        assert "stage-out" in res.stderr and os.listdir(marks) == [], res.stderr
        site.epilog("86", user.name)
        site.wait_gcp_stopped(user.name)


# 6. GCP killed from outside -----------------------------------------------------------


def test_killed_gcp_is_restarted_by_the_next_prolog(site: Site) -> None:
    user = site.users["gtunit1"]
    user.make_pool(2)
    site.prolog("100")
    before = _endpoint_id(site)
    (first,) = gcp_processes(user.uid)
    for proc in [first, *first.children(recursive=True)]:
        proc.send_signal(signal.SIGKILL)
    wait_for(lambda: not gcp_processes(user.uid), what="GCP to die")
    assert site.endpoint("gtunit1").returncode == 1
    res = site.prolog("101")
    assert res.returncode == 0 and "started GCP" in res.stderr
    (second,) = gcp_processes(user.uid)
    assert second.pid != first.pid
    assert _endpoint_id(site) == before, "restarted from the same lease"
    assert sorted(site.state("gtunit1")["jobs"]) == ["100", "101"]


# 7. concurrency ------------------------------------------------------------------------


def _storm(site: Site, calls: list[tuple[str, str]]) -> int:
    """Start all hook calls at once; sample GCP instances meanwhile; most seen at once."""
    random.shuffle(calls)
    most = 0
    stop = threading.Event()
    uid = site.users["gtunit1"].uid

    def sample() -> None:
        nonlocal most
        while not stop.is_set():
            most = max(most, len(gcp_processes(uid)))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    procs = [site.hook(kind, job, "gtunit1", wait=False) for kind, job in calls]
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
    finally:
        stop.set()
        sampler.join()
    return most


def test_concurrent_prologs_and_epilogs(site: Site) -> None:
    user = site.users["gtunit1"]
    user.make_pool(1)
    for job in range(200, 216):
        site.prolog(str(job))
    calls = [("prolog", str(j)) for j in range(300, 316)] + [
        ("epilog", str(j)) for j in range(200, 216)
    ]
    most = _storm(site, calls)
    assert most <= 1
    assert sorted(site.state("gtunit1")["jobs"]) == [str(j) for j in range(300, 316)]
    assert len(gcp_processes(user.uid)) == 1
    most = _storm(
        site,
        [("epilog", str(j)) for j in range(300, 316)]
        + [("prolog", str(j)) for j in range(400, 416)],
    )
    assert most <= 1
    assert sorted(site.state("gtunit1")["jobs"]) == [str(j) for j in range(400, 416)]
    assert len(gcp_processes(user.uid)) == 1
    most = _storm(site, [("epilog", str(j)) for j in range(400, 416)])
    assert most <= 1
    assert site.state("gtunit1")["jobs"] == {}
    site.wait_gcp_stopped()
    assert user.registry() == {}


# the drain ---------------------------------------------------------------------------


def test_active_transfer_keeps_gcp_until_it_ends(site: Site) -> None:
    user = site.users["gtunit1"]
    user.make_pool(1)
    site.prolog("500")
    site.emulate_transfer(4)
    start = time.monotonic()
    res = site.epilog("500")
    assert res.returncode == 0 and "drain pid" in res.stderr
    assert time.monotonic() - start < 10, "the epilog hands over; it does not wait"
    assert len(gcp_processes(user.uid)) == 1
    assert site.state("gtunit1")["phase"] == "draining"
    wait_for(lambda: "lease ep1 released" in site.hook_log(), timeout=20, what="drain to stop")
    assert "idle for" in site.hook_log(), "stopped after an unbroken idle, not at once"
    assert time.monotonic() - start >= 4
    assert gcp_processes(user.uid) == []
    assert user.registry() == {}


def test_job_arriving_during_drain_reuses_the_instance(site: Site) -> None:
    user = site.users["gtunit1"]
    user.make_pool(1)
    site.prolog("510")
    (first,) = gcp_processes(user.uid)
    site.emulate_transfer(3)
    site.epilog("510")
    res = site.prolog("511")
    assert "joined GCP" in res.stderr and "during its drain" in res.stderr
    time.sleep(5)  # the transfer is over: the drain must have left GCP alone
    assert [p.pid for p in gcp_processes(user.uid)] == [first.pid]
    assert "joined; GCP stays up" in site.hook_log()
    site.epilog("511")
    site.wait_gcp_stopped()


def test_drain_gives_up_at_linger_max(site: Site) -> None:
    user = site.users["gtunit1"]
    user.make_pool(1)
    site.configure(linger_max=2)
    site.prolog("520")
    site.emulate_transfer(60)
    site.epilog("520")
    wait_for(lambda: "lease ep1 released" in site.hook_log(), timeout=20, what="drain to give up")
    assert "gave up after linger_max=2 s" in site.hook_log()
    assert gcp_processes(user.uid) == []
    drain_pid = int(site.hook_log().split("drain pid ")[1].split()[0])
    wait_for(lambda: not psutil.pid_exists(drain_pid), what="the drain to exit")
