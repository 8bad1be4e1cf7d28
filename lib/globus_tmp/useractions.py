"""The steps the hooks take as the job user: lease, start, ask, stop, release.

Root decides (:mod:`globus_tmp.lifecycle`); these steps act, each in one
:func:`~globus_tmp.privileges.run_as` call so the user's files and GCP are only ever
touched with the user's own rights. Only JSON crosses back; this module turns it into
the typed values root works with. :class:`UserActions` is the interface; tests can
hand the lifecycle another implementation.

Every step gets a budget and fits its own waits (``squeue``/``scontrol``, GCP's
connect) inside it, so root never has to kill a step that is about to succeed; and a
start reports the lease and the GCP pid as soon as it has them (``on_progress``), so
even a killed start leaves root knowing what to clean up.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, TypeVar

from .config import Config
from .errors import GcpError, PrivilegeError, mark_user_side
from .gcp import GcpCommand, GcpStatus, find_pool_instances
from .job import UserIdentity
from .leases import Holder
from .nodestate import GcpInstance
from .pool import EndpointPool, LeaseProver, PoolEntry
from .privileges import report_progress, run_as, run_as_reporting
from .process import ProcessRef
from .slurmview import SlurmView
from .userdir import check_user_dir

if TYPE_CHECKING:
    from .taskcancel import GaveUp

Progress = Callable[[Any], None]


@dataclass(frozen=True)
class Started:
    """A started GCP (connected, or still connecting: ``instance.connected``) and what is
    worth logging about how it got there."""

    instance: GcpInstance
    note: str | None

    def to_json(self) -> dict[str, Any]:
        return {"instance": asdict(self.instance), "note": self.note}

    @classmethod
    def from_json(cls, data: Any) -> Started:
        """A start step's answer, well-typed or ``TypeError``/``KeyError``: root keeps
        these values in node state and acts on the pid (the step is the user's)."""
        inst = GcpInstance(**data["instance"])
        texts = (inst.endpoint_id, inst.endpoint_name, inst.config_dir, inst.log_path)
        if not (
            type(inst.pid) is int
            and type(inst.start_ticks) is int
            and type(inst.since) in (int, float)
            and type(inst.connected) in (int, float, type(None))
            and all(isinstance(t, str) for t in texts)
        ):
            raise TypeError("ill-typed instance")
        note = data.get("note")
        return cls(inst, note if isinstance(note, str) else None)


@dataclass(frozen=True)
class JobSlot:
    """Where a job's node starts probing the pool: its index in the job's node list."""

    job_id: str
    nodelist: str


class UserActions(Protocol):
    def start(
        self,
        node: str,
        budget: float,
        on_progress: Progress | None = None,
        slot: JobSlot | None = None,
        paths: tuple[str, ...] = (),
    ) -> Started: ...

    def take_over(self, node: str, ref: ProcessRef, config_dir: Path, budget: float) -> Started: ...

    def status(self, timeout: float) -> GcpStatus | None: ...

    def request_stop(self, timeout: float) -> bool: ...

    def release(self, name: str, timeout: float) -> bool: ...

    def mark_lease(self, name: str, phase: str, until: float | None, timeout: float) -> bool: ...

    def active_tasks(self, endpoint_id: str, timeout: float, max_age: float = 0.0) -> list[str]: ...

    def pool_instances(self, timeout: float) -> list[tuple[ProcessRef, Path]]: ...

    def submit_stage_outs(
        self, job_id: str, node: str, endpoint: str | None, timeout: float, gone_why: str | None
    ) -> list[dict[str, Any]]: ...

    def settle_stage_outs(self, node: str, timeout: float) -> list[dict[str, Any]]: ...

    def cancel_tasks(
        self, task_ids: list[str], gave_up: GaveUp, retried: bool, timeout: float
    ) -> list[Cancel]: ...


@dataclass(frozen=True)
class Cancel:
    """How cancelling one task went (:data:`~globus_tmp.taskcancel.OUTCOMES`), and the
    outcome document of the stage-out it belongs to, if it is one of this node's."""

    task_id: str
    outcome: str
    detail: str
    stage_out: dict[str, Any] | None = None


class ForkedUserActions:
    """:class:`UserActions` for a real user: every step in a child dropped to that user."""

    def __init__(
        self,
        cfg: Config,
        user: UserIdentity,
        holder: Holder,
        prover: LeaseProver | None = None,
    ) -> None:
        self.cfg = cfg
        self.user = user
        self.holder = holder
        self.pool_root = cfg.user_dir_for(user)
        self.prover = prover

    def _trusted_root(self) -> Path:
        """``user_dir``, checked in the step as the user before anything in it is used
        (:mod:`globus_tmp.userdir`): only ever called inside a step."""
        return check_user_dir(self.pool_root, self.user.home)

    def _pool(self) -> EndpointPool:
        return EndpointPool(self._trusted_root())

    def _gcp(self) -> GcpCommand:
        return GcpCommand(self.cfg.gcp_path)

    def _prover(self, budget: float) -> LeaseProver:
        if self.prover is not None:
            return self.prover
        from .leaseproof import SlurmGlobusProver

        timeout = max(min(10.0, budget * 0.15), 1.0)
        slurm = SlurmView(timeout=timeout, bin_dir=self.cfg.slurm_bin_dir)
        return SlurmGlobusProver(self.user.name, self.holder.cluster, slurm, self._connected)

    def _connected(self, endpoint_id: str) -> bool | None:
        """Whether Globus sees the endpoint's GCP connected; None if it cannot be asked."""
        if not self.cfg.globus_client_id or not (self.pool_root / "tokens.db").exists():
            return None
        from .transfers import endpoint_connected

        return endpoint_connected(self.cfg, self.pool_root, endpoint_id)

    def start(
        self,
        node: str,
        budget: float,
        on_progress: Progress | None = None,
        slot: JobSlot | None = None,
        paths: tuple[str, ...] = (),
    ) -> Started:
        """``paths``: what GCP exposes besides ``exposed_paths`` (private /tmp exports).
        With ``start_wait = "spawned"`` it returns once GCP runs, not connected yet."""
        data = run_as_reporting(
            self.user, budget + 3, on_progress, self._start, node, budget, slot, list(paths)
        )
        return _answer("start", Started.from_json, data)

    def _start(
        self, node: str, budget: float, slot: JobSlot | None, paths: list[str]
    ) -> dict[str, Any]:
        deadline = time.monotonic() + budget
        pool = self._pool()
        entry, note = pool.lease(
            self.user.name, self.holder, self._prover(budget), slot=self._slot(node, slot)
        )
        report_progress({"leased": entry.name})
        try:
            pool.write_config_paths(entry, (*self.cfg.exposed_paths, *paths))
            log_path = self.log_path(node, entry)
            left = max(deadline - time.monotonic() - 1.0, 1.0)
            wait = self.cfg.start_wait == "connected"
            ref = self._gcp().start(
                entry.config_dir, log_path, min(self.cfg.start_timeout, left), wait=wait
            )
        except BaseException:
            pool.release(entry.name, self.holder)
            raise
        return Started(_instance(entry, ref, log_path, connected=wait), note).to_json()

    def take_over(self, node: str, ref: ProcessRef, config_dir: Path, budget: float) -> Started:
        data = run_as(
            self.user, budget + 3, self._take_over, node, ref.pid, ref.start_ticks,
            str(config_dir), budget,
        )  # fmt: skip
        return _answer("take over", Started.from_json, data)

    def _take_over(
        self, node: str, pid: int, ticks: int, config_dir: str, budget: float
    ) -> dict[str, Any]:
        ref = ProcessRef(pid, ticks)
        deadline = time.monotonic() + budget
        pool = self._pool()
        entry, note = pool.lease(
            self.user.name, self.holder, self._prover(budget), prefer=Path(config_dir).name
        )
        while True:
            status = self._gcp().status(timeout=max(deadline - time.monotonic(), 1))
            if status is not None and status.connected:
                break
            if time.monotonic() >= deadline or not ref.alive():
                raise GcpError(f"an orphaned GCP (pid {ref.pid}) runs but is not connected")
            time.sleep(0.2)
        return Started(_instance(entry, ref, self.log_path(node, entry)), note).to_json()

    def log_path(self, node: str, entry: PoolEntry) -> Path:
        return self.pool_root / "logs" / f"{node}-{entry.name}.log"

    def status(self, timeout: float) -> GcpStatus | None:
        data = run_as(self.user, timeout + 2, self._status, timeout)
        return _answer("status", _status_of, data)

    def _status(self, timeout: float) -> dict[str, str] | None:
        status = self._gcp().status(timeout)
        return None if status is None else {"online": status.online, "transfer": status.transfer}

    def request_stop(self, timeout: float) -> bool:
        return bool(run_as(self.user, timeout, self._gcp().request_stop))

    def release(self, name: str, timeout: float) -> bool:
        return bool(run_as(self.user, timeout, self._release, name))

    def _release(self, name: str) -> bool:
        return self._pool().release(name, self.holder)

    def mark_lease(self, name: str, phase: str, until: float | None, timeout: float) -> bool:
        """Record in the lease that our GCP is ``phase`` (e.g. draining until T)."""
        return bool(run_as(self.user, timeout, self._mark_lease, name, phase, until))

    def _mark_lease(self, name: str, phase: str, until: float | None) -> bool:
        return self._pool().mark(name, self.holder, phase, until)

    def _slot(self, node: str, slot: JobSlot | None) -> int | None:
        """This node's index in its job's node list, offset by the job: the nodes of one
        wide job start probing the pool at distinct entries."""
        if slot is None or not slot.nodelist:
            return None
        if "[" in slot.nodelist or "," in slot.nodelist:
            names = SlurmView(bin_dir=self.cfg.slurm_bin_dir).hostnames(slot.nodelist) or []
        else:
            names = [slot.nodelist]
        if node not in names:
            return None
        return _job_hash(slot.job_id) + names.index(node)

    def active_tasks(self, endpoint_id: str, timeout: float, max_age: float = 0.0) -> list[str]:
        """Ids of the user's ACTIVE/INACTIVE tasks on ``endpoint_id``, with the user's tokens."""
        data = run_as(self.user, timeout + 2, self._active_tasks, endpoint_id, timeout, max_age)
        return [str(t) for t in data]

    def _active_tasks(self, endpoint_id: str, timeout: float, max_age: float) -> list[str]:
        import os

        os.environ["GLOBUS_SDK_HTTP_TIMEOUT"] = str(max(int(timeout), 1))
        from .transfers import active_tasks_on

        return active_tasks_on(
            self.cfg, self._trusted_root(), endpoint_id, max_age, wait=max(timeout / 3, 1.0)
        )

    def pool_instances(self, timeout: float) -> list[tuple[ProcessRef, Path]]:
        """GCPs of the user running from a pool entry on this node (read as the user)."""
        endpoints = str(self.pool_root / "endpoints")
        data = run_as(self.user, timeout, find_pool_instances, self.user.uid, endpoints)
        return _answer("pool instances", _pool_instances_of, data)

    def submit_stage_outs(
        self, job_id: str, node: str, endpoint: str | None, timeout: float, gone_why: str | None
    ) -> list[dict[str, Any]]:
        """Submit the job's stage-outs declared on ``node``; one outcome per record."""
        return _outcomes(
            run_as(
                self.user, timeout + 2, self._submit_stage_outs, job_id, node, endpoint,
                timeout, gone_why,
            )
        )  # fmt: skip

    def _submit_stage_outs(
        self, job_id: str, node: str, endpoint: str | None, timeout: float, gone_why: str | None
    ) -> list[dict[str, Any]]:
        from .stageout import StageOutStore, submit_declared

        root = self._trusted_root()
        if not StageOutStore(root).records(self.holder.cluster, job_id, node):
            return []  # most jobs: no Globus session, no import of globus_sdk
        _http_timeout(timeout)
        return submit_declared(
            self._session, root, self.holder.cluster, job_id, node, endpoint, gone_why
        )

    def settle_stage_outs(self, node: str, timeout: float) -> list[dict[str, Any]]:
        """Record how this node's submitted stage-outs ended; those that have."""
        return _outcomes(run_as(self.user, timeout + 2, self._settle_stage_outs, node, timeout))

    def _settle_stage_outs(self, node: str, timeout: float) -> list[dict[str, Any]]:
        from .stageout import settle

        _http_timeout(timeout)
        return settle(self._session, self._trusted_root(), self.holder.cluster, node)

    def cancel_tasks(
        self, task_ids: list[str], gave_up: GaveUp, retried: bool, timeout: float
    ) -> list[Cancel]:
        """Cancel the tasks with the user's tokens and record it in this node's stage-outs
        (:mod:`globus_tmp.taskcancel`); one answer per task asked."""
        data = run_as(
            self.user, timeout + 3, self._cancel_tasks, task_ids, gave_up, retried, timeout
        )
        return _answer("cancel", lambda d: _cancels_of(d, task_ids), data)

    def _cancel_tasks(
        self, task_ids: list[str], gave_up: GaveUp, retried: bool, timeout: float
    ) -> list[dict[str, Any]]:
        from .taskcancel import cancel_and_record

        _http_timeout(timeout)
        root = self._trusted_root()
        return cancel_and_record(
            self._session, root, self.holder.cluster, task_ids, gave_up, retried, timeout
        )

    def _session(self) -> Any:
        from .globusapi import GlobusSession

        return GlobusSession(self.cfg, self.pool_root, interactive=False)


T = TypeVar("T")


def _answer(what: str, parse: Callable[[Any], T], data: Any) -> T:
    """``parse(data)`` of a step's answer; one it cannot take is the user's doing (their
    step), never an internal error of root's (which ``on_failure`` would count)."""
    try:
        return parse(data)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise mark_user_side(
            PrivilegeError(f"the step as the user ({what}) sent an unusable answer")
        ) from None


def _status_of(data: Any) -> GcpStatus | None:
    if data is None:
        return None
    online, transfer = data["online"], data["transfer"]
    if not isinstance(online, str) or not isinstance(transfer, str):
        raise TypeError("ill-typed status")
    return GcpStatus(online, transfer)


def _pool_instances_of(data: Any) -> list[tuple[ProcessRef, Path]]:
    found = []
    for d in data:
        pid, ticks, config_dir = d["pid"], d["start_ticks"], d["config_dir"]
        if not (type(pid) is int and type(ticks) is int and isinstance(config_dir, str)):
            raise TypeError("ill-typed instance")
        found.append((ProcessRef(pid, ticks), Path(config_dir)))
    return found


def _outcomes(data: Any) -> list[dict[str, Any]]:
    """A stage-out step's answer as outcome documents (anything else is dropped: the step
    is the user's). Their task ids are checked where they enter node state."""
    return [o for o in data if isinstance(o, dict)] if isinstance(data, list) else []


def _cancels_of(data: Any, asked: list[str]) -> list[Cancel]:
    """The cancel step's answers for the tasks root asked about; a task it does not
    answer for well is taken as not cancelled (the step is the user's)."""
    from .taskcancel import OUTCOMES, PENDING

    said = {}
    for d in data:
        task_id, outcome, detail = d["task_id"], d["outcome"], d["detail"]
        stage_out = d.get("stage_out")
        if task_id in asked and outcome in OUTCOMES and isinstance(detail, str):
            said[task_id] = Cancel(
                task_id, outcome, detail, stage_out if isinstance(stage_out, dict) else None
            )
    missing = "the cancel step did not answer for it"
    return [said.get(t) or Cancel(t, PENDING, missing) for t in asked]


def _http_timeout(timeout: float) -> None:
    import os

    os.environ["GLOBUS_SDK_HTTP_TIMEOUT"] = str(max(int(timeout / 3), 1))


def _job_hash(job_id: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.blake2b(job_id.encode(), digest_size=4).digest(), "big")


def _instance(
    entry: PoolEntry, ref: ProcessRef, log_path: Path, connected: bool = True
) -> GcpInstance:
    now = time.time()
    return GcpInstance(
        pid=ref.pid,
        start_ticks=ref.start_ticks,
        endpoint_id=entry.endpoint_id,
        endpoint_name=entry.name,
        config_dir=str(entry.config_dir),
        log_path=str(log_path),
        since=now,
        connected=now if connected else None,
    )
