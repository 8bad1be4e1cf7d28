"""``globus-api-emulator`` command line: serve until SIGTERM/SIGINT, then save and exit 0."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections.abc import Sequence
from typing import Optional

from .common import DEFAULT_CHUNK, DEFAULT_DEADLINE, DEFAULT_TOKEN_LIFETIME
from .server import EmulatorServer

DESCRIPTION = "Emulator of the Globus Transfer (v0.10) and Auth (v2) APIs"


def _write_port_file(path: str, port: int) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(f"{port}\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``globus-api-emulator [--port N] [--port-file F] [--state-file F] ...``; runs until
    SIGTERM/SIGINT, then saves the state and exits 0."""
    parser = argparse.ArgumentParser(prog="globus-api-emulator", description=DESCRIPTION)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any)")
    parser.add_argument("--port-file", help="write the port number there once listening")
    parser.add_argument("--state-file", help="persist state to this JSON file")
    parser.add_argument(
        "--gcp-timeout",
        type=float,
        default=10.0,
        help="seconds without heartbeat before gcp_connected is false",
    )
    parser.add_argument(
        "--poll-wait", type=float, default=5.0, help="long-poll duration of GCP work polls"
    )
    parser.add_argument("--token-lifetime", type=int, default=DEFAULT_TOKEN_LIFETIME)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK)
    parser.add_argument(
        "--default-deadline",
        type=float,
        default=DEFAULT_DEADLINE,
        help="seconds from submission to a task's default deadline",
    )
    parser.add_argument("--checksum-algorithm", default="sha256", choices=["sha256", "md5"])
    parser.add_argument(
        "--collection",
        action="append",
        default=[],
        metavar="PATH",
        help="create a served collection for PATH at start (prints its id)",
    )
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)
    server = EmulatorServer(
        args.port,
        state_file=args.state_file,
        gcp_timeout=args.gcp_timeout,
        poll_wait=args.poll_wait,
        token_lifetime=args.token_lifetime,
        chunk_size=args.chunk_size,
        default_deadline=args.default_deadline,
        checksum_algorithm=args.checksum_algorithm,
        verbose=args.verbose,
    )
    for path in args.collection:
        doc = server.emulator.create_collection(path, create=True)
        print(f"collection {doc['id']} {path}", flush=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    if args.port_file:
        _write_port_file(args.port_file, server.port)
    print(f"globus-api-emulator listening on {server.url}", flush=True)
    while not stop.wait(1.0):
        pass
    server.stop()
    return 0
