"""Is a transfer still using this node's endpoint? The epilog's one question.

GCP's own ``Transfer Status`` says ``active`` while a GridFTP child exists (a directory
listing counts too). A status that cannot be read while GCP still runs counts as active:
a drain bounded by ``linger_max`` costs far less than a transfer killed mid-way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .errors import GlobusTmpError
from .nodestate import GcpInstance
from .useractions import UserActions


@dataclass(frozen=True)
class Activity:
    active: bool
    detail: str


class TransferActivity(Protocol):
    def check(self, actions: UserActions, instance: GcpInstance, timeout: float) -> Activity: ...


class GcpStatusActivity:
    """:class:`TransferActivity` from ``globusconnectpersonal -status``."""

    def check(self, actions: UserActions, instance: GcpInstance, timeout: float) -> Activity:
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
