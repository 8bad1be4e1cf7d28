"""Globus end to end: real jobs stage node-local /tmp out through the lab's Transfer API.

The lab runs the Transfer/Auth API emulator (tests/emulators/globus_api/); every GCP
connects out to it and moves real bytes. Users are logged in and their pools set up by
``globus-tmp-endpoint setup`` (``lab.make_pool``), so the epilog and the drain ask the
Transfer API, with the user's tokens, whether a task still uses the node's endpoint.
Destinations are directories under the lab root served by the emulator as collections
(standing in for another site's endpoint), so the host reads what arrived.

How a transfer is kept running until the job has ended: a fault delays the first
answers of the node's GCP to the service (so the task cannot finish in the moment it
takes the test to react), and the test pauses the task (INACTIVE, as a Globus admin
pause) as soon as the job prints its task id; it resumes the task once the job is over.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from polling import wait_for
from slurmlab import SlurmLab

from e2e.e2e_jobs import (
    GcpSampler,
    HookLogMark,
    explain,
    release,
    wait_output,
    waiting_job,
)

FINAL = ("SUCCEEDED", "FAILED")


# --------------------------------------------------------------------------- helpers


def _stage_out_script(dest: str, megabytes: int, name: str = "stage") -> str:
    """A job that fills node-local /tmp, starts a stage-out WITHOUT --wait and ends at once.

    Prints ``SHA256 <digest>`` and ``TASK <id>``. The file stays in /tmp: the transfer
    reads it after the job is gone (the node's /tmp outlives jobs, as on a cluster).
    """
    return (
        "#!/bin/bash\n"
        "set -euo pipefail\n"
        f"f=/tmp/e2e-{name}-$SLURM_JOB_ID.bin\n"
        f'head -c {megabytes}M /dev/urandom > "$f"\n'
        'sum=$(sha256sum "$f"); echo "SHA256 ${sum%% *}"\n'
        f'task=$(globus-tmp-endpoint stage-out "$f" {dest})\n'
        'echo "TASK $task"\n'
    )


def _field(output: str, key: str) -> Optional[str]:
    for line in output.splitlines():
        if line.startswith(key + " ") and line.split()[1:]:
            return line.split()[1]
    return None


def _wait_task_id(lab: SlurmLab, job: str, user: str, timeout: float = 120) -> str:
    """The task id, as soon as the job prints it (polled fast: the test races the task)."""
    found: list[str] = []

    def printed() -> bool:
        task = _field(lab.job_output(job, user), "TASK")
        if task:
            found.append(task)
            return True
        info = lab.job_info(job)
        if info is not None and not info.active and not _field(lab.job_output(job, user), "TASK"):
            raise AssertionError(f"job {job} ended without a task id")
        return False

    try:
        wait_for(printed, timeout, f"job {job} to print its task id", interval=0.05)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{explain(lab, job, user=user)}") from None
    return found[0]


def _slow_first_answers(lab: SlurmLab, endpoint: str, delay: float = 3.0, count: int = 2) -> None:
    """Delay the first ``count`` answers of ``endpoint``'s GCP to work the service asked of it.

    Margin only: the task cannot finish within ``delay`` of its start, so the test's pause
    surely lands while it is ACTIVE. Heartbeats are other routes and stay on time.
    """
    lab.api_call(
        "POST",
        "_emulator/faults",
        {
            "route": f"/_emulator/gcp/{endpoint}/work/",
            "method": "POST",
            "status": 0,
            "delay": delay,
            "count": count,
        },
    )


def _pause(lab: SlurmLab, task: str, why: str) -> None:
    view = lab.pause_task(task)
    assert view["status"] == "INACTIVE", (
        f"task {task} was {view['status']} before the test could pause it\n{why}"
    )


def _job_end(lab: SlurmLab, job: str) -> float:
    """The job's EndTime (slurmctld's local time, whole seconds) as a Unix time."""
    info = lab.job_info(job)
    assert info is not None, f"job {job} purged already"
    return time.mktime(time.strptime(info.raw["EndTime"], "%Y-%m-%dT%H:%M:%S"))


def _log_time(line: str) -> float:
    """The Unix time of a hooks.log line (``2026-11-25T03:09:17+0000 [pid] ...``)."""
    return datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S%z").timestamp()


def _lines(text: str, *needles: str) -> list[tuple[int, str]]:
    """(index, line) of the lines holding every needle, in log order."""
    return [
        (i, line) for i, line in enumerate(text.splitlines()) if all(n in line for n in needles)
    ]


def _wait_lines(
    mark: HookLogMark, node: str, *needles: str, timeout: float = 30
) -> list[tuple[int, str]]:
    """Wait for hooks.log lines holding every needle (a drain logs its stop only once GCP is
    gone and the lease is back, so "no GCP" comes slightly before the line)."""
    found: list[tuple[int, str]] = []

    def logged() -> bool:
        found[:] = _lines(mark.new_text(node), *needles)
        return bool(found)

    try:
        wait_for(logged, timeout, f"a line with {needles} in {node}'s hooks.log")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{mark.new_text(node)}") from None
    return found


def _gcp_pids(lab: SlurmLab, user: str, node: str) -> list[int]:
    """Host pids of the user's GCPs on the node (hooks.log names their node pids)."""
    return [g.pid for g in lab.gcp_processes(user) if g.node == node]


