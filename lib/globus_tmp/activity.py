"""Is a transfer still using this node's endpoint? The epilog's one question.

Two witnesses, asked as the user:

- GCP's own ``Transfer Status`` (``active`` while a GridFTP child exists; a directory
  listing counts too, and it reads ``idle`` between files or while a task waits);
- the Transfer API: the user's tasks with status ACTIVE or INACTIVE whose source or
  destination is this endpoint (``task_list`` has no endpoint filter: matched here).

Either one saying "active" keeps GCP up. GCP's ``idle`` alone proves nothing (it says
so between two files of one task), so an answer without the Transfer API (no
``globus_client_id`` at the site, a user who never logged in, Globus unreachable) is
*unverified*: the drain then keeps GCP up until it has been idle for
``linger_unverified`` without a break, rather than stopping under a transfer it
cannot see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .config import Config
from .errors import GlobusTmpError
from .nodestate import GcpInstance, accept_task_ids
from .useractions import UserActions


@dataclass(frozen=True)
class Activity:
    active: bool
    detail: str
    verified: bool = True
    """False when the Transfer API should have been asked but could not be."""
    tasks: tuple[str, ...] = ()
    """The live Transfer tasks the API reported on the endpoint."""


class TransferActivity(Protocol):
    def check(
        self, actions: UserActions, instance: GcpInstance, timeout: float, shared: bool = False
    ) -> Activity:
        """``shared``: a drain's check, which may use an answer shared by the user's
        drains (at most ``linger_poll_seconds`` old)."""
        ...


def gcp_activity(actions: UserActions, instance: GcpInstance, timeout: float) -> Activity:
    """GCP's ``-status``; unreadable while GCP runs counts as active."""
    try:
        status = actions.status(timeout)
    except GlobusTmpError as exc:
        if instance.process.alive():
            return Activity(True, f"GCP status unreadable ({exc}); assuming a transfer")
        return Activity(False, "GCP is gone")
    if status is None:
        return Activity(False, "GCP is not running")
    if status.transfer_active:
        return Activity(True, "GCP reports Transfer Status: active")
    return Activity(False, "GCP reports Transfer Status: idle")


class TransferAwareActivity:
    """:class:`TransferActivity` from GCP's status and, where configured, the Transfer API."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def check(
        self, actions: UserActions, instance: GcpInstance, timeout: float, shared: bool = False
    ) -> Activity:
        gcp = gcp_activity(actions, instance, timeout)
        if not instance.process.alive():
            return gcp
        if not self.cfg.globus_client_id:
            return Activity(gcp.active, f"{gcp.detail}; no Transfer API (globus_client_id)", False)
        from .metrics import count_api

        try:
            max_age = self.cfg.linger_poll_seconds if shared else 0.0
            tasks = actions.active_tasks(instance.endpoint_id, timeout, max_age)
        except GlobusTmpError as exc:
            count_api("task_list", failed=True)
            return Activity(gcp.active, f"Transfer API not asked ({exc}); {gcp.detail}", False)
        count_api("task_list")
        live, refused = accept_task_ids(tasks)  # the answer came from the user's step
        note = f"; {refused} task id(s) from the user's side refused" if refused else ""
        if live:
            return Activity(
                True,
                f"Transfer task(s) {', '.join(live)} still use the endpoint{note}",
                True,
                tuple(live),
            )
        if refused:  # something is reported live, but nothing root can follow
            return Activity(gcp.active, f"Transfer API answer unusable{note}; {gcp.detail}", False)
        return Activity(gcp.active, f"no Transfer task uses the endpoint; {gcp.detail}")
