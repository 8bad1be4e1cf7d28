"""What globus-tmp is doing on this node, from node state and liveness: no network.

``globus-tmp-admin status`` prints it as a table (or JSON for scripts). The view is
built from the root-owned node state (readable by all, as the TaskProlog reads it) and
checks of the recorded processes (pid and start time), so it answers in milliseconds
and needs no Globus, no GCP call and no home directory.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from .nodestate import NodeStateStore, UserNodeState

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from typing import Any


@dataclass
class UserView:
    user: str
    phase: str
    jobs: list[str]
    gcp_pid: int | None = None
    gcp_alive: bool = False
    gcp_uptime: float | None = None
    endpoint_name: str | None = None
    endpoint_id: str | None = None
    connected: bool = False
    """Whether GCP has said ``connected`` (a cold Prolog does not wait for it)."""
    drain_pid: int | None = None
    drain_alive: bool = False
    drain_until: float | None = None
    drain_tasks: list[str] = field(default_factory=list)
    idle_until: float | None = None
    """Until when the drain keeps an idle GCP up for the user's next job (``idle_linger``)."""
    held_bytes: int = 0
    holds: dict[str, str] = field(default_factory=dict)
    """Job id -> hold directory."""
    stage_tasks: list[str] = field(default_factory=list)
    leases: list[str] = field(default_factory=list)
    """Pool entries this node holds for the user (running instance, not yet released, or
    kept for tasks to cancel)."""
    cancel_holds: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Entry -> its :class:`~globus_tmp.nodestate.CancelHold` (a drain gave up under tasks
    it could not cancel: the lease stays with this node until they are)."""
    error: str | None = None
    error_at: float | None = None

    @classmethod
    def of(cls, state: UserNodeState, now: float) -> UserView:
        view = cls(
            user=state.user,
            phase=state.phase.value,
            jobs=sorted(state.jobs, key=lambda j: (len(j), j)),
            error=state.error,
            error_at=state.error_at,
            stage_tasks=list(state.stage_tasks),
        )
        inst = state.instance
        if inst is not None:
            view.gcp_pid, view.gcp_alive = inst.pid, inst.process.alive()
            view.gcp_uptime = now - inst.since
            view.endpoint_name, view.endpoint_id = inst.endpoint_name, inst.endpoint_id
            view.connected = inst.connected is not None
            view.leases.append(inst.endpoint_name)
        view.leases += [n for n in state.release_pending if n not in view.leases]
        view.leases += [n for n in state.cancel_holds if n not in view.leases]
        view.cancel_holds = {n: asdict(h) for n, h in state.cancel_holds.items()}
        drain = state.drain
        if drain is not None:
            view.drain_pid, view.drain_alive = drain.pid, drain.alive()
        view.drain_until, view.drain_tasks = state.drain_until, list(state.drain_tasks)
        view.idle_until = state.idle_until
        view.holds = {job: hold.path for job, hold in state.holds.items()}
        view.held_bytes = sum(hold.size for hold in state.holds.values())
        return view


@dataclass
class NodeView:
    node: str
    users: list[UserView]
    at: float

    @property
    def totals(self) -> dict[str, int]:
        return {
            "users": len(self.users),
            "gcp_running": sum(u.gcp_alive for u in self.users),
            "jobs": sum(len(u.jobs) for u in self.users),
            "drains": sum(u.drain_alive for u in self.users),
            "held_bytes": sum(u.held_bytes for u in self.users),
            "leases": sum(len(u.leases) for u in self.users),
            "held_for_cancel": sum(len(u.cancel_holds) for u in self.users),
            "errors": sum(u.error is not None and u.phase == "failed" for u in self.users),
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "at": self.at,
            "users": [asdict(u) for u in self.users],
            "totals": self.totals,
        }

    def lines(self) -> list[str]:
        """The table an admin reads at a glance: one line per user, details below it."""
        head = f"{'USER':<12} {'PHASE':<9} {'JOBS':>4} {'GCP':<16} {'UP':>7} {'ENDPOINT':<10}"
        out = [f"node {self.node}: " + ", ".join(f"{k} {v}" for k, v in self.totals.items())]
        if not self.users:
            return [*out, "no user has state on this node"]
        out.append(f"{head} DRAIN")
        for u in self.users:
            gcp = "-"
            if u.gcp_pid is not None:
                alive = ("alive" if u.connected else "connecting") if u.gcp_alive else "DEAD"
                gcp = f"{u.gcp_pid} {alive}"
            up = _duration(u.gcp_uptime) if u.gcp_alive and u.gcp_uptime is not None else "-"
            drain = "-"
            if u.drain_pid is not None:
                left = _duration((u.drain_until or self.at) - self.at)
                drain = f"pid {u.drain_pid} {'alive' if u.drain_alive else 'DEAD'}, {left} left"
                if u.drain_tasks:
                    drain += f", tasks {' '.join(u.drain_tasks)}"
                elif u.drain_alive and u.idle_until is not None and u.idle_until > self.at:
                    drain += f" (idle_linger for the next job: {_duration(u.idle_until - self.at)})"
            out.append(
                f"{u.user:<12} {u.phase:<9} {len(u.jobs):>4} {gcp:<16} {up:>7} "
                f"{u.endpoint_name or '-':<10} {drain}"
            )
            if u.jobs:
                out.append(f"{'':<12} jobs {','.join(u.jobs)}")
            if u.holds:
                out.append(f"{'':<12} held {u.held_bytes} bytes for job(s) {','.join(u.holds)}")
            if u.leases:
                out.append(f"{'':<12} leases {','.join(u.leases)}")
            for name, hold in u.cancel_holds.items():
                out.append(f"{'':<12} {_held_for_cancel(name, hold, self.at)}")
            if u.error:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(u.error_at or 0))
                out.append(f"{'':<12} last error ({when}): {u.error}")
        return out


def node_view(store: NodeStateStore, node: str, only: str | None = None) -> NodeView:
    now = time.time()
    users = [only] if only else store.users()
    views = [UserView.of(store.read(name, -1), now) for name in users]
    return NodeView(node=node, users=views, at=now)


def _held_for_cancel(name: str, hold: dict[str, Any], now: float) -> str:
    """One line for a lease kept for tasks a drain that gave up could not cancel."""
    tasks = " ".join(hold["tasks"])
    line = (
        f"lease {name} HELD FOR CANCEL of task(s) {tasks} (drain gave up "
        f"{_duration(now - hold['since'])} ago; next try in {_duration(hold['next_try'] - now)}, "
        f"try {hold['tries'] + 1}; released at the latest in {_duration(hold['until'] - now)}"
    )
    if not hold["marked"]:
        line += "; lease record NOT marked yet"
    return f"{line}): {hold['error']}" if hold["error"] else f"{line})"


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}"