def _node_pid(lab: SlurmLab, pid: int) -> int:
    """The node's pid of a running GCP (its node is a PID namespace): what hooks.log says."""
    node_pid = lab.node_pid(pid)
    assert node_pid is not None, f"GCP host pid {pid} is on no lab node\n{explain(lab)}"
    return node_pid


def _wait_task_final_with_gcp_up(
    lab: SlurmLab, task: str, user: str, node: str, pid: int, timeout: float = 120
) -> dict[str, Any]:
    """Wait for the task to end, checking all along that the node's GCP outlives it.

    GCP is looked at *before* the task each round: GCP gone while the task, asked after,
    is still not over means GCP stopped under a live transfer.
    """
    deadline = time.monotonic() + timeout
    while True:
        alive = pid in _gcp_pids(lab, user, node)
        state = lab.api_task(task)
        if state["status"] in FINAL:
            return state
        assert alive, f"GCP (host pid {pid}) on {node} stopped, task {task} was {state['status']}"
        assert time.monotonic() < deadline, f"task {task} still {state['status']} after {timeout}s"
        time.sleep(0.2)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _rm_node_tmp(lab: SlurmLab, node: str, pattern: str) -> None:
    lab.node_exec(node, ["sh", "-c", f"rm -f /tmp/{pattern}"])


# --------------------------------------------------------------------------- tests


