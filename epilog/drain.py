"""The detached drain (``python -m globus_tmp_epilog.drain --user U --node N --until T``).

Started as root by the Epilog when the user's last job on the node ended while a
transfer may still be running: waits for the transfer (until ``T``, when
``linger_max`` runs out), then stops GCP unless a job has joined meanwhile. Logs to the
node's hook log. SIGALRM is its backstop: whatever hangs, it stops GCP shortly after
``T`` (plus the give-up's cancel, :mod:`globus_tmp.giveup`); if it is killed, the next
repair (a hook or ``globus-tmp-admin reconcile``) finds it dead and finishes its work.
"""

from __future__ import annotations

import argparse
import sys
import time

from globus_tmp.alarm import alarm_backstop
from globus_tmp.config import load_config
from globus_tmp.hooklog import HookLog
from globus_tmp.hookrunner import outcome_of
from globus_tmp.job import UserIdentity
from globus_tmp.lifecycle import NodeLifecycle
from globus_tmp.metrics import record_run
from globus_tmp.nodestate import NodeStateStore
from globus_tmp.taskcancel import give_up_budget

_OVERRAN = "the drain overran linger_max; stopping GCP"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="globus-tmp-drain")
    parser.add_argument("--user", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--until", type=float, default=None, help="wall-clock end (epoch s)")
    args = parser.parse_args(argv)
    log = HookLog("drain", to_stderr=False)
    log.bind(node=args.node, user=args.user)
    try:
        cfg = load_config()
        store = NodeStateStore(cfg.state_dir_for(args.node))
        store.ensure()
        log.configure(cfg.log_file_for(args.node), cfg.syslog_facility)
        with alarm_backstop(cfg.hook_timeout, "the user look-up (NSS) hung"):
            user = UserIdentity.from_name(args.user)  # may ask LDAP: under the alarm
        until = args.until if args.until is not None else time.time() + cfg.linger_max
        budget = max(until - time.time(), 0) + give_up_budget(cfg) + cfg.stop_grace + 90
        lifecycle = NodeLifecycle(cfg, args.node, store, log, time.monotonic() + budget)
    except Exception as exc:
        log.error(f"cannot drain: {exc}")
        return 0
    outcome = "ok"
    try:
        backstop = max(until - time.time(), 0) + give_up_budget(cfg) + cfg.stop_grace + 10
        with alarm_backstop(backstop, _OVERRAN):
            log.info(lifecycle.drain(user, until))
    except Exception as exc:
        outcome = outcome_of(exc)
        # a GCP nobody watches any more would run (and hold its lease) until the user's
        # next job on this node: stop it now rather than leave it behind
        log.error(f"drain failed ({type(exc).__name__}: {exc}); stopping GCP")
        try:
            with alarm_backstop(cfg.stop_grace + 60, "the stop after a failed drain hung"):
                log.info(lifecycle.stop_if_unused(user, "the drain failed"))
        except Exception as again:
            log.error(f"could not stop GCP either: {type(again).__name__}: {again}")
    record_run(cfg, args.node, "drain", outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
