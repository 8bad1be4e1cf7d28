"""``setup``, ``list``, ``remove``, ``adopt``: the user's pool of GCP endpoints."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from .context import Command, Context
from .output import PROG, Output, warn

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping, Sequence

    from ..provision import EndpointProvisioner


def _provisioner(ctx: Context) -> EndpointProvisioner:
    from ..gcp import GcpCommand
    from ..provision import EndpointProvisioner

    return EndpointProvisioner(
        ctx.pool(), ctx.session(), GcpCommand(ctx.cfg.gcp_path), ctx.user.name
    )


def _setup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, required=True, help="pool size (entries ep1..epN)")


def setup(ctx: Context, args: argparse.Namespace) -> Output:
    pool = ctx.pool()
    entries = _provisioner(ctx).setup(args.count)
    return Output(f"pool of {len(entries)} endpoint(s) ready in {pool.endpoints_dir}")


def _remove_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")


def remove(ctx: Context, args: argparse.Namespace) -> Output:
    endpoint_id = _provisioner(ctx).remove(args.name)
    return Output(f"removed {args.name} (endpoint {endpoint_id})")


def _adopt_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, help="the GCP config dir (its lta/ holds client-id.txt)")
    parser.add_argument("--name", help="pool entry name (default: from the dir's name)")


def adopt(ctx: Context, args: argparse.Namespace) -> Output:
    pool = ctx.pool()
    entry = pool.adopt(args.dir, args.name)
    return Output(f"added {entry.name} (endpoint {entry.endpoint_id}) to {pool.endpoints_dir}")


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", dest="list_json")


def list_pool(ctx: Context, args: argparse.Namespace) -> Output:
    """Every pool entry with its lease and, when Globus can be asked, whether its GCP
    is connected."""
    pool = ctx.pool()
    entries = pool.entries()
    leases = pool.leases()
    connected = _connected(ctx, [e.endpoint_id for e in entries])
    rows = [
        {
            "name": e.name,
            "endpoint_id": e.endpoint_id,
            "node": leases[e.name].owner if e.name in leases else None,
            "since": leases[e.name].since if e.name in leases else None,
            "phase": leases[e.name].phase if e.name in leases else None,
            "drain_until": leases[e.name].drain_until if e.name in leases else None,
            "gcp_connected": connected.get(e.endpoint_id),
        }
        for e in entries
    ]
    return Output(list_text(rows, str(pool.endpoints_dir)), rows)


def list_text(rows: Sequence[Mapping[str, object]], endpoints_dir: str) -> str:
    """The pool as a table; ``rows`` are the ``--json`` rows of :func:`list_pool`."""
    if not rows:
        return f"no endpoints in {endpoints_dir}; run '{PROG} setup --count N' or 'adopt DIR'"
    seen = {True: "connected", False: "not connected", None: "Globus not asked"}
    lines = []
    for row in rows:
        where = "free"
        if row["node"] is not None:
            where = f"leased to {row['node']} since {_when(row['since'])}"
            if row["phase"] == "draining" and row["drain_until"]:
                where += f", draining until {_when(row['drain_until'])}"
            elif row["phase"] == "cancelling" and row["drain_until"]:
                where += f", kept for a task to cancel until {_when(row['drain_until'])}"
        connected = row["gcp_connected"]
        lines.append(
            f"{row['name']:<12} {row['endpoint_id']}  {where:<40} "
            f"{seen[connected if isinstance(connected, bool) else None]}"
        )
    return "\n".join(lines)


def _connected(ctx: Context, endpoint_ids: list[str]) -> dict[str, bool | None]:
    """Whether Globus sees each endpoint's GCP connected; empty when it cannot be asked.

    An endpoint Globus does not know (deleted in the web app, say) is one warning
    naming it, and the others are still asked: one stale entry must not hide the pool."""
    if not ctx.cfg.globus_client_id or not ctx.logged_in or not endpoint_ids:
        return {}
    from ..globusapi import GlobusApiError, describe
    from ..transfers import endpoint_seen

    seen: dict[str, bool | None] = {}
    try:
        tc = ctx.session().transfer()
        for endpoint_id in endpoint_ids:
            try:
                seen[endpoint_id] = endpoint_seen(tc, endpoint_id)
            except GlobusApiError as exc:
                if exc.code != "EndpointNotFound":
                    raise
                warn(describe(exc))
    except Exception as exc:
        warn(f"cannot ask Globus: {describe(exc)}")
        return {}
    return seen


def _when(stamp: object) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(stamp)))  # type: ignore[arg-type]


COMMANDS = (
    Command("setup", "create GCP endpoints in Globus for your pool", setup, _setup_arguments),
    Command(
        "list",
        "your pool: entries, endpoint ids, leases",
        list_pool,
        _list_arguments,
        json_dest="list_json",
    ),
    Command("remove", "delete a pool entry in Globus and on disk", remove, _remove_arguments),
    Command(
        "adopt",
        "move a set-up GCP config dir (e.g. ~/.globusonline) into your pool",
        adopt,
        _adopt_arguments,
    ),
)
