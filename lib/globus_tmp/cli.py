"""``globus-tmp-endpoint``: this node's endpoint for the calling user, the pool, transfers.

Run inside a job with no command: prints the endpoint id (exit 0), or one line saying
why there is none and what to do (exit 1). The commands manage the user's pool and
Globus session and move data in and out of node-local storage. Exit codes: 0 ok,
1 failed, 2 usage, 3 configuration.

Only the lookup is on a path that every job may take: the Globus commands import
globus-sdk when they run, not before.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .config import Config, load_config
from .errors import GlobusTmpError
from .job import UserIdentity, node_name
from .lookup import EndpointInfo, NoEndpoint, lookup
from .stageout import SYNC_LEVELS

if TYPE_CHECKING:
    from .globusapi import GlobusSession
    from .pool import EndpointPool

PROG = "globus-tmp-endpoint"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Print this node's Globus endpoint id for you (run it inside a Slurm job).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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
    sub.add_parser("login", help="log in to Globus (tokens kept in your globus-tmp dir)")
    sub.add_parser("logout", help="revoke and forget your Globus tokens")
    setup = sub.add_parser("setup", help="create GCP endpoints in Globus for your pool")
    setup.add_argument("--count", type=int, required=True, help="pool size (entries ep1..epN)")
    listing = sub.add_parser("list", help="your pool: entries, endpoint ids, leases")
    listing.add_argument("--json", action="store_true", dest="list_json")
    remove = sub.add_parser("remove", help="delete a pool entry in Globus and on disk")
    remove.add_argument("name")
    adopt = sub.add_parser(
        "adopt", help="move a set-up GCP config dir (e.g. ~/.globusonline) into your pool"
    )
    adopt.add_argument("dir", type=Path, help="the GCP config dir (its lta/ holds client-id.txt)")
    adopt.add_argument("--name", help="pool entry name (default: from the dir's name)")
    for name, what, src, dst in (
        ("stage-out", "copy node-local data to another endpoint", "SRC", "DEST_ENDPOINT:PATH"),
        (
            "stage-in",
            "copy data from another endpoint to node-local storage",
            "SRC_ENDPOINT:PATH",
            "DEST",
        ),
    ):
        stage = sub.add_parser(name, help=what)
        stage.add_argument("source", metavar=src)
        stage.add_argument("destination", metavar=dst)
        stage.add_argument(
            "--wait",
            action="store_true",
            dest="follow",
            help="follow the task with a progress bar; fail if it fails",
        )
        stage.add_argument("--label", help="task label (default: globus-tmp job JOBID)")
        stage.add_argument(
            "--sync-level",
            choices=SYNC_LEVELS,
            help="copy only files that are missing or differ by this measure at the destination",
        )
        stage.add_argument(
            "--no-verify-checksum",
            action="store_false",
            dest="verify_checksum",
            help="do not verify checksums after the copy (verified by default)",
        )
        if name == "stage-out":
            stage.add_argument(
                "--at-exit",
                action="store_true",
                help="submit it when this job ends on this node, however it ends "
                "(time limit, cancel, failure); see stage-status",
            )
    status = sub.add_parser(
        "stage-status", help="your declared and submitted stage-outs (works on any node)"
    )
    status.add_argument("job_id", nargs="?", metavar="JOBID", help="only this job")
    status.add_argument("--json", action="store_true", dest="status_json")
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
    except Exception as exc:  # a Globus or network failure: one line, not a traceback
        if os.environ.get("GLOBUS_TMP_DEBUG"):
            raise
        from .globusapi import describe

        print(f"{PROG}: {describe(exc)} (GLOBUS_TMP_DEBUG=1 shows the traceback)", file=sys.stderr)
        sys.exit(1)


def _run(args: argparse.Namespace) -> int:
    cfg = load_config()
    user = UserIdentity.current()
    user_dir = cfg.user_dir_for(user.home)
    os.umask(0o077)
    command = args.command
    if command is None:
        return _show(cfg, user, args.json, args.wait)
    if command in ("stage-out", "stage-in"):
        return _stage(cfg, user, user_dir, args)
    if command == "stage-status":
        return _stage_status(cfg, user_dir, args.job_id, args.status_json)
    if command == "login":
        _session(cfg, user_dir, interactive=True).login()
        print(f"logged in; tokens in {user_dir / 'tokens.db'}")
        return 0
    if command == "logout":
        _session(cfg, user_dir, interactive=False).logout()
        print("logged out")
        return 0
    pool = _pool(user_dir)
    if command == "adopt":
        entry = pool.adopt(args.dir, args.name)
        print(f"added {entry.name} (endpoint {entry.endpoint_id}) to {pool.endpoints_dir}")
        return 0
    if command == "list":
        return _list(cfg, pool, user_dir, args.list_json)
    from .gcp import GcpCommand
    from .provision import EndpointProvisioner

    provisioner = EndpointProvisioner(
        pool, _session(cfg, user_dir, interactive=False), GcpCommand(cfg.gcp_path), user.name
    )
    if command == "setup":
        entries = provisioner.setup(args.count)
        print(f"pool of {len(entries)} endpoint(s) ready in {pool.endpoints_dir}")
        return 0
    if command == "remove":
        endpoint_id = provisioner.remove(args.name)
        print(f"removed {args.name} (endpoint {endpoint_id})")
        return 0
    raise AssertionError(command)  # pragma: no cover


def _session(cfg: Config, user_dir: Path, interactive: bool) -> GlobusSession:
    from .globusapi import GlobusSession

    return GlobusSession(cfg, user_dir, interactive)


def _pool(user_dir: Path) -> EndpointPool:
    from .pool import EndpointPool

    return EndpointPool(user_dir)


def _this_node(cfg: Config, user: UserIdentity, wait: float | None) -> EndpointInfo:
    deadline = time.monotonic() + (wait or 0)
    while True:
        try:
            return lookup(cfg, node_name(os.environ), user.name, os.environ.get("SLURM_JOB_ID"))
        except NoEndpoint:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def _show(cfg: Config, user: UserIdentity, as_json: bool, wait: float | None) -> int:
    info = _this_node(cfg, user, wait)
    print(json.dumps(info.as_json(), indent=2) if as_json else info.endpoint_id)
    return 0


def _stage(cfg: Config, user: UserIdentity, user_dir: Path, args: argparse.Namespace) -> int:
    from .stageout import translate
    from .transfers import Place, follow, submit

    info = _this_node(cfg, user, None)
    if args.command == "stage-out" and args.at_exit:
        return _declare(cfg, user_dir, info, args)
    local = info.endpoint_id
    if args.command == "stage-out":
        path = os.path.abspath(args.source)
        source = Place(local, translate(path, info.job_tmp))
        destination = Place.parse(args.destination)
        recursive = os.path.isdir(path)
    else:
        source = Place.parse(args.source)
        destination = Place(local, translate(os.path.abspath(args.destination), info.job_tmp))
        recursive = source.path.endswith("/")
    label = args.label or f"globus-tmp job {os.environ.get('SLURM_JOB_ID', '-')}"
    session = _session(cfg, user_dir, interactive=False)
    task_id = submit(
        session, source, destination, recursive, label, args.sync_level, args.verify_checksum
    )
    print(task_id)
    sys.stdout.flush()
    if args.follow:
        follow(session, task_id)
    return 0


def _declare(cfg: Config, user_dir: Path, info: EndpointInfo, args: argparse.Namespace) -> int:
    """``stage-out --at-exit``: record it for the Epilog; no network, nothing submitted."""
    import uuid

    from .slurmconf import cluster_name
    from .stageout import StageOut, StageOutError, StageOutStore, translate
    from .transfers import Place

    job_id = os.environ.get("SLURM_JOB_ID", "")
    if not job_id.isdigit():
        raise StageOutError("--at-exit works inside a Slurm job (no SLURM_JOB_ID here)")
    if args.follow:
        raise StageOutError("--at-exit and --wait exclude each other: the job will be over")
    path = os.path.abspath(args.source)
    if not any(path == p or path.startswith(p.rstrip("/") + "/") for p in cfg.exposed_paths):
        raise StageOutError(
            f"{path} is not under {', '.join(cfg.exposed_paths)}, which is all GCP can read; "
            "write the results there"
        )
    destination = Place.parse(args.destination)
    try:
        uuid.UUID(destination.endpoint_id)
    except ValueError:
        raise StageOutError(
            f"'{destination.endpoint_id}' is not an endpoint or collection id (a UUID)"
        ) from None
    if not (user_dir / "tokens.db").exists():
        raise StageOutError(
            f"not logged in to Globus: the Epilog submits with your tokens; run '{PROG} login'"
        )
    record = StageOutStore(user_dir).declare(
        StageOut(
            cluster=cluster_name(cfg, os.environ),
            job_id=job_id,
            node=info.node,
            seq=0,
            source=path,
            source_path=translate(path, info.job_tmp),
            destination_endpoint=destination.endpoint_id,
            destination_path=destination.path,
            label=args.label or f"globus-tmp job {job_id} stage-out",
            sync_level=args.sync_level,
            verify_checksum=args.verify_checksum,
        )
    )
    print(
        f"declared: {path} -> {args.destination} when job {job_id} ends on {info.node} "
        f"(follow it with '{PROG} stage-status {job_id}')"
    )
    return 0 if record else 1


def _stage_status(cfg: Config, user_dir: Path, job_id: str | None, as_json: bool) -> int:
    """Every stage-out of the user's jobs, refreshed from Globus where it is still open."""
    from .stageout import SUBMITTED, StageOutStore, refresh
    from .transfers import human_size

    store = StageOutStore(user_dir)
    records = store.records(None, job_id)
    if any(r.state == SUBMITTED for r in records):
        try:
            refresh(lambda: _session(cfg, user_dir, interactive=False), store, records)
        except Exception as exc:
            from .globusapi import describe

            print(f"{PROG}: cannot ask Globus, showing what is recorded: {describe(exc)}",
                  file=sys.stderr)  # fmt: skip
    if as_json:
        from dataclasses import asdict

        print(json.dumps([asdict(r) for r in records], indent=2))
        return 0
    if not records:
        which = f"job {job_id}" if job_id else "your jobs"
        print(f"no stage-out declared by {which} (in {store.root})")
        return 0
    print(
        f"{'JOB':<10} {'NODE':<10} {'STATE':<10} {'TASK':<36}  {'BYTES':>10}  SOURCE -> DESTINATION"
    )
    for r in records:
        moved = human_size(r.bytes_transferred) if r.bytes_transferred is not None else "-"
        print(
            f"{r.job_id:<10} {r.node:<10} {r.state:<10} {r.task_id or '-':<36}  {moved:>10}  "
            f"{r.source} -> {r.destination_endpoint}:{r.destination_path}"
        )
        if r.error:
            print(f"{'':<10} {r.error}")
    return 0


