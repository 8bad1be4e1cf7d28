"""Fixtures for the end-to-end tests: a real Slurm cluster (tests/lab) with the hooks.

``lab`` (session): brings up a 3-node lab (each node its own PID and mount namespace,
``PrologFlags=Alloc,Contain``) with the checkout installed as the hooks and ALWAYS
takes it down at the end, so a test run leaves no daemon, job or GCP behind.
Each test then starts from a clean lab (autouse ``clean_lab``): no jobs, default
globus-tmp.conf and GCP wrapper, empty pools, no GCP running, no fault injected into the
lab's Globus API emulator (which runs for the whole session: every GCP connects to it).

These tests need root (slurmd, munged, users); as root they always run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from slurmlab import GCP_WRAPPER, SlurmLab

from e2e.e2e_jobs import clear_flags, install_probe

NODES = 3
CPUS_PER_NODE = 64
"""test_e2e_faults's storm runs 64 one-CPU jobs at once on one node (CR_CPU: no sharing)."""


@pytest.fixture(scope="session")
def lab() -> Iterator[SlurmLab]:
    if os.geteuid() != 0:
        pytest.skip("the Slurm lab needs root")
    the_lab = SlurmLab(nodes=NODES, hooks=True, verbose=True, cpus_per_node=CPUS_PER_NODE)
    try:
        the_lab.up()
        install_probe(the_lab)
        yield the_lab
    finally:
        the_lab.down()
        the_lab.clear_job_outputs()
        clear_flags(the_lab)


@pytest.fixture(autouse=True)
def clean_lab(lab: SlurmLab) -> Iterator[SlurmLab]:
    """Every test starts idle, with the default config and GCP wrapper, and no pools.

    Afterwards, a GCP still running once every job is over is that test's failure (the
    epilog should have stopped it); it is killed so the next test starts clean.
    """
    lab.cancel_all_jobs()
    lab.kill_gcp()
    lab.write_gcp_wrapper(GCP_WRAPPER)
    lab.write_globus_tmp_conf()
    lab.api_call("DELETE", "_emulator/faults")
    for user in lab.users:
        lab.clear_pool(user)
    clear_flags(lab)
    yield lab
    lab.cancel_all_jobs()
    left = lab.wait_no_gcp(timeout=60)
    lab.kill_gcp()
    lab.write_gcp_wrapper(GCP_WRAPPER)
    lab.write_globus_tmp_conf()
    lab.api_call("DELETE", "_emulator/faults")
    clear_flags(lab)
    if left:
        pytest.fail(f"GCP still running 60 s after the last job ended: {left}")
