"""One GCP per (node, user): shared by a user's jobs on a node, separate across nodes and users."""

from __future__ import annotations

import pwd

from polling import wait_for
from slurmlab import SlurmLab

from e2e.e2e_jobs import (
    GcpSampler,
    HookLogMark,
    explain,
    parse_probes,
    probe_cmd,
    release,
    wait_output,
    waiting_job,
)


def test_overlapping_jobs_of_one_user_share_one_gcp(lab: SlurmLab) -> None:
    """Three jobs on n1 whose prologs race: one GCP start, one endpoint id seen three ways."""
    user, node = "gtalice", "n1"
    pool_ids = lab.make_pool(user, 2)
    mark = HookLogMark(lab)
    with GcpSampler(lab, user, node) as sampler:
        jobs = [lab.sbatch(user, waiting_job(lab, user, f"share{i}"), "-w", node) for i in range(3)]
        starts = [wait_output(lab, j, user, "start")[0] for j in jobs]
        # All three are running now, side by side: the endpoint is shared, not restarted.
        for i in range(3):
            release(lab, user, f"share{i}")
        infos = lab.wait_jobs(jobs, timeout=90)
    why = explain(lab, *jobs, user=user)

    assert all(i is not None and i.state == "COMPLETED" for i in infos.values()), why
    ids = {p.env_id for p in starts}
    assert len(ids) == 1, f"jobs saw different endpoint ids {ids}\n{why}"
    (endpoint,) = ids
    assert endpoint in pool_ids, why
    for p in starts:
        assert p.cli_rc == 0, f"globus-tmp-endpoint failed in job {p.job}: {p.cli_out}\n{why}"
        assert p.cli_out == endpoint, why
        assert p.env_paths == "/tmp", why
        assert p.node == node
    assert sampler.samples > 10
    assert sampler.max_seen == 1, f"saw {sampler.max_seen} GCPs of {user} on {node} at once\n{why}"
    assert len(sampler.pids) == 1, f"GCP restarted while shared: pids {sampler.pids}\n{why}"
    started = mark.started_lines(node, user)
    assert len(started) == 1, f"expected one 'started' line, got {started}\n{why}"


def test_multi_node_job_gets_one_endpoint_per_node(lab: SlurmLab) -> None:
    """``sbatch -N2``: each node runs its own GCP, from a different pool entry."""
    user = "gtbob"
    pool_ids = lab.make_pool(user, 2)
    script = f"#!/bin/bash\nsrun -N2 --ntasks-per-node=1 {probe_cmd(lab, 'step')}\n"
    job = lab.sbatch(user, script, "-N2", "-w", "n1,n2")
    info = lab.wait_jobs([job], timeout=90)[job]
    why = explain(lab, job, user=user)

    assert info is not None and info.state == "COMPLETED", why
    probes = parse_probes(lab.job_output(job, user))
    assert sorted(p.node for p in probes) == ["n1", "n2"], why
    for p in probes:
        assert p.cli_rc == 0, f"{p.node}: globus-tmp-endpoint said {p.cli_out!r}\n{why}"
        assert p.env_id == p.cli_out, f"{p.node}: TaskProlog and CLI disagree\n{why}"
        assert p.env_id in pool_ids, why
    assert probes[0].env_id != probes[1].env_id, f"both nodes got one endpoint\n{why}"


def test_two_users_on_one_node_get_their_own_gcp(lab: SlurmLab) -> None:
    """Two users' jobs on n2 at once: two GCPs, each running as its user."""
    node = "n2"
    users = ("gtalice", "gtbob")
    pools = {u: lab.make_pool(u, 1) for u in users}
    jobs = {u: lab.sbatch(u, waiting_job(lab, u, "twousers"), "-w", node) for u in users}
    starts = {u: wait_output(lab, j, u, "start")[0] for u, j in jobs.items()}
    procs = [g for g in lab.gcp_processes() if g.node == node]
    why = explain(lab, *jobs.values())
    for u in users:
        release(lab, u, "twousers")
    lab.wait_jobs(list(jobs.values()), timeout=60)

    assert sorted(g.user for g in procs) == sorted(users), f"GCPs on {node}: {procs}\n{why}"
    for g in procs:
        assert g.uid == pwd.getpwnam(g.user).pw_uid
        assert g.uid != 0
    for u in users:
        assert starts[u].cli_rc == 0, why
        assert starts[u].env_id == pools[u][0], why
    assert starts["gtalice"].env_id != starts["gtbob"].env_id


def _wait_log(lab: SlurmLab, mark: HookLogMark, node: str, text: str) -> None:
    wait_for(lambda: text in mark.new_text(node), timeout=30, what=f"{text!r} in hooks.log")


def test_back_to_back_jobs_of_one_user_reuse_one_lingering_gcp(lab: SlurmLab) -> None:
    """Issue 18: a user's short jobs one after another on a node (a pipeline, an array,
    an ``srun`` loop) each found GCP stopped by the previous job's Epilog and paid a cold
    start, the lease changing hands each time. With ``idle_linger`` the drain keeps the
    idle GCP up after the last job, and the next job joins it on the fast path."""
    user, node, count = "gtalice", "n1", 4
    pool_ids = lab.make_pool(user, 2)
    lab.write_globus_tmp_conf(idle_linger=20)
    mark = HookLogMark(lab)
    script = f"#!/bin/bash\n{probe_cmd(lab, 'start')}\nsleep 1\n"
    jobs = []
    for _ in range(count):
        job = lab.sbatch(user, script, "-w", node)
        jobs.append(job)
        info = lab.wait_jobs([job], timeout=60)[job]
        assert info is not None and info.state == "COMPLETED", explain(lab, job, user=user)
        _wait_log(lab, mark, node, f"epilog job={job} node={node}")  # GCP handed to the drain
    why = explain(lab, *jobs, user=user)
    probes = [p for j in jobs for p in parse_probes(lab.job_output(j, user))]
    assert len(probes) == count and all(p.cli_rc == 0 for p in probes), why
    ids = {p.env_id for p in probes}
    assert len(ids) == 1 and ids <= set(pool_ids), f"endpoint ids {ids}\n{why}"
    assert len(mark.started_lines(node, user)) == 1, f"GCP started more than once\n{why}"
    assert mark.new_text(node).count("during its drain") == count - 1, why
    assert not lab.wait_no_gcp(user, node, timeout=50), f"the linger did not end\n{why}"
    _wait_log(lab, mark, node, "idle_linger=20 s over")  # logged once the lease is back
