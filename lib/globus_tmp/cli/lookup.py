"""``globus-tmp-endpoint`` with no command: this node's endpoint id for the caller.

Every job that wants its endpoint runs this, so it imports only what the lookup needs
(``quickconfig``, ``lookup``: json, /proc, no dataclasses, no argparse for the plain
forms; see :func:`globus_tmp.cli.main`). The full configuration module is imported
only when ``quickconfig`` cannot vouch for the file.
"""

from __future__ import annotations

import os
import pwd

from ..lookup import EndpointChanging, EndpointInfo, NoEndpoint, lookup
from ..quickconfig import quick_lookup_config
from .output import Output

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..lookup import LookupSettings


def settings(env: Mapping[str, str]) -> LookupSettings:
    """The configuration as the lookup needs it (config errors as ``config`` words them)."""
    quick = quick_lookup_config(env)
    if quick is not None:
        return quick
    from ..config import load_config

    return load_config(env)


def user_name() -> str:
    """The caller's user name (an unknown uid fails as ``UserIdentity`` words it)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        from ..job import UserIdentity

        return UserIdentity.current().name


def this_node(
    cfg: LookupSettings, user: str, env: Mapping[str, str], wait: float | None = None
) -> EndpointInfo:
    """This node's endpoint for ``user`` (at once, connected or not: the id is known
    before GCP connects); with ``wait``, retried until GCP is connected."""
    if not wait:
        return lookup(cfg, node_name(env), user, env.get("SLURM_JOB_ID"))
    import time

    deadline = time.monotonic() + wait
    while True:
        try:
            info = lookup(cfg, node_name(env), user, env.get("SLURM_JOB_ID"))
        except EndpointChanging:
            if time.monotonic() >= deadline:
                raise
        else:
            if info.connected is not None:
                return info
            if time.monotonic() >= deadline:
                raise NoEndpoint(
                    f"the endpoint {info.endpoint_id} of {user} on {info.node} did not connect "
                    f"within {wait:g} s (it may still: GCP has start_timeout); log: {info.log}"
                )
        time.sleep(0.5)


def node_name(env: Mapping[str, str]) -> str:
    """``job.node_name`` (the same rule; ``job`` defines dataclasses, too slow to import)."""
    name = env.get("SLURMD_NODENAME")
    if name:
        return name
    return os.uname().nodename.split(".", 1)[0]


def show(env: Mapping[str, str], wait: float | None = None) -> Output:
    """The lookup: the endpoint id as text, everything the job may know as JSON."""
    cfg = settings(env)
    user = user_name()
    os.umask(0o077)
    info = this_node(cfg, user, env, wait)
    return Output(info.endpoint_id, info.as_json())
