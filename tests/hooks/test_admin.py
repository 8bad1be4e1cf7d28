"""``globus-tmp-admin status``, ``stop``, ``drain-cancel`` and ``doctor`` on the hooks'
test site (root, real users, the GCP emulator); the lab runs them under Slurm too
(tests/e2e/test_e2e_admin.py)."""

from __future__ import annotations

import json
import subprocess
import time

from hooksite import BIN, Site, gcp_processes


def _status(site: Site) -> dict:  # type: ignore[type-arg]
    res = site.admin("status", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def test_status_shows_gcp_jobs_leases_and_drain(site: Site) -> None:
    assert json.loads(site.admin("status", "--json").stdout)["users"] == []
    site.users["gtunit1"].make_pool(1)
    site.prolog("1")
    site.prolog("2")
    site.wait_connected()
    view = _status(site)
    (user,) = view["users"]
    assert user["user"] == "gtunit1" and user["jobs"] == ["1", "2"] and user["gcp_alive"]
    assert user["leases"] == [user["endpoint_name"]] and user["phase"] == "running"
    assert view["totals"]["gcp_running"] == 1 and view["totals"]["jobs"] == 2
    text = site.admin("status").stdout
    assert "gtunit1" in text and "alive" in text and "jobs 1,2" in text
    site.epilog("1")
    site.epilog("2")  # no Transfer API here: an unverified idle GCP lingers in a drain
    user = _status(site)["users"][0]
    assert user["phase"] == "draining" and user["drain_alive"] and user["drain_until"]
    assert "left" in site.admin("status").stdout
    # any user may look: node state is readable by all
    as_user = site.as_user("gtunit1", [str(BIN / "globus-tmp-admin"), "--node", "n1", "status"])
    assert as_user.returncode == 0 and "gtunit1" in as_user.stdout, as_user.stderr


def test_status_says_why_an_idle_gcp_is_up_and_the_next_job_joins_it(site: Site) -> None:
    """Issue 18: after the last job GCP lingers ``idle_linger`` for the user's next job
    (status says so, and until when); a job arriving meanwhile joins it."""
    user = site.users["gtunit1"]
    user.make_pool(1)
    site.configure(
        idle_linger=15, gcp_path=site.gcp_wrapper("slow", GCP_EMULATOR_CONNECT_DELAY="4")
    )
    assert "started GCP" in site.prolog("5").stderr
    assert "connecting" in site.admin("status").stdout  # the Prolog did not wait for it
    site.wait_connected()
    (gcp,) = gcp_processes(user.uid)
    res = site.epilog("5")
    assert "idle_linger=15 s: drain pid" in res.stderr and "next job" in res.stderr, res.stderr
    text = site.admin("status").stdout
    assert "idle_linger for the next job: " in text, text
    view = _status(site)["users"][0]
    assert view["phase"] == "draining" and view["idle_until"] > time.time() + 8, view
    res = site.prolog("6")
    assert "joined GCP" in res.stderr and "during its drain" in res.stderr, res.stderr
    assert [p.pid for p in gcp_processes(user.uid)] == [gcp.pid]
    site.epilog("6")
    res = site.admin("drain-cancel", "--user", "gtunit1")  # no need to wait out the linger
    assert res.returncode == 0, res.stderr
    site.wait_gcp_stopped()
    assert user.registry() == {}


def test_stop_refuses_under_a_job_and_ends_a_drain_before_maintenance(site: Site) -> None:
    uid = site.users["gtunit1"].uid
    site.configure(linger_unverified=600)
    site.users["gtunit1"].make_pool(1)
    site.prolog("3")
    refused = site.admin("stop", "--user", "gtunit1")
    assert refused.returncode == 1 and "drain the node in Slurm first" in refused.stderr
    assert len(gcp_processes(uid)) == 1
    site.epilog("3")
    assert _status(site)["users"][0]["drain_alive"]
    res = site.admin("stop", "--all")
    assert res.returncode == 0, res.stderr
    assert "drain pid" in res.stderr and "stopped by an admin" in res.stderr
    assert gcp_processes(uid) == []
    user = _status(site)["users"][0]
    assert user["phase"] == "idle" and user["leases"] == [] and not user["drain_alive"]
    assert not site.users["gtunit1"].registry()


def test_drain_cancel_only_acts_on_a_drain(site: Site) -> None:
    uid = site.users["gtunit1"].uid
    site.configure(linger_unverified=600)
    site.users["gtunit1"].make_pool(1)
    site.prolog("4")
    idle = site.admin("drain-cancel", "--user", "gtunit1")
    assert idle.returncode == 1 and "has job(s) 4" in idle.stderr
    site.epilog("4")
    res = site.admin("drain-cancel", "--user", "gtunit1")
    assert res.returncode == 0 and "drain pid" in res.stderr, res.stderr
    assert gcp_processes(uid) == []
    again = site.admin("drain-cancel", "--user", "gtunit1")
    assert again.returncode == 0 and "no drain runs" in again.stderr


def _doctor(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    return site.admin("doctor", *args)


def test_doctor_on_a_good_and_a_broken_install(site: Site) -> None:
    site.users["gtunit1"].make_pool(1)
    conf = site.slurm_conf()
    good = conf.read_text() + (
        f"Prolog={BIN}/globus-tmp-prolog\nEpilog={BIN}/globus-tmp-epilog\n"
        f"TaskProlog={BIN}/globus-tmp-taskprolog\nPrologEpilogTimeout=300\n"
    )
    conf.write_text(good)
    res = _doctor(site, "--user", "gtunit1")
    lines = res.stdout.splitlines()
    assert res.returncode in (0, 1) and not [ln for ln in lines if ln.startswith("FAIL")], lines
    for check in ("gcp_path", "state_dir", "interpreter", "slurm.conf Prolog", "user_dir"):
        assert any(ln.startswith("OK") and f" {check}" in ln for ln in lines), (check, lines)
    assert any("Globus Connect Personal" in ln for ln in lines)
    conf.write_text(good.replace("PrologEpilogTimeout=300", "PrologEpilogTimeout=30")
                    .replace(f"Epilog={BIN}/globus-tmp-epilog\n", ""))  # fmt: skip
    site.configure(gcp_path="/nonexistent/globusconnectpersonal")
    res = _doctor(site)
    fails = [ln for ln in res.stdout.splitlines() if ln.startswith("FAIL")]
    assert res.returncode == 2, res.stdout
    assert any("gcp_path" in ln and "fix gcp_path" in ln for ln in fails), fails
    assert any("PrologEpilogTimeout" in ln and "above hook_timeout" in ln for ln in fails), fails
    assert any("slurm.conf Epilog" in ln and "(unset)" in ln for ln in fails), fails
    assert any(ln.startswith("WARN user_dir") for ln in res.stdout.splitlines())