def test_stage_out_without_wait_finishes_after_the_job_and_then_gcp_stops(lab: SlurmLab) -> None:
    """200 MB staged out by a job that ends at once: the drain keeps GCP up on the Transfer
    API's word until the task is done, the bytes arrive intact, then GCP stops."""
    user, node = "gtalice", "n1"
    (endpoint,) = lab.make_pool(user, 1)
    collection, root = lab.create_collection("stage-out")
    mark = HookLogMark(lab)
    _slow_first_answers(lab, endpoint)
    job = lab.sbatch(user, _stage_out_script(f"{collection}:/out.bin", 200), "-w", node)
    try:
        task = _wait_task_id(lab, job, user)
        # Paused from the test right after the job printed its id; resumed after the job ended.
        _pause(lab, task, explain(lab, job, user=user))
        info = lab.wait_jobs([job], timeout=60)[job]
        why = explain(lab, job, user=user)
        assert info is not None and (info.state, info.exit_code) == ("COMPLETED", "0:0"), why
        job_end = _job_end(lab, job)
        digest = _field(lab.job_output(job, user), "SHA256")
        assert digest and len(digest) == 64, why

        log = mark.new_text(node)
        epilog = _lines(log, f"epilog job={job} ", "drain pid")
        assert epilog and task in epilog[0][1], f"the epilog did not name the live task\n{why}"
        (pid,) = _gcp_pids(lab, user, node) or (None,)
        assert pid is not None, f"GCP stopped with the task still live\n{why}"
        node_pid = _node_pid(lab, pid)
        hits = lab.api_state()["route_hits"].get("task_list", 0)
        # GCP itself goes idle (the task is paused): only the Transfer API knows it is live.
        time.sleep(5)
        assert _gcp_pids(lab, user, node) == [pid], f"GCP did not stay up\n{explain(lab)}"
        polled = lab.api_state()["route_hits"].get("task_list", 0) - hits
        assert polled >= 1, "the drain never asked the Transfer API"

        lab.pause_task(task, pause=False)
        state = _wait_task_final_with_gcp_up(lab, task, user, node, pid)
        assert state["status"] == "SUCCEEDED", f"{state}\n{explain(lab)}"
        assert state["_completed_ts"] > job_end + 1, (
            f"task completed at {state['completion_time']}, job ended {info.raw['EndTime']}"
        )
        assert _sha256(root / "out.bin") == digest, "the destination file differs"

        assert not lab.wait_no_gcp(user, node, timeout=30), (
            f"GCP outlived the drain\n{explain(lab)}"
        )
        stops = _wait_lines(mark, node, "drain ", f"GCP pid {node_pid} stopped", "transfer over")
        log = mark.new_text(node)
        assert len(stops) == 1, f"want one drain stop line\n{log}"
        assert stops[0][0] > epilog[0][0], log
        assert _log_time(stops[0][1]) >= int(state["_completed_ts"]), (
            f"GCP stopped before the task completed ({state['completion_time']})\n{log}"
        )
    finally:
        _rm_node_tmp(lab, node, f"e2e-stage-{job}.bin")
        (root / "out.bin").unlink(missing_ok=True)


def test_a_job_arriving_during_the_drain_joins_the_lingering_gcp(lab: SlurmLab) -> None:
    """While a drain waits for a transfer, a new job of the user on the node joins that GCP
    (same pid) instead of starting one; GCP stops only once the task is over."""
    user, node = "gtbob", "n2"
    (endpoint,) = lab.make_pool(user, 1)
    collection, root = lab.create_collection("drain-join")
    mark = HookLogMark(lab)
    _slow_first_answers(lab, endpoint)
    first = lab.sbatch(user, _stage_out_script(f"{collection}:/joined.bin", 20), "-w", node)
    second = ""
    try:
        task = _wait_task_id(lab, first, user)
        _pause(lab, task, explain(lab, first, user=user))  # live until the test resumes it
        lab.wait_jobs([first], timeout=60)
        why = explain(lab, first, user=user)
        assert _lines(mark.new_text(node), f"epilog job={first} ", "drain pid", task), why
        (pid,) = _gcp_pids(lab, user, node) or (None,)
        assert pid is not None, f"no GCP draining on {node}\n{why}"
        node_pid = _node_pid(lab, pid)
        digest = _field(lab.job_output(first, user), "SHA256")

        with GcpSampler(lab, user, node) as sampler:
            second = lab.sbatch(user, waiting_job(lab, user, "drain-join"), "-w", node)
            (probe,) = wait_output(lab, second, user, "start")
            why = explain(lab, first, second, user=user)
            assert probe.cli_rc == 0 and probe.env_id == endpoint == probe.cli_out, why
            joined = _lines(mark.new_text(node), f"prolog job={second} ")
            assert joined, why
            assert f"joined GCP pid {node_pid}" in joined[0][1], why
            assert "during its drain" in joined[0][1], why
            wait_for(
                lambda: bool(_lines(mark.new_text(node), "drain ", f"job(s) {second} joined")),
                15,
                "the drain to see the job join and step aside",
            )
            release(lab, user, "drain-join")
            lab.wait_jobs([second], timeout=60)
            # The task is still paused: the second job's epilog drains again, same GCP.
            again = _lines(mark.new_text(node), f"epilog job={second} ", "drain pid", task)
            assert again, explain(lab, second, user=user)
            lab.pause_task(task, pause=False)
            state = _wait_task_final_with_gcp_up(lab, task, user, node, pid)
            assert not lab.wait_no_gcp(user, node, timeout=30), explain(lab)
        why = explain(lab, first, second, user=user)
        assert state["status"] == "SUCCEEDED", f"{state}\n{why}"
        assert _sha256(root / "joined.bin") == digest, why
        assert sampler.pids == {pid} and sampler.max_seen == 1, (
            f"GCPs seen on {node}: {sampler.pids}, at most {sampler.max_seen} at once\n{why}"
        )
        assert len(mark.started_lines(node, user)) == 1, why
        _wait_lines(mark, node, "drain ", f"GCP pid {node_pid} stopped", "transfer over")
    finally:
        _rm_node_tmp(lab, node, f"e2e-stage-{first}.bin")
        (root / "joined.bin").unlink(missing_ok=True)


