"""``globus-tmp-admin`` on the real Slurm lab: status during a drain (node and cluster
view through ClusterShell's clush), stop before maintenance, doctor on a good and a
broken configuration. Node commands run in the node's namespaces (``lab exec``)."""

from __future__ import annotations

import json
import re
import shutil
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


def _doctor_on(lab: SlurmLab, where: Path, **slurm_conf: str) -> dict[str, str]:
    """doctor on NODE against a copy of the lab's config in ``where`` with slurm.conf's
    keys changed; its lines by check name."""
    shutil.rmtree(where, ignore_errors=True)
    shutil.copytree(lab.etc_dir, where)
    where.chmod(0o755)
    text = (where / "slurm.conf").read_text()
    for key, value in slurm_conf.items():
        text = re.sub(rf"(?m)^{key}=.*$", "", text) + f"{key}={value}\n"
    (where / "slurm.conf").write_text(text)
    argv = [str(lab.venv_bin / "globus-tmp-admin"), "--config", str(where / "globus-tmp.conf"),
            "--node", NODE, "doctor"]  # fmt: skip
    out = lab.node_exec(NODE, argv, timeout=120).stdout
    return {ln[5:].split(":", 1)[0]: ln for ln in out.splitlines() if ln[:4].strip()}


def test_doctor_verdicts_on_this_slurms_lab(lab: SlurmLab, tmp_path: Path) -> None:
    """On the Slurm the lab runs (22.05, 24.11, 25.11): its own private-/tmp config is
    good; RunInJob, a plugin built for another Slurm and START_ONLY are not."""
    where = lab.root / "doctor-check"
    lab.set_job_container(True)
    try:
        good = _doctor_on(lab, where)
        assert good["private /tmp"].startswith("OK"), good
        assert f"built for Slurm {lab.slurm_version}" in good["private /tmp"], good
        assert good["slurm.conf PrologFlags"].startswith("OK"), good
        run_in_job = _doctor_on(lab, where, PrologFlags="RunInJob")
        assert run_in_job["slurm.conf PrologFlags"].startswith("FAIL"), run_in_job
        assert "Alloc,Contain" in run_in_job["slurm.conf PrologFlags"], run_in_job
        healthcheck = {
            "HealthCheckProgram": str(lab.venv_bin / "globus-tmp-healthcheck"),
            "HealthCheckInterval": "300",
        }
        periodic = _doctor_on(lab, where, **healthcheck)["periodic reconcile"]
        assert periodic.startswith("OK"), periodic
        start_only = _doctor_on(lab, where, HealthCheckNodeState="START_ONLY", **healthcheck)
        line = start_only["periodic reconcile"]
        assert line.startswith("WARN") and "START_ONLY" in line, start_only
        assert "globus-tmp-reconcile.timer" in line, line
        # a plugin compiled for another release (a Slurm upgrade without a rebuild)
        other = 0x190B07 if lab.slurm_version == "22.05" else 0x160508  # 25.11.7 / 22.05.8
        src = tmp_path / "stale.c"
        src.write_text(f"const unsigned int plugin_version = {other:#x};\n")
        stale = lab.lib_dir / "stale" / "globus_tmp_spank.so"
        stale.parent.mkdir(mode=0o755, exist_ok=True)
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(stale), str(src)], check=True)
        stale.chmod(0o755)
        plugstack = (where / "plugstack.conf").read_text()
        _doctor_on(lab, where)
        (where / "plugstack.conf").write_text(plugstack.replace(str(lab.spank_plugin), str(stale)))
        text = (where / "slurm.conf").read_text()
        (where / "slurm.conf").write_text(
            text.replace(str(lab.plugstack_conf), str(where / "plugstack.conf"))
        )
        argv = [str(lab.venv_bin / "globus-tmp-admin"), "--config",
                str(where / "globus-tmp.conf"), "--node", NODE, "doctor"]  # fmt: skip
        out = lab.node_exec(NODE, argv, timeout=120).stdout
        (line,) = [ln for ln in out.splitlines() if "private /tmp" in ln]
        assert line.startswith("FAIL") and "rebuild globus_tmp_spank.so" in line, out
    finally:
        shutil.rmtree(where, ignore_errors=True)
        shutil.rmtree(lab.lib_dir / "stale", ignore_errors=True)
        lab.set_job_container(False)
