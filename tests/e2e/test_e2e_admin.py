"""``globus-tmp-admin`` on the real Slurm lab: status during a drain (node and cluster
view through ClusterShell's clush), stop before maintenance, doctor on a good and a
broken configuration. Node commands run in the node's namespaces (``lab exec``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from polling import wait_for
from slurmlab import REPO_ROOT, SlurmLab

from e2e.e2e_jobs import explain

NODE = "n1"
USER = "gtcarol"
ADMIN_HERE = str(Path(sys.executable).with_name("globus-tmp-admin"))


def _admin(lab: SlurmLab, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(lab.venv_bin / "globus-tmp-admin"), "--config", str(lab.globus_tmp_conf),
            "--node", NODE, *args]  # fmt: skip
    return lab.node_exec(NODE, argv, timeout=120)


def _draining(lab: SlurmLab) -> str:
    """A job of USER has ended on NODE; its GCP lingers in a drain (no Transfer API)."""
    lab.make_pool(USER, 1)
    lab.logout(USER)
    lab.write_globus_tmp_conf(linger_unverified=300)
    job = lab.sbatch(USER, "#!/bin/bash\ntrue\n", "-w", NODE)
    info = lab.wait_jobs([job], timeout=120)[job]
    assert info is not None and info.state == "COMPLETED", explain(lab, job, user=USER)
    wait_for(lambda: "drain pid" in lab.hook_log(NODE), timeout=60, what="a drain")
    return job


def test_status_during_a_drain_and_the_cluster_view(lab: SlurmLab) -> None:
    _draining(lab)
    res = _admin(lab, "status", "--json")
    assert res.returncode == 0, res.stderr
    (user,) = json.loads(res.stdout)["users"]
    assert user["user"] == USER and user["phase"] == "draining" and user["drain_alive"]
    assert user["gcp_alive"] and user["jobs"] == [] and user["leases"] == ["ep1"]
    text = _admin(lab, "status").stdout
    assert "draining" in text and "left" in text, text
    cluster = subprocess.run(
        [ADMIN_HERE, "--config", str(lab.globus_tmp_conf), "status",
         "--nodes", ",".join(lab.nodes), "--exec", f"{REPO_ROOT / 'tests/lab/lab'} exec %h"],
        capture_output=True, text=True, timeout=200,
    )  # fmt: skip
    assert cluster.returncode == 0, cluster.stdout + cluster.stderr
    rows = cluster.stdout.splitlines()
    assert any(r.startswith(NODE) and USER in r and "draining" in r for r in rows), rows
    assert f"{len(lab.nodes)} node(s) answered, 0 did not" in rows[-1], rows
    cancel = _admin(lab, "drain-cancel", "--user", USER)
    assert cancel.returncode == 0 and "drain pid" in cancel.stderr, cancel.stderr
    assert not lab.gcp_processes(USER)


def test_stop_before_maintenance(lab: SlurmLab) -> None:
    _draining(lab)
    lab.scontrol("update", f"nodename={NODE}", "state=drain", "reason=maintenance")
    try:
        res = _admin(lab, "stop", "--all")
        assert res.returncode == 0, res.stderr
        assert "stopped by an admin" in res.stderr and "lease ep1 released" in res.stderr
        assert not lab.gcp_processes(USER)
        assert not lab.leases(USER)
        assert json.loads(_admin(lab, "status", "--json").stdout)["users"][0]["phase"] == "idle"
    finally:
        lab.scontrol("update", f"nodename={NODE}", "state=resume")


def test_doctor_on_the_lab_and_on_a_broken_config(lab: SlurmLab) -> None:
    good = _admin(lab, "doctor", "--user", USER)
    lines = good.stdout.splitlines()
    assert good.returncode in (0, 1) and not [ln for ln in lines if ln.startswith("FAIL")], lines
    assert any(ln.startswith("OK   slurm.conf PrologFlags") for ln in lines), lines
    assert any(ln.startswith("OK   user_dir") and "link() works" in ln for ln in lines), lines
    lab.write_globus_tmp_conf(gcp_path="/nonexistent/globusconnectpersonal", hook_timeout=600)
    bad = _admin(lab, "doctor")
    fails = [ln for ln in bad.stdout.splitlines() if ln.startswith("FAIL")]
    assert bad.returncode == 2, bad.stdout
    assert any("gcp_path" in ln for ln in fails), fails
    assert any("PrologEpilogTimeout" in ln for ln in fails), fails
