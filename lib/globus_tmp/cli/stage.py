"""``stage-out``, ``stage-in``, ``stage-status``: Globus transfers between node-local
storage and other endpoints, now or (``stage-out --at-exit``) when the job ends."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..stageout import SYNC_LEVELS
from .context import Command, Context
from .lookup import this_node
from .output import PROG, Output, warn

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any

    from ..lookup import EndpointInfo
    from ..transfers import Place


def _transfer_arguments(
    name: str, source: str, destination: str
) -> Callable[[argparse.ArgumentParser], None]:
    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("source", metavar=source)
        parser.add_argument("destination", metavar=destination)
        parser.add_argument(
            "--wait",
            action="store_true",
            dest="follow",
            help="follow the task with a progress bar; fail if it fails",
        )
        parser.add_argument("--label", help="task label (default: globus-tmp job JOBID)")
        parser.add_argument(
            "--sync-level",
            choices=SYNC_LEVELS,
            help="copy only files that are missing or differ by this measure at the destination",
        )
        parser.add_argument(
            "--no-verify-checksum",
            action="store_false",
            dest="verify_checksum",
            help="do not verify checksums after the copy (verified by default)",
        )
        if name == "stage-out":
            parser.add_argument(
                "--at-exit",
                action="store_true",
                help="submit it when this job ends on this node, however it ends "
                "(time limit, cancel, failure); see stage-status",
            )

    return configure


def stage_out(ctx: Context, args: argparse.Namespace) -> Output:
    info = this_node(ctx.cfg, ctx.user.name, os.environ)
    if args.at_exit:
        return _declare(ctx, info, args)
    from ..stageout import translate
    from ..transfers import Place

    path = os.path.abspath(args.source)
    source = Place(info.endpoint_id, translate(path, info.job_tmp))
    return _submit(ctx, args, source, Place.parse(args.destination), os.path.isdir(path))


def stage_in(ctx: Context, args: argparse.Namespace) -> Output:
    info = this_node(ctx.cfg, ctx.user.name, os.environ)
    from ..stageout import translate
    from ..transfers import Place

    source = Place.parse(args.source)
    local = translate(os.path.abspath(args.destination), info.job_tmp)
    return _submit(ctx, args, source, Place(info.endpoint_id, local), source.path.endswith("/"))


def _submit(
    ctx: Context, args: argparse.Namespace, source: Place, destination: Place, recursive: bool
) -> Output:
    """Submit the transfer; the answer is its task id, then ``--wait`` follows it."""
    from ..transfers import follow, submit

    label = args.label or f"globus-tmp job {os.environ.get('SLURM_JOB_ID', '-')}"
    session = ctx.session()
    task_id = submit(
        session, source, destination, recursive, label, args.sync_level, args.verify_checksum
    )
    then = (lambda: follow(session, task_id)) if args.follow else None
    return Output(task_id, {"task_id": task_id}, then=then)


def _declare(ctx: Context, info: EndpointInfo, args: argparse.Namespace) -> Output:
    """``stage-out --at-exit``: record it for the Epilog; no network, nothing submitted."""
    import uuid

    from ..nodestate import marks_dir
    from ..slurmconf import cluster_name
    from ..stageout import StageOut, StageOutError, StageOutStore, translate
    from ..transfers import Place

    job_id = os.environ.get("SLURM_JOB_ID", "")
    if not job_id.isdigit():
        raise StageOutError("--at-exit works inside a Slurm job (no SLURM_JOB_ID here)")
    if args.follow:
        raise StageOutError("--at-exit and --wait exclude each other: the job will be over")
    path = os.path.abspath(args.source)
    exposed = ctx.cfg.exposed_paths
    if not any(path == p or path.startswith(p.rstrip("/") + "/") for p in exposed):
        raise StageOutError(
            f"{path} is not under {', '.join(exposed)}, which is all GCP can read; "
            "write the results there"
        )
    destination = Place.parse(args.destination)
    try:
        uuid.UUID(destination.endpoint_id)
    except ValueError:
        raise StageOutError(
            f"'{destination.endpoint_id}' is not an endpoint or collection id (a UUID)"
        ) from None
    if not ctx.logged_in:
        raise StageOutError(
            f"not logged in to Globus: the Epilog submits with your tokens; run '{PROG} login'"
        )
    marks = marks_dir(ctx.cfg.state_dir_for(info.node), ctx.user.name)
    record = StageOutStore(ctx.user_dir).declare(
        StageOut(
            cluster=cluster_name(ctx.cfg, os.environ),
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
        ),
        marks,
    )
    return Output(
        f"declared: {path} -> {args.destination} when job {job_id} ends on {info.node} "
        f"(follow it with '{PROG} stage-status {job_id}')",
        exit_code=0 if record else 1,
    )


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", nargs="?", metavar="JOBID", help="only this job")
    parser.add_argument("--json", action="store_true", dest="status_json")


def stage_status(ctx: Context, args: argparse.Namespace) -> Output:
    """Every stage-out of the user's jobs, refreshed from Globus where it is still open."""
    from dataclasses import asdict

    from ..stageout import SUBMITTED, StageOutStore, refresh

    store = StageOutStore(ctx.user_dir)
    records = store.records(None, args.job_id)
    if any(r.state == SUBMITTED for r in records):
        try:
            refresh(ctx.session, store, records)
        except Exception as exc:
            from ..globusapi import describe

            warn(f"cannot ask Globus, showing what is recorded: {describe(exc)}")
    rows = [asdict(r) for r in records]
    which = f"job {args.job_id}" if args.job_id else "your jobs"
    return Output(status_text(rows, which, str(store.root)), rows)


def status_text(rows: list[dict[str, Any]], which: str, root: str) -> str:
    """Stage-outs as a table; ``rows`` are the ``--json`` rows of :func:`stage_status`."""
    from ..transfers import human_size

    if not rows:
        return f"no stage-out declared by {which} (in {root})"
    lines = [
        f"{'JOB':<10} {'NODE':<10} {'STATE':<10} {'TASK':<36}  {'BYTES':>10}  SOURCE -> DESTINATION"
    ]
    for r in rows:
        moved = human_size(r["bytes_transferred"]) if r["bytes_transferred"] is not None else "-"
        lines.append(
            f"{r['job_id']:<10} {r['node']:<10} {r['state']:<10} {r['task_id'] or '-':<36}  "
            f"{moved:>10}  {r['source']} -> {r['destination_endpoint']}:{r['destination_path']}"
        )
        if r["error"]:
            lines.append(f"{'':<10} {r['error']}")
        if r.get("note"):
            lines.append(f"{'':<10} {r['note']}")
    return "\n".join(lines)


COMMANDS = (
    Command(
        "stage-out",
        "copy node-local data to another endpoint",
        stage_out,
        _transfer_arguments("stage-out", "SRC", "DEST_ENDPOINT:PATH"),
    ),
    Command(
        "stage-in",
        "copy data from another endpoint to node-local storage",
        stage_in,
        _transfer_arguments("stage-in", "SRC_ENDPOINT:PATH", "DEST"),
    ),
    Command(
        "stage-status",
        "your declared and submitted stage-outs (works on any node)",
        stage_status,
        _status_arguments,
        json_dest="status_json",
    ),
)
