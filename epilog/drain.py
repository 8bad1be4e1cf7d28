"""The detached drain (``python -m globus_tmp_epilog.drain --user U --node N``), as root.

Started by the Epilog when the user's last job on the node ended under an active
transfer: waits for the transfer (at most ``linger_max``), then stops GCP unless a job
has joined meanwhile. Logs to the node's hook log.
"""

from __future__ import annotations

import argparse
import sys
import time

from globus_tmp.config import load_config
from globus_tmp.hooklog import HookLog
from globus_tmp.job import UserIdentity
from globus_tmp.lifecycle import NodeLifecycle
from globus_tmp.nodestate import NodeStateStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="globus-tmp-drain")
    parser.add_argument("--user", required=True)
    parser.add_argument("--node", required=True)
    args = parser.parse_args(argv)
    log = HookLog("drain", to_stderr=False)
    log.bind(node=args.node, user=args.user)
    try:
        cfg = load_config()
        store = NodeStateStore(cfg.state_dir_for(args.node))
        store.ensure()
        log.log_file = cfg.log_file_for(args.node)
        user = UserIdentity.from_name(args.user)
        deadline = time.monotonic() + cfg.linger_max + cfg.stop_grace + 120
        lifecycle = NodeLifecycle(cfg, args.node, store, log, deadline)
    except Exception as exc:
        log.error(f"cannot drain: {exc}")
        return 0
    try:
        log.info(lifecycle.drain(user))
    except Exception as exc:
        # a GCP nobody watches any more would run (and hold its lease) until the user's
        # next job on this node: stop it now rather than leave it behind
        log.error(f"drain failed ({type(exc).__name__}: {exc}); stopping GCP")
        try:
            log.info(lifecycle.stop_if_unused(user, "the drain failed"))
        except Exception as again:
            log.error(f"could not stop GCP either: {type(again).__name__}: {again}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
