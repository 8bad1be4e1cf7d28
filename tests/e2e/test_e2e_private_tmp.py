"""A private /tmp per job (job_container/tmpfs) served by the user's GCP, on the real lab.

The lab switches on ``JobContainerType=job_container/tmpfs`` (``NamespaceType=namespace/tmpfs``
on 25.11) with the SPANK plugin (spank/) running the real ``globus-tmp-privatetmp`` in each
job's extern step, and on 24.11+ also with job_container.conf's CloneNSScript/CloneNSEpilog
running it instead. A job's
``/tmp`` is then not the node's: globus-tmp binds it under
``<state_dir>/jobtmp/<user>/<job>``, which the user's one GCP exports, and holds it past
the job for a declared stage-out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from polling import wait_for
from slurmlab import SlurmLab

from e2e.e2e_jobs import (
    GcpSampler,
    explain,
    flag_path,
    output_field,
    release,
    sha256_file,
)

NODE = "n1"


@pytest.fixture(scope="module", params=["spank", "clonens"])
def jc_lab(lab: SlurmLab, request: pytest.FixtureRequest) -> Iterator[SlurmLab]:
    """The private /tmp exported by the SPANK plugin, and (Slurm 24.11+) by
    job_container.conf's CloneNSScript/CloneNSEpilog instead."""
    clonens = request.param == "clonens"
    if clonens and not lab.slurm.clonens:
        pytest.skip(
            f"CloneNSScript/CloneNSEpilog need Slurm 24.11+; the lab runs {lab.slurm_version}"
        )
    lab.cancel_all_jobs()
    lab.kill_gcp()
    lab.set_job_container(True, clonens=clonens)
    try:
        yield lab
    finally:
        lab.cancel_all_jobs()
        lab.set_job_container(False)


def _variant(lab: SlurmLab) -> str:
    return "clonens" if lab.clonens else "spank"


def _wait_line(lab: SlurmLab, job: str, user: str, key: str, timeout: float = 120) -> str:
    def printed() -> bool:
        return any(line.startswith(key + " ") for line in lab.job_output(job, user).splitlines())

    wait_for(printed, timeout, f"job {job} to print {key}")
    return output_field(lab.job_output(job, user), key)


def _holds(lab: SlurmLab, node: str) -> list[str]:
    hold = lab.job_tmp_base / node / ".globus-tmp-hold"
    return sorted(p.name for p in hold.iterdir()) if hold.exists() else []


def test_a_timed_out_job_with_a_private_tmp_still_stages_out(jc_lab: SlurmLab) -> None:
    lab, user = jc_lab, "gtcarol"
    lab.make_pool(user, 1)
    # one collection per variant: a file left by the other one would be "in sync"
    collection, root = lab.create_collection(f"private-timeout-{_variant(lab)}")
    script = (
        "#!/bin/bash\nset -euo pipefail\n"
        f"globus-tmp-endpoint stage-out --at-exit /tmp/out.bin {collection}:/out.bin\n"
        "head -c 200M /dev/urandom > /tmp/out.bin\n"
        'sum=$(sha256sum /tmp/out.bin); echo "SHA256 ${sum%% *}"\n'
        'echo "PATHS $GLOBUS_TMP_PATHS"\n'
        "sleep 600\n"
    )
    job = lab.sbatch(user, script, "-w", NODE, "--time=1")
    paths = _wait_line(lab, job, user, "PATHS")
    assert paths.endswith(lab.job_tmp_export(user, job)), paths
    assert lab.job_tmp_dir(NODE, job).joinpath("out.bin").exists()
    on_node = lab.node_exec(NODE, ["test", "-e", "/tmp/out.bin"])
    assert on_node.returncode != 0, "the job's /tmp is the node's: job_container is off?"
    info = lab.wait_jobs([job], timeout=240)[job]
    assert info is not None and info.state == "TIMEOUT", explain(lab, job, user=user)
    digest = output_field(lab.job_output(job, user), "SHA256")
    assert not lab.wait_no_gcp(user, timeout=180), explain(lab, job, user=user)
    assert (root / "out.bin").exists(), explain(lab, job, user=user)
    res = lab.endpoint_cli(user, "stage-status", job, "--json")
    (row,) = json.loads(res.stdout)
    assert row["state"] == "succeeded" and row["held"] is True, (row, explain(lab, job, user=user))
    assert sha256_file(root / "out.bin") == digest, explain(lab, job, user=user)
    assert _holds(lab, NODE) == []  # the hold was freed once the transfer ended
    assert not lab.job_container_dir(NODE, job).parent.exists()  # Slurm's teardown went through
    log = lab.hook_log(NODE)
    assert "held at" in log and f"hold {lab.job_tmp_base / NODE}" in log, log


def test_two_jobs_each_see_their_own_private_tmp_through_one_gcp(jc_lab: SlurmLab) -> None:
    lab, user = jc_lab, "gtdave"
    lab.make_pool(user, 1)
    collection, root = lab.create_collection(f"private-two-{_variant(lab)}")
    script = (
        "#!/bin/bash\nset -euo pipefail\n"
        'echo "mine $SLURM_JOB_ID" > /tmp/mine-$SLURM_JOB_ID.dat\n'
        "echo \"JOBTMP $(globus-tmp-endpoint --json | python3 -c 'import json,sys; "
        'print(json.load(sys.stdin)["job_tmp"])\')"\n'
        f"while [ ! -e {flag_path(lab, user, 'both')} ]; do sleep 0.2; done\n"
        f"globus-tmp-endpoint stage-out /tmp/ {collection}:/$SLURM_JOB_ID/ --wait\n"
    )
    with GcpSampler(lab, user, NODE) as sampler:
        jobs = [lab.sbatch(user, script, "-w", NODE) for _ in range(2)]
        paths = {job: _wait_line(lab, job, user, "JOBTMP") for job in jobs}
        # another user on the same node, through their own endpoint and directly: nothing
        lab.make_pool("gtbob", 1)
        theirs = f"{paths[jobs[0]]}/mine-{jobs[0]}.dat"
        thief = lab.sbatch(
            "gtbob",
            "#!/bin/bash\n"
            f"globus-tmp-endpoint stage-out {theirs} {collection}:/stolen.dat --wait\n"
            'echo "STAGE $?"\n'
            f'cat {theirs} >/dev/null 2>&1; echo "READ $?"\n',
            "-w",
            NODE,
        )
        lab.wait_jobs([thief], timeout=120)
        release(lab, user, "both")
        done = lab.wait_jobs(jobs, timeout=120)
    assert all(i is not None and i.state == "COMPLETED" for i in done.values()), explain(
        lab, *jobs, user=user
    )
    stolen = lab.job_output(thief, "gtbob")
    assert output_field(stolen, "STAGE") != "0" and output_field(stolen, "READ") != "0", stolen
    assert not (root / "stolen.dat").exists()
    assert sampler.max_seen == 1  # one GCP for both jobs
    assert len(set(paths.values())) == 2, paths
    for job in jobs:
        assert paths[job].endswith(lab.job_tmp_export(user, job))
        assert sorted(p.name for p in (root / job).iterdir()) == [f"mine-{job}.dat"]
    assert not lab.wait_no_gcp(user, timeout=120)
    assert not lab.wait_no_gcp("gtbob", timeout=120)
    wait_for(lambda: _holds(lab, NODE) == [], timeout=30, what="no hold")
