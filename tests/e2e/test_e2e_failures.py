"""Failing open: a broken GCP or an exhausted pool costs the endpoint, never the job or node."""

from __future__ import annotations

import pytest
from slurmlab import SlurmLab

from e2e.e2e_jobs import (
    explain,
    parse_probes,
    probe_cmd,
    reason_lines,
    release,
    wait_output,
    waiting_job,
)


def _assert_no_endpoint(lab: SlurmLab, job: str, user: str, output: str) -> None:
    why = explain(lab, job, user=user)
    probes = parse_probes(output)
    assert probes, why
    for p in probes:
        assert p.env_id == "", f"GLOBUS_TMP_ENDPOINT_ID set without an endpoint\n{why}"
        assert p.cli_rc != 0, f"globus-tmp-endpoint exited 0 without an endpoint\n{why}"
        assert p.cli_out and "\\n" not in p.cli_out, f"want one line saying why: {p.cli_out!r}"
    assert reason_lines(output), f"no 'globus-tmp: <reason>' line in the job output\n{why}"


@pytest.mark.parametrize("broken", ["missing-gcp", "exit-at-once"])
def test_broken_gcp_fails_open(lab: SlurmLab, broken: str) -> None:
    user, node = "gtalice", "n3"
    lab.make_pool(user, 1)
    if broken == "missing-gcp":
        lab.write_globus_tmp_conf(gcp_path=str(lab.bin_dir / "no-such-globusconnectpersonal"))
    else:
        wrapper = lab.write_gcp_wrapper("gcp-exit-at-once", GCP_EMULATOR_MODE="exit-at-once")
        # the job then starts without an endpoint; with "spawned" it would start with one
        # that its watcher takes back a moment later (tests/hooks/test_hooks.py)
        lab.write_globus_tmp_conf(gcp_path=str(wrapper), start_wait="connected")
    job = lab.sbatch(user, f"#!/bin/bash\n{probe_cmd(lab)}\n", "-w", node)
    info = lab.wait_jobs([job], timeout=120)[job]
    why = explain(lab, job, user=user)

    assert info is not None, why
    assert (info.state, info.exit_code, info.restarts) == ("COMPLETED", "0:0", 0), why
    assert "held" not in info.reason.lower(), why
    assert set(lab.sinfo_states().values()) == {"idle"}, why
    _assert_no_endpoint(lab, job, user, lab.job_output(job, user))
    assert lab.gcp_processes(user) == [], why

    # Repaired config is read by the next hook: no restart, and no failure state sticks.
    lab.write_globus_tmp_conf()
    job2 = lab.sbatch(user, f"#!/bin/bash\n{probe_cmd(lab)}\n", "-w", node)
    info2 = lab.wait_jobs([job2], timeout=90)[job2]
    (p,) = parse_probes(lab.job_output(job2, user))
    assert info2 is not None and info2.state == "COMPLETED", explain(lab, job2, user=user)
    assert p.cli_rc == 0 and p.env_id, explain(lab, job2, user=user)


def test_more_nodes_than_pool_entries(lab: SlurmLab) -> None:
    """Pool of one, jobs on two nodes: the second is told why; the lease comes back after."""
    user = "gtcarol"
    (endpoint,) = lab.make_pool(user, 1)
    a = lab.sbatch(user, waiting_job(lab, user, "pool-a"), "-w", "n1")
    (pa,) = wait_output(lab, a, user, "start")
    b = lab.sbatch(user, waiting_job(lab, user, "pool-b"), "-w", "n2")
    wait_output(lab, b, user, "start")
    release(lab, user, "pool-a")
    release(lab, user, "pool-b")
    infos = lab.wait_jobs([a, b], timeout=60)
    why = explain(lab, a, b, user=user)

    assert all(i is not None and i.state == "COMPLETED" for i in infos.values()), why
    assert pa.cli_rc == 0 and pa.env_id == endpoint == pa.cli_out, why
    _assert_no_endpoint(lab, b, user, lab.job_output(b, user))
    assert set(lab.sinfo_states().values()) == {"idle"}, why

    assert not lab.wait_no_gcp(user, timeout=60), f"GCP outlived the jobs\n{why}"
    c = lab.sbatch(user, f"#!/bin/bash\n{probe_cmd(lab)}\n", "-w", "n3")
    lab.wait_jobs([c], timeout=90)
    (pc,) = parse_probes(lab.job_output(c, user))
    assert pc.cli_rc == 0 and pc.env_id == endpoint, (
        f"the lease did not come back for a later job on another node\n{explain(lab, c, user=user)}"
    )


def test_multi_node_job_with_one_pool_entry(lab: SlurmLab) -> None:
    """``-N2`` with a pool of one: one node has the endpoint; the other's tasks are told so,
    and do not inherit the batch node's endpoint id through the job's environment."""
    user = "gtbob"
    (endpoint,) = lab.make_pool(user, 1)
    script = f"#!/bin/bash\nsrun -N2 --ntasks-per-node=1 {probe_cmd(lab, 'step')}\n"
    job = lab.sbatch(user, script, "-N2", "-w", "n1,n2")
    info = lab.wait_jobs([job], timeout=90)[job]
    output = lab.job_output(job, user)
    why = explain(lab, job, user=user)

    assert info is not None and info.state == "COMPLETED", why
    probes = parse_probes(output)
    assert sorted(p.node for p in probes) == ["n1", "n2"], why
    with_ep = [p for p in probes if p.cli_rc == 0]
    without = [p for p in probes if p.cli_rc != 0]
    assert len(with_ep) == 1 and len(without) == 1, why
    assert with_ep[0].env_id == endpoint == with_ep[0].cli_out, why
    assert without[0].env_id == "", f"{without[0].node} inherited an endpoint id\n{why}"
    assert reason_lines(output), why
    assert set(lab.sinfo_states().values()) == {"idle"}, why