def _list(cfg: Config, pool: EndpointPool, user_dir: Path, as_json: bool) -> int:
    entries = pool.entries()
    leases = pool.leases()
    connected = _connected(cfg, user_dir, [e.endpoint_id for e in entries])
    if as_json:
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
        print(json.dumps(rows, indent=2))
        return 0
    if not entries:
        print(f"no endpoints in {pool.endpoints_dir}; run '{PROG} setup --count N' or 'adopt DIR'")
        return 0
    seen = {True: "connected", False: "not connected", None: "Globus not asked"}
    for e in entries:
        held = leases.get(e.name)
        where = f"leased to {held.owner} since {_when(held.since)}" if held else "free"
        if held and held.phase == "draining" and held.drain_until:
            where += f", draining until {_when(held.drain_until)}"
        print(f"{e.name:<12} {e.endpoint_id}  {where:<40} {seen[connected.get(e.endpoint_id)]}")
    return 0


def _connected(cfg: Config, user_dir: Path, endpoint_ids: list[str]) -> dict[str, bool | None]:
    """Whether Globus sees each endpoint's GCP connected; empty when it cannot be asked."""
    if not cfg.globus_client_id or not (user_dir / "tokens.db").exists() or not endpoint_ids:
        return {}
    try:
        tc = _session(cfg, user_dir, interactive=False).transfer()
        return {i: bool(tc.get_endpoint(i)["gcp_connected"]) for i in endpoint_ids}
    except Exception as exc:
        from .globusapi import describe

        print(f"{PROG}: cannot ask Globus: {describe(exc)}", file=sys.stderr)
        return {}


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
