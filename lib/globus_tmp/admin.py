"""``globus-tmp-admin``: the node operator's tool (root on a compute node).

- ``status [--json] [--user U]``: what runs on this node, per user (no network; any
  user may run it: node state is readable by all);
- ``doctor [--user U]``: install checks, one line each, exit code the worst;
- ``stop --user U | --all`` and ``drain-cancel --user U``: before maintenance, end
  drains and stop GCPs cleanly, releasing leases (never under a running job);
- ``reconcile`` compares this node's state with reality and repairs it (see
  :mod:`globus_tmp.reconcile`). It is meant to run periodically, from Slurm's
``HealthCheckProgram`` or a systemd timer, so that orphans have a bounded life even
when no hook runs on the node again. ``HealthCheckProgram`` gets only
``SLURMD_NODENAME``: the configuration is found as the hooks find it, or at
``/etc/slurm/globus-tmp.conf``, or named with ``--config``.

Exit codes (docs/ADMIN.md, "Exit codes"): 0 done (reconcile: repairs or none; failures
are logged, never fatal), 1 refused or failed (stop), 2 usage, 3 configuration;
doctor: 0 OK, 1 WARN, 2 FAIL.

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
from .alarm import alarm_backstop
from .config import Config, load_config
from .drain import launch_detached
from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ConfigError, GlobusTmpError
from .hooklog import HookLog, escape_control
from .hookrunner import log_failure
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
    status = sub.add_parser("status", help="what runs on this node, per user (no network)")
    status.add_argument("--json", action="store_true")
    status.add_argument("--user", help="only this user")
    status.add_argument(
        "--nodes",
        metavar="NODELIST",
        help="the view of many nodes in one table, run there by ClusterShell's clush "
        "(ssh by default), e.g. n[1-64]",
    )
    status.add_argument(
        "--exec",
        dest="exec_prefix",
        metavar="COMMAND",
        help="with --nodes: run through this local command instead of ssh (clush's exec "
        "worker; %%h is the node), e.g. 'pdsh-like-wrapper %%h'",
    )
    status.add_argument("--oneline", action="store_true", help=argparse.SUPPRESS)
    doctor = sub.add_parser("doctor", help="check the installation; exit code is the worst")
    doctor.add_argument("--user", help="also try link() in this user's user_dir, as them")
    stop = sub.add_parser("stop", help="end drains and stop GCP cleanly, releasing leases")
    who = stop.add_mutually_exclusive_group(required=True)
    who.add_argument("--user")
    who.add_argument("--all", action="store_true", help="every user of the node")
    cancel = sub.add_parser("drain-cancel", help="end a user's drain now and stop the GCP")
    cancel.add_argument("--user", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.config:
        os.environ["GLOBUS_TMP_CONFIG"] = args.config
    log = HookLog("reconcile" if args.command == "reconcile" else "admin")
    if os.geteuid() != 0 and args.command != "status":
        log.error(f"{args.command}: run as root: it acts for every user of the node")
        return EXIT_USAGE
    try:
        cfg = load_config()
    except ConfigError as exc:
        log.error(str(exc))
        return exc.exit_code
    node = args.node or node_name(os.environ)
    log.bind(node=node)
    if args.command == "status" and args.nodes:
        from .clusterview import cluster_status

        return cluster_status(args.nodes, args.exec_prefix, args.config, args.user, args.json)
    if args.command == "status":
        return _status(cfg, node, args.user, args.json, args.oneline)
    if args.command == "doctor":
        return _doctor(cfg, node, args.user)
    if args.command in ("stop", "drain-cancel"):
        return _stop(cfg, node, log, args.user, args.command == "drain-cancel")
    try:
        with alarm_backstop(cfg.hook_timeout + 5, _TIMEOUT):
            _reconcile(cfg, node, args.user, log)
    except Exception as exc:
        log_failure(log, exc)
    return EXIT_OK


def _status(cfg: Config, node: str, only: str | None, as_json: bool, oneline: bool) -> int:
    import json

    from .nodeview import node_view

    view = node_view(NodeStateStore(cfg.state_dir_for(node)), node, only)
    if as_json or oneline:
        print(json.dumps(view.as_json(), indent=None if oneline else 2))
    else:
        print("\n".join(escape_control(line) for line in view.lines()))
    return EXIT_OK


def _doctor(cfg: Config, node: str, user: str | None) -> int:
    from .doctor import Doctor, worst
    from .slurmconf import read_slurm_settings, slurm_conf_path

    slurm = read_slurm_settings(slurm_conf_path(cfg, os.environ))
    checks = Doctor(cfg, node, slurm, UserIdentity.from_name(user) if user else None).run()
    for check in checks:
        print(escape_control(check.line()))
    return worst(checks)


def _stop(cfg: Config, node: str, log: HookLog, user: str | None, only_drain: bool) -> int:
    """Stop (or end the drain of) each user's GCP; one line each; 1 if any refused."""
    store = NodeStateStore(cfg.state_dir_for(node))
    store.ensure()
    log.configure(cfg.log_file_for(node), cfg.syslog_facility)
    lifecycle = NodeLifecycle(cfg, node, store, log, time.monotonic() + cfg.hook_timeout)
    rc = EXIT_OK
    for name in [user] if user else store.users():
        try:
            note = lifecycle.stop_for_admin(UserIdentity.from_name(name), only_drain)
        except GlobusTmpError as exc:
            log.error(f"{name}: refused: {exc}")
            rc = max(rc, exc.exit_code)
            continue
        log.info(f"{name}: {note}")
    return rc


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
    from .metrics import record_run

    problem = record_run(cfg, node, "reconcile", "ok")  # does nothing without metrics_file
    if problem:
        log.error(problem)


def healthcheck_main() -> int:
    """``HealthCheckProgram``: the site's check (if any), then a detached reconcile."""
    log = HookLog("healthcheck")
    try:
        cfg = load_config()
    except ConfigError as exc:
        log.error(str(exc))
        return EXIT_OK  # never fail the node's health check for our own sake
    verdict = EXIT_OK
    if cfg.chain_health_check:
        try:
            verdict = subprocess.run(
                [cfg.chain_health_check, *sys.argv[1:]], stdin=subprocess.DEVNULL, check=False
            ).returncode
        except OSError as exc:
            log.error(f"chain_health_check {cfg.chain_health_check}: {exc.strerror}")
            verdict = EXIT_FAILED
    try:
        launch_detached([sys.executable, "-m", "globus_tmp.admin", "reconcile"], {})
    except OSError as exc:
        log.error(f"cannot start reconcile: {exc.strerror}")
    return verdict


if __name__ == "__main__":
    sys.exit(main())
