"""``globus-tmp-endpoint``: this node's endpoint for the calling user, and the pool.

Run inside a job: prints the endpoint id (exit 0), or one line saying why there is
none and what to do (exit 1). ``--json`` adds node, user, paths, state, since and jobs;
``--wait`` waits until the endpoint is connected. ``adopt`` and ``list`` manage the
user's pool. Exit codes: 0 ok, 1 no endpoint or failed, 2 usage, 3 configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .config import load_config
from .errors import GlobusTmpError
from .job import UserIdentity, node_name
from .lookup import NoEndpoint, lookup

if TYPE_CHECKING:
    from .pool import EndpointPool

PROG = "globus-tmp-endpoint"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Print this node's Globus endpoint id for you (run it inside a Slurm job).",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print endpoint id, node, user, paths, state, since and job ids as JSON",
    )
    parser.add_argument(
        "--wait",
        nargs="?",
        type=float,
        const=60.0,
        metavar="SECONDS",
        help="wait until the endpoint is connected (default 60 s)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    adopt = sub.add_parser(
        "adopt", help="move a set-up GCP config dir (e.g. ~/.globusonline) into your pool"
    )
    adopt.add_argument("dir", type=Path, help="the GCP config dir (its lta/ holds client-id.txt)")
    adopt.add_argument("--name", help="pool entry name (default: from the dir's name)")
    sub.add_parser("list", help="list your pool: entries, endpoint ids, leases")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        sys.exit(_run(args))
    except GlobusTmpError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def _run(args: argparse.Namespace) -> int:
    cfg = load_config()
    user = UserIdentity.current()
    if args.command in ("adopt", "list"):
        from .pool import EndpointPool

        pool = EndpointPool(cfg.user_dir_for(user.home))
    if args.command == "adopt":
        entry = pool.adopt(args.dir, args.name)
        print(f"added {entry.name} (endpoint {entry.endpoint_id}) to {pool.endpoints_dir}")
        return 0
    if args.command == "list":
        return _list(pool, args.json)
    node = node_name(os.environ)
    deadline = time.monotonic() + (args.wait or 0)
    while True:
        try:
            info = lookup(cfg, node, user.name)
            break
        except NoEndpoint:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)
    if args.json:
        print(json.dumps(info.as_json(), indent=2))
    else:
        print(info.endpoint_id)
    return 0


def _list(pool: EndpointPool, as_json: bool) -> int:
    entries = pool.entries()
    leases = pool.leases()
    rows = [
        {
            "name": e.name,
            "endpoint_id": e.endpoint_id,
            "node": leases[e.name].node if e.name in leases else None,
            "since": leases[e.name].since if e.name in leases else None,
        }
        for e in entries
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no endpoints in {pool.endpoints_dir}; add one with '{PROG} adopt DIR'")
        return 0
    for entry in entries:
        held = leases.get(entry.name)
        where = f"leased to {held.node} since {_when(held.since)}" if held else "free"
        print(f"{entry.name:<16} {entry.endpoint_id}  {where}")
    return 0


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
