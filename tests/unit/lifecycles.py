"""A :class:`NodeLifecycle` whose steps as the user are a test's fake (no fork, no GCP),
for tests of the decisions around them."""

from __future__ import annotations

import time

from globus_tmp.config import Config
from globus_tmp.hooklog import HookLog
from globus_tmp.lifecycle import NodeLifecycle
from globus_tmp.nodestate import NodeStateStore


def lifecycle_with(store: NodeStateStore, log: HookLog, actions: object) -> NodeLifecycle:
    """Node n1, default config, 30 s left; every user's actions are ``actions``."""
    return NodeLifecycle(
        Config(),
        "n1",
        store,
        log,
        time.monotonic() + 30,
        actions_for=lambda u: actions,  # type: ignore[arg-type,return-value]
    )
