"""GCP stops after the user's last job on a node, whatever order the jobs end in.

Jobs end on command (a flag file: they complete normally; or ``scancel``), so every order
is exercised exactly. The three nodes run three orders at once, two rounds cover all six
permutations of three jobs; the middle-submitted job always ends by ``scancel``.
"""

from __future__ import annotations

import itertools

import pytest
from slurmlab import SlurmLab

from e2e.e2e_jobs import explain, release, wait_output, waiting_job

ORDERS = list(itertools.permutations(range(3)))
ROUNDS = [ORDERS[:3], ORDERS[3:]]
CANCELLED = 1  # index of the job that ends by scancel


@pytest.mark.parametrize("orders", ROUNDS, ids=["orders-1-3", "orders-4-6"])
def test_gcp_stops_after_the_last_job_in_any_order(
    lab: SlurmLab, orders: list[tuple[int, ...]]
) -> None:
    user = "gtcarol"
    lab.make_pool(user, len(lab.nodes))
    plan = dict(zip(lab.nodes, orders))
    jobs = {
        node: [
            lab.sbatch(user, waiting_job(lab, user, f"{node}-{i}"), "-w", node) for i in range(3)
        ]
        for node in plan
    }
    all_jobs = [j for js in jobs.values() for j in js]
    for j in all_jobs:
        wait_output(lab, j, user, "start")
    first = {g.node: g.pid for g in lab.gcp_processes(user)}
    assert set(first) == set(plan), f"GCPs: {lab.gcp_processes(user)}\n{explain(lab)}"

    for step in range(3):
        ended = []
        for node, order in plan.items():
            idx = order[step]
            job = jobs[node][idx]
            if idx == CANCELLED:
                lab.scancel(job)
            else:
                release(lab, user, f"{node}-{idx}")
            ended.append(job)
        infos = lab.wait_jobs(ended, timeout=60)
        for job, info in infos.items():
            idx = next(js.index(job) for js in jobs.values() if job in js)
            want = "CANCELLED" if idx == CANCELLED else "COMPLETED"
            assert info is not None and info.state == want, explain(lab, job, user=user)
        if step < 2:
            now = {g.node: g.pid for g in lab.gcp_processes(user)}
            assert now == first, (
                f"after step {step} of {plan}, GCPs were {first}, now {now}: a GCP stopped "
                f"or restarted while the user still had jobs on the node\n{explain(lab)}"
            )

    for node in plan:
        left = lab.wait_no_gcp(user, node, timeout=60)
        assert not left, f"GCP of {user} on {node} still runs after the last job\n{explain(lab)}"
    assert lab.gcp_processes() == [], explain(lab)
