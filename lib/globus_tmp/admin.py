"""``globus-tmp-admin``: the node operator's tool (root on a compute node).

``reconcile`` compares this node's state with reality and repairs it (see
:mod:`globus_tmp.reconcile`). It is meant to run periodically, from Slurm's
``HealthCheckProgram`` or a systemd timer, so that orphans have a bounded life even
when no hook runs on the node again. ``HealthCheckProgram`` gets only
``SLURMD_NODENAME``: the configuration is found as the hooks find it, or at
``/etc/slurm/globus-tmp.conf``, or named with ``--config``.

Exit codes: 0 done (repairs or none; failures are logged, never fatal), 2 usage,
3 configuration.

``globus-tmp-healthcheck`` is the ``HealthCheckProgram`` wrapper: it runs the site's own
health check first (``chain_health_check``; its exit code is the verdict Slurm sees),
then starts a reconcile in a session of its own and returns at once, so globus-tmp can
neither delay nor fail a node's health check.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from . import __version__
from .config import Config, load_config
from .drain import launch_detached
from .errors import ConfigError
from .hooklog import HookLog, escape_control
from .hookrunner import alarm_backstop, log_failure
from .job import UserIdentity, node_name
from .lifecycle import NodeLifecycle
from .nodestate import NodeStateStore

PROG = "globus-tmp-admin"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Operate globus-tmp on this node.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", help="globus-tmp.conf to use (default: as the hooks find it)")
    parser.add_argument("--node", help="this node's Slurm name (default: $SLURMD_NODENAME)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    rec = sub.add_parser(
        "reconcile", help="repair node state against live jobs and processes (safe any time)"
    )
    rec.add_argument("--user", help="only this user")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.config:
        os.environ["GLOBUS_TMP_CONFIG"] = args.config
    log = HookLog("reconcile")
    if os.geteuid() != 0:
        log.error("run as root: it acts for every user of the node")
        return 2
    try:
        cfg = load_config()
    except ConfigError as exc:
        log.error(str(exc))
        return 3
    node = args.node or node_name(os.environ)
    log.bind(node=node)
    try:
        with alarm_backstop(cfg.hook_timeout + 5, _TIMEOUT):
            _reconcile(cfg, node, args.user, log)
    except Exception as exc:
        log_failure(log, exc)
    return 0


_TIMEOUT = "reconcile hit hook_timeout; the rest is left for the next run"


def _reconcile(cfg: Config, node: str, only: str | None, log: HookLog) -> None:
    store = NodeStateStore(cfg.state_dir_for(node))
    store.ensure()
    log.configure(cfg.log_file_for(node), cfg.syslog_facility)
    lifecycle = NodeLifecycle(cfg, node, store, log, time.monotonic() + cfg.hook_timeout)
    from .reconcile import NodeReconciler

    reconciler = NodeReconciler(lifecycle)
    if only:
        user = UserIdentity.from_name(only)
        results = [(user.name, note) for note in reconciler.user(user)]
    else:
        results = reconciler.node()
    for name, note in results:
        print(escape_control(f"{name}: {note}"))
    summary = f"reconciled {len(store.users())} user(s), {len(results)} repair(s)"
    if results:  # a quiet node stays quiet in its log; the summary still goes to stdout
        log.info(summary)
    else:
        print(summary)


def healthcheck_main() -> int:
    """``HealthCheckProgram``: the site's check (if any), then a detached reconcile."""
    log = HookLog("healthcheck")
    try:
        cfg = load_config()
    except ConfigError as exc:
        log.error(str(exc))
        return 0
    verdict = 0
    if cfg.chain_health_check:
        try:
            verdict = subprocess.run(
                [cfg.chain_health_check, *sys.argv[1:]], stdin=subprocess.DEVNULL, check=False
            ).returncode
        except OSError as exc:
            log.error(f"chain_health_check {cfg.chain_health_check}: {exc.strerror}")
            verdict = 1
    try:
        launch_detached([sys.executable, "-m", "globus_tmp.admin", "reconcile"], {})
    except OSError as exc:
        log.error(f"cannot start reconcile: {exc.strerror}")
    return verdict


if __name__ == "__main__":
    sys.exit(main())
