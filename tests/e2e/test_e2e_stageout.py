"""Stage-out declared in the job and run at its end, on the real Slurm lab.

A job declares ``globus-tmp-endpoint stage-out --at-exit SRC DEST`` early; the Epilog
submits the transfer as the user once the job is over on the node, however it ended
(here: killed at its time limit), and the drain keeps GCP up until Globus reports the
task finished. ``stage-status`` runs on the host, outside every node's namespaces, as a
login node would.
"""

from __future__ import annotations

import json

from slurmlab import SlurmLab

from e2e.e2e_jobs import explain, output_field, sha256_file


def _declaring_job(dest: str, megabytes: int, name: str, then: str = "sleep 600") -> str:
    """Declares the stage-out first, then writes the data, prints its digest, then ``then``."""
    return (
        "#!/bin/bash\n"
        "set -euo pipefail\n"
        f"f=/tmp/e2e-{name}-$SLURM_JOB_ID.bin\n"
        f'globus-tmp-endpoint stage-out --at-exit "$f" {dest}\n'
        f'head -c {megabytes}M /dev/urandom > "$f"\n'
        'sum=$(sha256sum "$f"); echo "SHA256 ${sum%% *}"\n'
        f"{then}\n"
    )


def _status(lab: SlurmLab, user: str, job: str) -> list[dict[str, object]]:
    res = lab.endpoint_cli(user, "stage-status", job, "--json")
    assert res.returncode == 0, res.stderr
    return list(json.loads(res.stdout))


def test_a_job_killed_at_its_time_limit_still_stages_out(lab: SlurmLab) -> None:
    user = "gtalice"
    lab.make_pool(user, 1)
    collection, root = lab.create_collection("stage-timeout")
    job = lab.sbatch(user, _declaring_job(f"{collection}:/out.bin", 200, "timeout"), "--time=1")
    info = lab.wait_jobs([job], timeout=240)[job]
    assert info is not None and info.state == "TIMEOUT", explain(lab, job, user=user)
    digest = output_field(lab.job_output(job, user), "SHA256")
    assert not lab.wait_no_gcp(user, timeout=180), explain(lab, job, user=user)
    assert sha256_file(root / "out.bin") == digest
    (row,) = _status(lab, user, job)
    assert row["state"] == "succeeded" and row["bytes_transferred"] == 200 * 1024 * 1024, row
    log = lab.hook_log(str(row["node"])).splitlines()
    done = next(i for i, line in enumerate(log) if f"task {row['task_id']} SUCCEEDED" in line)
    stopped = next(i for i, line in enumerate(log) if "GCP pid" in line and "stopped (" in line)
    assert done < stopped, "\n".join(log[-20:])  # GCP stopped only once the task had ended
    text = lab.endpoint_cli(user, "stage-status", job).stdout
    assert "succeeded" in text and str(row["task_id"]) in text


def test_a_refused_stage_out_is_reported_and_gcp_stops(lab: SlurmLab) -> None:
    user = "gtbob"
    lab.make_pool(user, 1)
    collection, root = lab.create_collection("stage-readonly", writable=False)
    job = lab.sbatch(user, _declaring_job(f"{collection}:/out.bin", 1, "refused", then="true"))
    info = lab.wait_jobs([job], timeout=120)[job]
    assert info is not None and info.state == "COMPLETED", explain(lab, job, user=user)
    assert not lab.wait_no_gcp(user, timeout=120), explain(lab, job, user=user)
    (row,) = _status(lab, user, job)
    assert row["state"] == "failed" and "PERMISSION_DENIED" in str(row["error"]), row
    assert "PERMISSION_DENIED" in lab.hook_log(str(row["node"]))
    assert not (root / "out.bin").exists()
