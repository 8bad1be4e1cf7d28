"""Fault matrix, rows run on the lab; each test's docstring says which guarantee it proves.

- storm: 64 short jobs of 4 users start at once on one node. Proves one GCP per
  (node, user) under racing hooks, balanced job sets, nothing left running.
- reboot: a node dies hard mid-job and comes back empty. Proves the node's own stale
  lease is reused: the next job gets the endpoint, one GCP, one lease, no drain.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

from polling import wait_for
from slurmlab import BOOT_ID, LAB_USERS, SlurmLab

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

STORM_NODE = "n1"
STORM_JOBS_PER_USER = 16


def _storm_job(lab: SlurmLab, seconds: int) -> str:
    return f"#!/bin/bash\n{probe_cmd(lab)}\nsleep {seconds}\n"


def test_storm_of_short_jobs_keeps_one_gcp_per_user_and_balanced_state(lab: SlurmLab) -> None:
    """Row "storm": 16 short jobs of each of 4 users, submitted at once, on one node, so
    dozens of prologs, TaskPrologs and epilogs of the same and different users race.

    Guarantees: at any moment at most one GCP per (node, user); every job completes and
    got its user's endpoint (``GLOBUS_TMP_ENDPOINT_ID`` from the TaskProlog, and the CLI
    agrees); no node drains; each user's job set on the node ends empty (every prolog's
    add was matched by its epilog's remove); no GCP outlives the last epilog (and drain);
    no hook hit an internal error.
    """
    users = LAB_USERS[:4]
    node = STORM_NODE
    pools = {u: lab.make_pool(u, 1) for u in users}
    mark = HookLogMark(lab)
    rng = random.Random(4 * STORM_JOBS_PER_USER)
    plan = [(u, rng.randint(1, 5)) for _ in range(STORM_JOBS_PER_USER) for u in users]
    with GcpSampler(lab, None, node, interval=0.2) as sampler:
        with ThreadPoolExecutor(max_workers=16) as submit:
            futures = [
                (u, submit.submit(lab.sbatch, u, _storm_job(lab, s), "-w", node, "-J", "storm"))
                for u, s in plan
            ]
            jobs = {f.result(): u for u, f in futures}
        infos = lab.wait_jobs(jobs, timeout=150)
        left = lab.wait_no_gcp(node=node, timeout=60)
    why = explain(lab)

    bad = {
        j: i
        for j, i in infos.items()
        if i is None or (i.state, i.exit_code) != ("COMPLETED", "0:0")
    }
    assert not bad, f"jobs not COMPLETED 0:0: {bad}\n{why}"
    assert set(lab.sinfo_states().values()) == {"idle"}, f"a node drained\n{why}"
    assert sampler.samples >= 10, f"only {sampler.samples} samples of {node}'s GCPs"
    assert sampler.max_by_user == dict.fromkeys(users, 1), (
        f"most GCPs per user on {node} at once: {sampler.max_by_user}\n{why}"
    )
    for job, user in jobs.items():
        output = lab.job_output(job, user)
        probes = parse_probes(output)
        assert len(probes) == 1, f"job {job} of {user}: {output!r}\n{why}"
        (p,) = probes
        assert p.node == node and p.env_id == pools[user][0], (
            f"job {job} of {user} did not get the endpoint {pools[user][0]}: {p}\n{why}"
        )
        assert p.cli_rc == 0 and p.cli_out == p.env_id, f"job {job}: {p}\n{why}"
    for user in users:
        state = lab.node_user_state(node, user)
        assert state is not None, f"{user} has no state on {node}\n{why}"
        assert not state.get("jobs"), f"{user}'s job set on {node} is not empty: {state}\n{why}"
    assert not left, f"GCP still running 60 s after the last job ended: {left}\n{why}"
    crashed = [line for line in mark.new_text(node).splitlines() if "internal error" in line]
    assert not crashed, "hooks crashed in the storm:\n" + "\n".join(crashed)


def test_node_reboot_reuses_the_nodes_own_stale_lease(lab: SlurmLab) -> None:
    """Row "reboot": n1 dies hard while a job of the user runs there (SIGKILL to the node's
    init: slurmd, the job, GCP and node-local /tmp and state are gone, no epilog runs), and
    comes back empty, with a new boot id. The lease of the pool's only entry still says n1
    holds it.

    Guarantee: a lease held by a node that lost its state is the node's own, not a leak:
    the user's next job on n1 gets that endpoint; the lab shows one GCP of the user on n1,
    one lease (n1's), no drained node; and GCP stops after that job as usual. (The node's
    state names that GCP by n1's own pid: each lab node is a PID namespace.)
    """
    user, node = "gtdave", "n1"
    (endpoint,) = lab.make_pool(user, 1)
    old = lab.sbatch(user, waiting_job(lab, user, "reboot-old"), "-w", node)
    (before,) = wait_output(lab, old, user, "start")
    why = explain(lab, old, user=user)
    assert before.cli_rc == 0 and before.env_id == endpoint, why
    assert lab.leases(user) == {"ep1": node}, why
    boot_id = lab.node_boot_id(node)

    lab.reboot_node(node)
    why = explain(lab, old, user=user)
    assert lab.node_boot_id(node) != boot_id
    assert lab.node_exec(node, ["cat", BOOT_ID]).stdout.strip() == lab.node_boot_id(node)
    assert [g for g in lab.gcp_processes(user) if g.node == node] == [], why
    assert lab.node_user_state(node, user) is None, f"{node}'s state survived the reboot\n{why}"
    assert lab.leases(user) == {"ep1": node}, f"no epilog ran, yet the lease went\n{why}"
    # slurmd restarted within the same boot: slurmctld still has the job RUNNING on n1.
    # End it as an admin would; the new slurmd runs an epilog that knows nothing of it.
    lab.scancel(old)
    lab.wait_jobs([old], timeout=60)
    if lab.sinfo_states()[node].startswith("down"):  # Slurm's call, not a hook's failure
        lab.scontrol("update", f"nodename={node}", "state=resume")
    wait_for(lambda: lab.sinfo_states()[node] == "idle", 30, f"{node} idle after the reboot")

    new = lab.sbatch(user, waiting_job(lab, user, "reboot-new"), "-w", node)
    try:
        (after,) = wait_output(lab, new, user, "start")
        gcps = [g for g in lab.gcp_processes(user) if g.node == node]
        leases = lab.leases(user)
        state = lab.node_user_state(node, user)
    finally:
        release(lab, user, "reboot-new")
    info = lab.wait_jobs([new], timeout=60)[new]
    why = explain(lab, old, new, user=user)
    assert after.cli_rc == 0 and after.env_id == endpoint == after.cli_out, (
        f"no endpoint for the job after the reboot: {after}\n{why}"
    )
    assert len(gcps) == 1, f"GCPs of {user} on {node}: {gcps}\n{why}"
    assert leases == {"ep1": node}, f"leases after the reboot: {leases}\n{why}"
    # The node's state names GCP by the node's pid (its own PID namespace), not the host's.
    assert state is not None and state["instance"]["pid"] == gcps[0].node_pid, (
        f"state {state} vs {gcps[0]}\n{why}"
    )
    assert info is not None and info.state == "COMPLETED", why
    assert set(lab.sinfo_states().values()) == {"idle"}, f"a node drained\n{why}"
    assert not lab.wait_no_gcp(user, node, timeout=60), f"GCP outlived the job\n{why}"
