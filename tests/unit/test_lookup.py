"""lookup reads node state itself (the CLI's start-up): it never reads a document other
than nodestate does, and whatever it cannot vouch for, nodestate reads."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
from globus_tmp import lookup as lookup_module
from globus_tmp import nodestate
from globus_tmp.config import parse_config
from globus_tmp.lifecycle import unwatched
from globus_tmp.lookup import EndpointInfo, NoEndpoint, lookup
from globus_tmp.nodestate import GcpInstance, HeldTmp, StartRecord, UserNodeState
from globus_tmp.phases import Phase
from globus_tmp.process import ProcessRef


def test_keys_are_those_nodestate_writes() -> None:
    written = set(UserNodeState(user="a", uid=1).to_json())
    assert written | {"recovered_from"} == lookup_module._STATE_KEYS  # read, never written
    assert {f.name for f in dataclasses.fields(GcpInstance)} == (
        lookup_module._INSTANCE_KEYS | lookup_module._INSTANCE_OPTIONAL
    )


def _running_state() -> dict[str, Any]:
    me = ProcessRef.of(os.getpid())
    state = UserNodeState(user="alice", uid=1000, jobs={"12": 1.0, "7": 2.0}, phase=Phase.RUNNING)
    state.instance = GcpInstance(
        me.pid, me.start_ticks, "ep-id", "alice-ep1", "/cfg", "/cfg/log", 1700000000.5
    )
    state.job_tmp = {"12": "/tmp/held/12"}
    state.holds = {"3": HeldTmp("/h/3", 10, 1.0, ["t1"])}
    state.starting = StartRecord("ep1", None, None)
    state.stage_tasks = ["t1"]
    return state.to_json()


def _variants() -> list[Any]:
    base = _running_state()

    def changed(**kw: Any) -> dict[str, Any]:
        return {**base, **kw}

    dead = dict(base["instance"], start_ticks=base["instance"]["start_ticks"] + 1)
    return [
        base,
        changed(phase="failed", error="GCP did not connect", instance=None),
        changed(phase="starting"),
        changed(phase="stopping"),
        changed(phase="idle", instance=None),
        changed(instance=dead),
        changed(instance={}),
        changed(instance=dict(base["instance"], pid="12")),
        changed(instance={k: v for k, v in base["instance"].items() if k != "log_path"}),
        changed(version=2),
        changed(extra=1),
        changed(jobs=[]),
        changed(jobs={"5": "1.5"}),
        changed(jobs={"5": "soon"}),
        changed(job_tmp={"12": 5}),
        changed(holds={"3": {"path": "/h"}}),
        changed(holds=[]),
        changed(starting={"entry": "ep1", "other": 1}),
        changed(stage_tasks="t1"),
        changed(release_pending=[1]),
        changed(cancel_holds={"ep1": {"tasks": ["t1"], "since": 1.0, "until": 2.0}}),
        changed(cancel_holds={"ep1": {"tasks": ["t1"]}}),
        changed(cancel_holds={"ep1": {"tasks": ["t1"], "since": 1.0, "until": 2.0, "x": 1}}),
        changed(cancel_holds=[]),
        {k: v for k, v in base.items() if k != "uid"},
        [],
        "not json",
    ]


def _outcome(cfg: Any, node: str, job: str | None) -> EndpointInfo | str:
    try:
        return lookup(cfg, node, "alice", job)
    except NoEndpoint as exc:
        return str(exc)


def _old_outcome(root: Path, cfg: Any, node: str, job: str | None) -> EndpointInfo | str:
    """What lookup answered when it read node state with nodestate (its former code)."""
    state = nodestate.read_state_snapshot(root, "alice")
    user = "alice"
    if state is None:
        return (
            f"no globus-tmp endpoint for {user} on {node}: no job of yours has started one here "
            "(ask your admin whether globus-tmp's Prolog runs on this node)"
        )
    if state.phase == Phase.FAILED:
        return f"no endpoint for {user} on {node}: {state.error}"
    if state.phase == Phase.STARTING:
        return f"the endpoint of {user} on {node} is still starting; use --wait"
    inst = state.instance
    if inst is None:
        return f"no endpoint for {user} on {node}: none runs (no job of yours needs it)"
    if state.phase == Phase.STOPPING and state.jobs:  # its watcher stops it (issue 18)
        return (
            f"the endpoint of {user} on {node} did not connect and is being stopped; "
            f"log: {inst.log_path}"
        )
    if state.phase == Phase.STOPPING:
        return f"the endpoint of {user} on {node} is stopping (your last job here ended)"
    if not inst.process.alive():
        return (
            f"GCP of {user} on {node} is not running (pid {inst.pid} exited); the next job "
            f"on this node restarts it; log: {inst.log_path}"
        )
    job_tmp = state.job_tmp.get(job) if job else None
    return EndpointInfo(
        endpoint_id=inst.endpoint_id,
        endpoint_name=inst.endpoint_name,
        node=node,
        user=user,
        paths=tuple(job_tmp if p == "/tmp" and job_tmp else p for p in cfg.exposed_paths),
        job_tmp=job_tmp,
        state=state.phase,
        since=inst.since,
        jobs=tuple(sorted(state.jobs, key=lambda j: (len(j), j))),
        pid=inst.pid,
        log=inst.log_path,
    )


@pytest.mark.parametrize("index", range(len(_variants())))
@pytest.mark.parametrize("job", ["12", "7", None])
def test_lookup_answers_as_nodestate_reads(tmp_path: Path, index: int, job: str | None) -> None:
    doc = _variants()[index]
    cfg = parse_config({"state_dir": f"{tmp_path}/%n", "exposed_paths": ["/tmp", "/s"]}, "t")
    users = tmp_path / "n1" / "users"
    users.mkdir(parents=True)
    (users / "alice.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    assert _outcome(cfg, "n1", job) == _old_outcome(tmp_path / "n1", cfg, "n1", job)


def test_no_state_file_and_the_json_of_a_found_endpoint(tmp_path: Path) -> None:
    cfg = parse_config({"state_dir": f"{tmp_path}/%n"}, "t")
    assert "no job of yours has started one here" in str(_outcome(cfg, "n1", None))
    users = tmp_path / "n1" / "users"
    users.mkdir(parents=True)
    (users / "alice.json").write_text(json.dumps(_running_state()))
    info = lookup(cfg, "n1", "alice", "12")
    assert info.as_json() == {
        "endpoint_id": "ep-id",
        "endpoint_name": "alice-ep1",
        "node": "n1",
        "user": "alice",
        "paths": ["/tmp/held/12"],
        "state": "running",
        "since": 1700000000.5,
        "jobs": ["7", "12"],
        "pid": os.getpid(),
        "log": "/cfg/log",
        "job_tmp": "/tmp/held/12",
        "connected": False,  # still connecting
        "connected_at": None,
    }


def test_an_instance_written_before_connects_were_watched_counts_as_connected(
    tmp_path: Path,
) -> None:
    """An older Prolog recorded the instance only once GCP had connected, and wrote no
    ``connected``: after an upgrade it must not look like a GCP still connecting (a
    watcher would stop it, under live jobs, if a ``-status`` came late)."""
    cfg = parse_config({"state_dir": f"{tmp_path}/%n"}, "t")
    doc = _running_state()
    del doc["instance"]["connected"]
    users = tmp_path / "n1" / "users"
    users.mkdir(parents=True)
    (users / "alice.json").write_text(json.dumps(doc))
    shown = lookup(cfg, "n1", "alice", "12").as_json()
    assert shown["connected"] is True and shown["connected_at"] == 1700000000.5
    state = nodestate.read_state_snapshot(tmp_path / "n1", "alice")
    assert state is not None and state.instance is not None
    assert state.instance.connected == 1700000000.5 and not unwatched(state)