def test_a_transfer_that_cannot_finish_is_given_up_at_linger_max(lab: SlurmLab) -> None:
    """Destination: the user's second endpoint, whose GCP never runs, so the task stays
    ACTIVE for ever. At linger_max the drain cancels it (issue 18), names it, and stops
    GCP."""
    user, node, linger_max = "gtcarol", "n3", 6
    _, offline = lab.make_pool(user, 2)
    # out of the pool, so no job can lease it (which entry a job leases first depends on
    # its job id): its endpoint stays known to Globus, with no GCP ever
    shutil.rmtree(lab.pool_dir(user) / "ep2")
    lab.write_globus_tmp_conf(linger_max=linger_max)
    mark = HookLogMark(lab)
    job = lab.sbatch(user, _stage_out_script(f"{offline}:/tmp/never.bin", 5), "-w", node)
    task = ""
    try:
        task = _wait_task_id(lab, job, user)
        info = lab.wait_jobs([job], timeout=60)[job]
        why = explain(lab, job, user=user)
        assert info is not None and info.state == "COMPLETED", why
        epilog = _lines(mark.new_text(node), f"epilog job={job} ", "drain pid", task)
        assert epilog, why
        assert f"at most {linger_max} s" in epilog[0][1], why
        assert _gcp_pids(lab, user, node), f"GCP stopped under the live task\n{why}"

        assert not lab.wait_no_gcp(user, node, timeout=linger_max + 30), explain(lab)
        stop = _wait_lines(mark, node, "drain ", "stopped", "lease ep1 released")
        log = mark.new_text(node)
        gave_up = _lines(log, "drain ", f"gave up after linger_max={linger_max}")
        assert gave_up, f"no 'gave up' line\n{log}"
        assert all(task in line for _, line in gave_up), f"the task id is not logged\n{log}"
        assert stop and "gave up" in stop[0][1] and task in stop[0][1], log
        waited = _log_time(stop[0][1]) - _log_time(epilog[0][1])
        assert linger_max - 1 <= waited <= linger_max + 15, f"drained {waited:.0f} s\n{log}"
        assert any(f"task {task}" in line and "cancelled" in line for _, line in gave_up), log
        done = lab.api_task(task)  # not left to resume from the /tmp of ep1's next node
        assert done["status"] == "FAILED" and done["fatal_error"]["code"] == "CANCELED", done
    finally:
        if task:
            lab.cancel_task(user, task)  # if the drain did not: the emulator retries for a day
        _rm_node_tmp(lab, node, f"e2e-stage-{job}.bin")


