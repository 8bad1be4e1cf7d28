"""``globus-tmp-endpoint``: this node's endpoint for the calling user, the pool, transfers.

Run inside a job with no command: prints the endpoint id (exit 0), or one line saying
why there is none and what to do (exit 1). The commands manage the user's pool and
Globus session and move data in and out of node-local storage. Exit codes: 0 ok,
1 failed, 2 usage, 3 configuration, 130 interrupted (docs/ADMIN.md).

The commands are a table (:data:`COMMAND_MODULES`: one module per group, each with
its ``COMMANDS`` rows); each returns an :class:`~globus_tmp.cli.output.Output` that
one printer renders as text or ``--json``. Only the lookup is on a path that every job
may take: ``globus-tmp-endpoint`` and ``globus-tmp-endpoint --json`` skip argparse and
import only :mod:`globus_tmp.cli.lookup`; the command modules (and globus-sdk, when a
command talks to Globus) are imported when a command runs.
"""

from __future__ import annotations

import os
import sys

from .output import PROG, Output, emit

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from .context import Command

__all__ = ["COMMAND_MODULES", "PROG", "build_parser", "commands", "main"]

COMMAND_MODULES = ("account", "pool", "stage")
"""The command groups, in the order ``--help`` lists their commands."""


def commands() -> dict[str, Command]:
    """The command table: name -> row, from every group module."""
    from importlib import import_module

    table: dict[str, Command] = {}
    for name in COMMAND_MODULES:
        for command in import_module(f"{__name__}.{name}").COMMANDS:
            table[command.name] = command
    return table


def build_parser(table: dict[str, Command] | None = None) -> argparse.ArgumentParser:
    import argparse

    from .. import __version__

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
    for command in (commands() if table is None else table).values():
        command_parser = sub.add_parser(command.name, help=command.help)
        if command.configure is not None:
            command.configure(command_parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args == [] or args == ["--json"]:  # the lookup every job runs: no argparse
        sys.exit(_guarded(lambda: _lookup(bool(args), None)))
    table = commands()
    parsed = build_parser(table).parse_args(args)
    if parsed.command is None:
        sys.exit(_guarded(lambda: _lookup(parsed.json, parsed.wait)))
    sys.exit(_guarded(lambda: _run(table[parsed.command], parsed)))


def _lookup(as_json: bool, wait: float | None) -> int:
    from .lookup import show

    return emit(show(os.environ, wait), as_json)


def _run(command: Command, args: argparse.Namespace) -> int:
    from .context import Context

    output: Output = command.run(Context.current(), args)
    return emit(output, command.wants_json(args))


def _guarded(run: Callable[[], int]) -> int:
    """``run``'s exit code; every failure as one line on stderr, not a traceback."""
    from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, GlobusTmpError

    try:
        return run()
    except GlobusTmpError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # a Globus or network failure: one line, not a traceback
        if os.environ.get("GLOBUS_TMP_DEBUG"):
            raise
        from ..globusapi import describe

        print(f"{PROG}: {describe(exc)} (GLOBUS_TMP_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_FAILED
