"""What a job may know about its node's endpoint: read from node state, as the user.

Used by the TaskProlog (once per task: no lock, no network, no GCP call) and by
``globus-tmp-endpoint``. When there is no endpoint the error says why and what to do.

This is the start-up of ``globus-tmp-endpoint`` in every job (``bench/hot_paths.py``:
at most 3x a bare interpreter), so it reads the common case of a state file itself,
with ``json`` and ``/proc`` only, instead of importing ``nodestate`` (dataclasses,
pathlib, locks). It may refuse more than ``nodestate`` does, never accept more: any
document it cannot vouch for is read again by :func:`nodestate.read_state_snapshot`,
which gives the one true state or "unreadable" message.
"""

from __future__ import annotations

import json
import os

from .boundedio import STATE, read_text_bounded
from .errors import GlobusTmpError
from .phases import STATE_VERSION, Phase
from .process import ProcessRef

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from typing import Any, Protocol

    class LookupSettings(Protocol):
        """What a lookup needs of the configuration (a Config or a LookupConfig)."""

        @property
        def exposed_paths(self) -> tuple[str, ...]: ...

        def state_dir_for(self, node: str) -> str | os.PathLike[str]: ...


_INSTANCE_KEYS = frozenset(
    {"pid", "start_ticks", "endpoint_id", "endpoint_name", "config_dir", "log_path", "since"}
)
_INSTANCE_OPTIONAL = frozenset({"connected"})
_STATE_KEYS = frozenset(
    {
        "version",
        "user",
        "uid",
        "jobs",
        "phase",
        "instance",
        "error",
        "error_at",
        "drain_pid",
        "drain_start_ticks",
        "drain_until",
        "drain_tasks",
        "starting",
        "watch_pid",
        "watch_start_ticks",
        "idle_until",
        "release_pending",
        "job_tmp",
        "holds",
        "stage_tasks",
        "cancel_holds",
        "updated",
        "recovered_from",
    }
)
"""Every key of nodestate's UserNodeState document; any other one goes to nodestate
(tests/unit/test_lookup.py compares them with what nodestate writes)."""


class NoEndpoint(GlobusTmpError):
    """This node has no usable endpoint for the user; the message says why."""


class EndpointChanging(NoEndpoint):
    """Not yet known: GCP is starting, or its watcher is stopping one that did not
    connect (``--wait`` waits for the outcome; every other :class:`NoEndpoint` is an
    answer that waiting would not change)."""


class EndpointInfo:
    """This node's endpoint for the user, as the lookup found it (a plain class, not a
    dataclass: it is defined on the lookup's start-up path)."""

    __slots__ = (
        "connected",
        "endpoint_id",
        "endpoint_name",
        "job_tmp",
        "jobs",
        "log",
        "node",
        "paths",
        "pid",
        "since",
        "state",
        "user",
    )

    def __init__(
        self,
        endpoint_id: str,
        endpoint_name: str,
        node: str,
        user: str,
        paths: tuple[str, ...],
        state: str,
        since: float,
        jobs: tuple[str, ...],
        pid: int,
        log: str,
        job_tmp: str | None = None,
        connected: float | None = None,
    ) -> None:
        self.endpoint_id = endpoint_id
        self.endpoint_name = endpoint_name
        self.node = node
        self.user = user
        self.paths = paths
        self.state = state
        self.since = since
        self.jobs = jobs
        self.pid = pid
        self.log = log
        self.job_tmp = job_tmp
        """Where the calling job's private ``/tmp`` is on the endpoint (job_container)."""
        self.connected = connected
        """When GCP said ``connected``; None while it connects (the job did not wait for
        it: tasks submitted meanwhile are queued by Globus and run once it connects)."""

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
            "connected": self.connected is not None,
            "connected_at": self.connected,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EndpointInfo):
            return NotImplemented
        return self.as_json() == other.as_json()

    def __repr__(self) -> str:
        return f"EndpointInfo({self.as_json()!r})"


class _StateView:
    """The few fields of a user's node state that a lookup reads."""

    __slots__ = ("error", "instance", "job_tmp", "jobs", "phase")

    def __init__(
        self,
        phase: object,
        error: object,
        instance: dict[str, Any] | None,
        jobs: list[str],
        job_tmp: dict[str, str],
    ) -> None:
        self.phase, self.error, self.instance = phase, error, instance
        self.jobs, self.job_tmp = jobs, job_tmp