def test_setup_in_a_job_then_jobs_on_two_nodes_use_the_new_endpoints(lab: SlurmLab) -> None:
    """A logged-in user with no pool runs ``globus-tmp-endpoint setup --count 2`` in a job;
    then jobs on two nodes at once each get one of those two endpoints, connected in Globus."""
    user = "gtalice"
    lab.login(user)
    setup = lab.sbatch(
        user,
        "#!/bin/bash\nglobus-tmp-endpoint setup --count 2\necho SETUP_RC $?\n",
        "-w",
        "n3",
    )
    lab.wait_jobs([setup], timeout=120)
    output = lab.job_output(setup, user)
    why = explain(lab, setup, user=user)
    assert _field(output, "SETUP_RC") == "0", why
    assert "pool of 2 endpoint(s) ready" in output, why
    ids = [lab.pool_endpoint_id(user, name) for name in ("ep1", "ep2")]
    assert len(set(ids)) == 2, ids
    known = lab.api_state()["endpoints"]
    for endpoint in ids:
        assert endpoint in known, f"{endpoint} unknown to Globus"
        name = known[endpoint]["display_name"]
        assert re.match(rf"globus-tmp {user} ep\d ", name), name

    jobs = {
        n: lab.sbatch(user, waiting_job(lab, user, f"setup-{n}"), "-w", n) for n in ("n1", "n2")
    }
    try:
        probes = {n: wait_output(lab, j, user, "start")[0] for n, j in jobs.items()}

        def connected() -> set[str]:  # the jobs did not wait for it (start_wait)
            sessions = lab.api_call("GET", "_emulator/gcp")["sessions"]
            return {s["endpoint_id"] for s in sessions if s["connected"]}

        wait_for(lambda: set(ids) <= connected(), timeout=60, what="both GCPs to connect")
    finally:
        for n in jobs:
            release(lab, user, f"setup-{n}")
    lab.wait_jobs(list(jobs.values()), timeout=60)
    why = explain(lab, setup, *jobs.values(), user=user)
    for p in probes.values():
        assert p.cli_rc == 0 and p.env_id == p.cli_out, why
    assert sorted(p.env_id for p in probes.values()) == sorted(ids), why


def test_a_draining_entry_is_never_started_on_another_node(lab: SlurmLab) -> None:
    """Issue "leases": pool of one, a drain on n1 keeps its GCP up for a live task; a job of
    the same user on n2 must not start a second GCP from that config dir (the old
    registry reclaimed a lease when the holder node had no job). The job is told why in
    one line; once the drain ends, the entry is free for n2."""
    user, first_node, second_node = "gtcarol", "n1", "n2"
    (endpoint,) = lab.make_pool(user, 1)
    collection, root = lab.create_collection("lease-drain")
    mark = HookLogMark(lab)
    _slow_first_answers(lab, endpoint)
    first = lab.sbatch(user, _stage_out_script(f"{collection}:/lease.bin", 5), "-w", first_node)
    second = third = ""
    try:
        task = _wait_task_id(lab, first, user)
        _pause(lab, task, explain(lab, first, user=user))
        lab.wait_jobs([first], timeout=60)
        why = explain(lab, first, user=user)
        assert _lines(mark.new_text(first_node), f"epilog job={first} ", "drain pid", task), why
        with GcpSampler(lab, user, second_node) as on_second:
            second = lab.sbatch(user, waiting_job(lab, user, "lease-drain"), "-w", second_node)
            (probe,) = wait_output(lab, second, user, "start")
            why = explain(lab, first, second, user=user)
            assert probe.cli_rc == 1 and not probe.env_id, why
            assert "pool exhausted" in probe.cli_out and "draining until" in probe.cli_out, why
            assert [g.node for g in lab.gcp_processes(user)] == [first_node], why
            lab.pause_task(task, pause=False)
            _wait_lines(mark, first_node, "drain ", "transfer over", "lease ep1 released")
            release(lab, user, "lease-drain")
            lab.wait_jobs([second], timeout=60)
        assert on_second.max_seen == 0, f"a GCP ran on {second_node} during the drain\n{why}"
        third = lab.sbatch(user, waiting_job(lab, user, "lease-after"), "-w", second_node)
        (probe,) = wait_output(lab, third, user, "start")
        assert probe.cli_rc == 0 and probe.env_id == endpoint, explain(lab, third, user=user)
        release(lab, user, "lease-after")
        lab.wait_jobs([third], timeout=60)
        assert not lab.wait_no_gcp(user, second_node, timeout=60), explain(lab)
    finally:
        _rm_node_tmp(lab, first_node, f"e2e-stage-{first}.bin")
        (root / "lease.bin").unlink(missing_ok=True)
