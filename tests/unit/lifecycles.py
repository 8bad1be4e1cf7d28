"""A :class:`NodeLifecycle` whose steps as the user are a test's fake (no fork, no GCP),
for tests of the decisions around them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from globus_tmp.config import Config
from globus_tmp.hooklog import HookLog
from globus_tmp.job import UserIdentity
from globus_tmp.lifecycle import NodeLifecycle
from globus_tmp.nodestate import NodeStateStore
from globus_tmp.stagemarks import has_mark, sweep_marks, take_mark


class ErrorLines(HookLog):
    """A hook log that keeps its error lines (``errors``) and writes nothing."""

    def __init__(self) -> None:
        super().__init__("test", to_stderr=False)
        self.errors: list[str] = []

    def error(self, message: str) -> None:
        self.errors.append(message)


class LocalMarks:
    """The stage-out mark steps run in this process (no fork) on the store's real
    ``declared/<user>`` directories; the home look-up is ``home`` (user, job -> count),
    and every call of it is kept in ``home_reads``."""

    def __init__(
        self, store: NodeStateStore, home: Callable[[UserIdentity, str], int] | None = None
    ) -> None:
        self.store = store
        self.home = home or (lambda user, job_id: 0)
        self.home_reads: list[str] = []

    def look(self, user: UserIdentity, job_id: str, timeout: float, take: bool) -> bool:
        marks = str(self.store.marks_dir(user.name))
        return take_mark(marks, job_id) if take else has_mark(marks, job_id)

    def declared(self, user: UserIdentity, job_id: str, timeout: float) -> int:
        self.home_reads.append(job_id)
        return self.home(user, job_id)

    def sweep(self, user: UserIdentity, keep: list[str], timeout: float) -> int:
        return sweep_marks(str(self.store.marks_dir(user.name)), keep)


def lifecycle_with(
    store: NodeStateStore,
    log: HookLog,
    actions: object,
    marks: LocalMarks | None = None,
    cfg: Config | None = None,
    **parts: Any,
) -> NodeLifecycle:
    """Node n1, default config (or ``cfg``), 30 s left; every user's actions are
    ``actions``, the stage-out mark steps ``marks`` (by default :class:`LocalMarks`,
    reading no home); ``parts``: other side effects by their keyword (``watches``,
    ``drains``, ``activity``, ``jobs``)."""
    return NodeLifecycle(
        cfg or Config(),
        "n1",
        store,
        log,
        time.monotonic() + 30,
        actions_for=lambda u: actions,  # type: ignore[arg-type,return-value]
        stage_marks=marks or LocalMarks(store),
        **parts,
    )
