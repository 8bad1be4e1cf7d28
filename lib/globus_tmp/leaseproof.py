"""When a lease held by another node may be taken: only on proof its GCP is not running.

GCP outlives jobs on purpose (a drain, up to ``linger_max``) and by accident, so "no
job of the user on the holder node" alone is no proof: taking the entry then would
start a second GCP from the same config dir while the first still transfers. Proof is
one of (checked in this order, cheapest first):

- the holder node is down, or booted after it took the lease (Slurm's node record);
- Globus sees the endpoint's GCP disconnected (``gcp_connected`` false, asked with the
  user's tokens) **and** the holder node runs no job of the user **and** the holder is
  not draining with a deadline still ahead (its lease record says so).

Nothing proves free a lease its holder keeps for a task it could not cancel
(``cancelling`` with a deadline ahead), not even a down holder: Globus would resume the
task from the /tmp of whichever node runs the entry next.

A released lease needs no proof (it is free). Holders in another cluster can only be
proven free by their own release: this cluster's Slurm knows nothing of them.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol

from .leases import LeaseRecord
from .pool import PoolEntry

EndpointConnected = Callable[[str], "bool | None"]


class NodeRecords(Protocol):
    """What the proof asks Slurm (:class:`~globus_tmp.slurmview.SlurmView` answers it;
    tests give fixed answers)."""

    def nodes_with_jobs(self, user: str) -> set[str] | None: ...

    def node_down_since(self, node: str, since: float) -> str | None: ...


class SlurmGlobusProver:
    """:class:`~globus_tmp.pool.LeaseProver` from Slurm and the Transfer API."""

    def __init__(
        self, user: str, cluster: str, slurm: NodeRecords, connected: EndpointConnected
    ) -> None:
        self.user = user
        self.cluster = cluster
        self.slurm = slurm
        self.connected = connected
        self._busy: set[str] | None = None
        self._asked = False

    def stale(self, record: LeaseRecord, entry: PoolEntry) -> str | None:
        if record.cluster != self.cluster or record.node.startswith("<"):
            return None
        if record.held_for_cancel(time.time()):
            return None
        down = self.slurm.node_down_since(record.node, record.since)
        if down:
            return down
        if record.drain_until is not None and time.time() < record.drain_until:
            return None
        if not self._asked:
            self._busy, self._asked = self.slurm.nodes_with_jobs(self.user), True
        if self._busy is None or record.node in self._busy:
            return None
        if self.connected(entry.endpoint_id) is not False:
            return None
        return "no job of yours there and Globus sees its GCP disconnected"
