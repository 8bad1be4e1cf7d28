"""The steps the hooks take as the job user: lease, start, ask, stop, release.

Root decides (:mod:`globus_tmp.lifecycle`); these steps act, each in one
:func:`~globus_tmp.privileges.run_as` call so the user's files and GCP are only ever
touched with the user's own rights. :class:`UserActions` is the interface; tests can
hand the lifecycle another implementation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .config import Config
from .errors import GcpError
from .gcp import GcpCommand, GcpStatus
from .job import UserIdentity
from .nodestate import GcpInstance
from .pool import EndpointPool, NodeActivity, PoolEntry, SqueueNodeActivity
from .privileges import run_as
from .process import ProcessRef


@dataclass(frozen=True)
class Started:
    """A connected GCP and what is worth logging about how it got there."""

    instance: GcpInstance
    note: str | None


class UserActions(Protocol):
    def start(self, node: str, timeout: float) -> Started: ...

    def take_over(
        self, node: str, ref: ProcessRef, config_dir: Path, timeout: float
    ) -> Started: ...

    def status(self, timeout: float) -> GcpStatus | None: ...

    def request_stop(self, timeout: float) -> bool: ...

    def release(self, name: str, node: str, timeout: float) -> bool: ...

    def active_tasks(self, endpoint_id: str, timeout: float) -> list[str]: ...


class ForkedUserActions:
    """:class:`UserActions` for a real user: every step in a child dropped to that user."""

    def __init__(self, cfg: Config, user: UserIdentity, activity: NodeActivity | None = None):
        self.cfg = cfg
        self.user = user
        self.pool_root = cfg.user_dir_for(user.home)
        self.activity = activity or SqueueNodeActivity()

    def _pool(self) -> EndpointPool:
        return EndpointPool(self.pool_root)

    def _gcp(self) -> GcpCommand:
        return GcpCommand(self.cfg.gcp_path)

    def start(self, node: str, timeout: float) -> Started:
        return run_as(self.user, timeout + 5, self._start, node, timeout)

    def _start(self, node: str, timeout: float) -> Started:
        pool = self._pool()
        entry, note = pool.lease(self.user.name, node, self.activity)
        try:
            pool.write_config_paths(entry, self.cfg.exposed_paths)
            log_path = self.log_path(node, entry)
            ref = self._gcp().start(entry.config_dir, log_path, timeout)
        except BaseException:
            pool.release(entry.name, node)
            raise
        return Started(_instance(entry, ref, log_path), note)

    def take_over(self, node: str, ref: ProcessRef, config_dir: Path, timeout: float) -> Started:
        return run_as(self.user, timeout + 5, self._take_over, node, ref, config_dir, timeout)

    def _take_over(self, node: str, ref: ProcessRef, config_dir: Path, timeout: float) -> Started:
        pool = self._pool()
        entry, note = pool.lease(self.user.name, node, self.activity, prefer=config_dir.name)
        deadline = time.monotonic() + timeout
        while True:
            status = self._gcp().status(timeout=max(deadline - time.monotonic(), 1))
            if status is not None and status.connected:
                break
            if time.monotonic() >= deadline or not ref.alive():
                raise GcpError(f"an orphaned GCP (pid {ref.pid}) runs but is not connected")
            time.sleep(0.2)
        return Started(_instance(entry, ref, self.log_path(node, entry)), note)

    def log_path(self, node: str, entry: PoolEntry) -> Path:
        return self.pool_root / "logs" / f"{node}-{entry.name}.log"

    def status(self, timeout: float) -> GcpStatus | None:
        return run_as(self.user, timeout + 2, self._gcp().status, timeout)

    def request_stop(self, timeout: float) -> bool:
        return run_as(self.user, timeout, self._gcp().request_stop)

    def release(self, name: str, node: str, timeout: float) -> bool:
        return run_as(self.user, timeout, self._pool().release, name, node)

    def active_tasks(self, endpoint_id: str, timeout: float) -> list[str]:
        """Ids of the user's ACTIVE/INACTIVE tasks on ``endpoint_id``, with the user's tokens."""
        return run_as(self.user, timeout + 2, self._active_tasks, endpoint_id, timeout)

    def _active_tasks(self, endpoint_id: str, timeout: float) -> list[str]:
        import os

        os.environ["GLOBUS_SDK_HTTP_TIMEOUT"] = str(max(int(timeout), 1))
        from .transfers import active_tasks_on

        return active_tasks_on(self.cfg, self.pool_root, endpoint_id)


def _instance(entry: PoolEntry, ref: ProcessRef, log_path: Path) -> GcpInstance:
    return GcpInstance(
        pid=ref.pid,
        start_ticks=ref.start_ticks,
        endpoint_id=entry.endpoint_id,
        endpoint_name=entry.name,
        config_dir=str(entry.config_dir),
        log_path=str(log_path),
        since=time.time(),
    )