def lookup(cfg: LookupSettings, node: str, user: str, job_id: str | None = None) -> EndpointInfo:
    """This node's endpoint for ``user``; with ``job_id``, ``/tmp`` in ``paths`` is that
    job's private ``/tmp`` as GCP exports it, when the site gives jobs one."""
    state = _read_state(os.path.join(cfg.state_dir_for(node), "users", f"{user}.json"), user)
    if state is None:
        raise NoEndpoint(
            f"no globus-tmp endpoint for {user} on {node}: no job of yours has started one here "
            "(ask your admin whether globus-tmp's Prolog runs on this node)"
        )
    if state.phase == Phase.FAILED:
        raise NoEndpoint(f"no endpoint for {user} on {node}: {state.error}")
    if state.phase == Phase.STARTING:
        raise EndpointChanging(f"the endpoint of {user} on {node} is still starting; use --wait")
    instance = state.instance
    if instance is None:
        raise NoEndpoint(f"no endpoint for {user} on {node}: none runs (no job of yours needs it)")
    if state.phase == Phase.STOPPING and state.jobs:
        raise EndpointChanging(
            f"the endpoint of {user} on {node} did not connect and is being stopped; "
            f"log: {instance['log_path']}"
        )
    if state.phase == Phase.STOPPING:
        raise NoEndpoint(f"the endpoint of {user} on {node} is stopping (your last job here ended)")
    if not ProcessRef(instance["pid"], instance["start_ticks"]).alive():
        changing = EndpointChanging if _connected(instance) is None else NoEndpoint
        raise changing(
            f"GCP of {user} on {node} is not running (pid {instance['pid']} exited); the next "
            f"job on this node restarts it; log: {instance['log_path']}"
        )
    job_tmp = state.job_tmp.get(job_id) if job_id else None
    paths = tuple(job_tmp if p == "/tmp" and job_tmp else p for p in cfg.exposed_paths)
    return EndpointInfo(
        endpoint_id=instance["endpoint_id"],
        endpoint_name=instance["endpoint_name"],
        node=node,
        user=user,
        paths=paths,
        job_tmp=job_tmp,
        state=state.phase,  # type: ignore[arg-type]  # as nodestate has it
        since=instance["since"],
        jobs=tuple(sorted(state.jobs, key=lambda j: (len(j), j))),
        pid=instance["pid"],
        log=instance["log_path"],
        connected=_connected(instance),
    )


def _read_state(path: str, user: str) -> _StateView | None:
    """The user's node state (None if there is none), read without a lock."""
    try:
        text = read_text_bounded(path, STATE)
    except FileNotFoundError:
        return None
    except OSError:
        text = None
    view = _vouched_view(text) if text is not None else None
    if view is not None:
        return view
    return _view_from_nodestate(os.path.dirname(os.path.dirname(path)), user)


def _connected(instance: dict[str, Any]) -> Any:
    """When GCP connected; an instance written before connects were watched has no
    such key, and was recorded only once connected (as ``nodestate`` reads it)."""
    return instance.get("connected", instance.get("since"))


def _view_from_nodestate(root: str, user: str) -> _StateView | None:
    """nodestate's own reading, for every document :func:`_vouched_view` refuses."""
    from pathlib import Path

    from .nodestate import read_state_snapshot

    state = read_state_snapshot(Path(root), user)
    if state is None:
        return None
    inst = state.instance
    instance = None
    if inst is not None:
        instance = {
            "pid": inst.pid,
            "start_ticks": inst.start_ticks,
            "endpoint_id": inst.endpoint_id,
            "endpoint_name": inst.endpoint_name,
            "log_path": inst.log_path,
            "since": inst.since,
            "connected": inst.connected,
        }
    return _StateView(state.phase, state.error, instance, list(state.jobs), dict(state.job_tmp))


def _vouched_view(text: str) -> _StateView | None:
    """The view of a state document that nodestate would read the same way; None when
    in doubt (then nodestate reads it)."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if type(doc) is not dict or doc.get("version") != STATE_VERSION:
        return None
    if not _STATE_KEYS.issuperset(doc) or "user" not in doc or "uid" not in doc:
        return None
    jobs, job_tmp, instance = doc.get("jobs", {}), doc.get("job_tmp", {}), doc.get("instance")
    if type(jobs) is not dict or not all(type(v) in (int, float) for v in jobs.values()):
        return None
    if type(job_tmp) is not dict or not all(type(v) is str for v in job_tmp.values()):
        return None
    if instance is not None and not (
        type(instance) is dict
        and _INSTANCE_KEYS <= instance.keys() <= _INSTANCE_KEYS | _INSTANCE_OPTIONAL
        and type(instance.get("connected")) in (int, float, type(None))
        and type(instance["pid"]) is int
        and type(instance["start_ticks"]) is int
    ):
        return None
    if not all(
        _is_str_list(doc.get(k, [])) for k in ("drain_tasks", "release_pending", "stage_tasks")
    ):
        return None
    if not _vouch_starting(doc.get("starting")) or not _vouch_holds(doc.get("holds", {})):
        return None
    if doc.get("cancel_holds", {}) != {}:  # rare (a drain gave up): nodestate reads it
        return None
    return _StateView(
        doc.get("phase", "idle"), doc.get("error"), instance or None, list(jobs), job_tmp
    )


def _is_str_list(value: object) -> bool:
    return type(value) is list and all(type(v) is str for v in value)


def _vouch_starting(value: object) -> bool:
    return value is None or (
        type(value) is dict and {"entry", "pid", "start_ticks"}.issuperset(value)
    )


def _vouch_holds(value: object) -> bool:
    return type(value) is dict and all(
        type(h) is dict
        and {"path", "size", "since"}.issubset(h)
        and {"path", "size", "since", "tasks"}.issuperset(h)
        for h in value.values()
    )
