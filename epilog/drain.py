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
from globus_tmp.errors import GlobusTmpError
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
        log.info(NodeLifecycle(cfg, args.node, store, log, deadline).drain(user))
    except GlobusTmpError as exc:
        log.error(str(exc))
    except Exception as exc:
        log.error(f"internal error: {type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
