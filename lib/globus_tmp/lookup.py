"""What a job may know about its node's endpoint: read from node state, as the user.

Used by the TaskProlog (once per task: no lock, no network, no GCP call) and by
``globus-tmp-endpoint``. When there is no endpoint the error says why and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Config
from .errors import GlobusTmpError
from .nodestate import PHASE_FAILED, PHASE_STARTING, PHASE_STOPPING, read_state_snapshot


class NoEndpoint(GlobusTmpError):
    """This node has no usable endpoint for the user; the message says why."""


@dataclass(frozen=True)
class EndpointInfo:
    endpoint_id: str
    endpoint_name: str
    node: str
    user: str
    paths: tuple[str, ...]
    state: str
    since: float
    jobs: tuple[str, ...]
    pid: int
    log: str
    job_tmp: str | None = None
    """Where the calling job's private ``/tmp`` is on the endpoint (job_container)."""

    def as_json(self) -> dict[str, object]:
        return {
            "endpoint_id": self.endpoint_id,
            "endpoint_name": self.endpoint_name,
            "node": self.node,
            "user": self.user,
            "paths": list(self.paths),
            "state": self.state,
            "since": self.since,
            "jobs": list(self.jobs),
            "pid": self.pid,
            "log": self.log,
            "job_tmp": self.job_tmp,
        }


def lookup(cfg: Config, node: str, user: str, job_id: str | None = None) -> EndpointInfo:
    """This node's endpoint for ``user``; with ``job_id``, ``/tmp`` in ``paths`` is that
    job's private ``/tmp`` as GCP exports it, when the site gives jobs one."""
    state = read_state_snapshot(cfg.state_dir_for(node), user)
    if state is None:
        raise NoEndpoint(
            f"no globus-tmp endpoint for {user} on {node}: no job of yours has started one here "
            "(ask your admin whether globus-tmp's Prolog runs on this node)"
        )
    if state.phase == PHASE_FAILED:
        raise NoEndpoint(f"no endpoint for {user} on {node}: {state.error}")
    if state.phase == PHASE_STARTING:
        raise NoEndpoint(f"the endpoint of {user} on {node} is still starting; use --wait")
    instance = state.instance
    if instance is None:
        raise NoEndpoint(f"no endpoint for {user} on {node}: none runs (no job of yours needs it)")
    if state.phase == PHASE_STOPPING:
        raise NoEndpoint(f"the endpoint of {user} on {node} is stopping (your last job here ended)")
    if not instance.process.alive():
        raise NoEndpoint(
            f"GCP of {user} on {node} is not running (pid {instance.pid} exited); the next job "
            f"on this node restarts it; log: {instance.log_path}"
        )
    job_tmp = state.job_tmp.get(job_id) if job_id else None
    paths = tuple(job_tmp if p == "/tmp" and job_tmp else p for p in cfg.exposed_paths)
    return EndpointInfo(
        endpoint_id=instance.endpoint_id,
        endpoint_name=instance.endpoint_name,
        node=node,
        user=user,
        paths=paths,
        job_tmp=job_tmp,
        state=state.phase,
        since=instance.since,
        jobs=tuple(sorted(state.jobs, key=lambda j: (len(j), j))),
        pid=instance.pid,
        log=instance.log_path,
    )
