"""Benchmark of leases at scale, and of drains sharing the Transfer API.

Leases: N processes stand for the N nodes of one wide job, all leasing at the same
moment from one pool of N entries on a local directory, each file-system call delayed
by ``--delay-ms`` to model a network file system (NFS, Lustre). Printed per N: time
until every node holds a lease (median, p99, max), duplicates (must be 0),
file-system calls per lease, and the same for the release. Two probe orders: ``job``
(a node starts at its index in the job's node list, as the Prolog does) and ``hash``
(a hash of the node name, as when the node list is unknown).
Goal: N = 1000 at 5 ms per call, p99 under 2 s, zero duplicates.

Drains: one user draining on ``--drains`` nodes at once, each asking every poll
interval whether a task still uses its endpoint, through the real code
(``transfers.active_tasks_on`` with the shared answer) against the project's
Transfer/Auth API emulator. Printed: ``task_list`` calls per poll interval (goal: 1).

Run from the test venv: ``/opt/globus-tmp-test/venv/bin/python bench/leases.py``
(``--nodes 10,100,1000 --delay-ms 5``). Uses only scratch directories under /tmp.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lib"))

from benchlab import pct  # noqa: E402
from globus_tmp.leases import FsOps, Holder  # noqa: E402
from globus_tmp.pool import EndpointPool  # noqa: E402


class SlowFs(FsOps):
    """Every call ``delay`` seconds late, counted."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0

    def _wait(self) -> None:
        self.calls += 1
        time.sleep(self.delay)

    def listdir(self, path: Path) -> list[str]:
        self._wait()
        return super().listdir(path)

    def read(self, path: Path) -> bytes:
        self._wait()
        return super().read(path)

    def write_new(self, path: Path, data: bytes) -> None:
        self._wait()
        super().write_new(path, data)

    def link(self, source: Path, target: Path) -> None:
        self._wait()
        super().link(source, target)

    def nlink(self, path: Path) -> int:
        self._wait()
        return super().nlink(path)

    def unlink(self, path: Path) -> None:
        self._wait()
        super().unlink(path)

    def replace(self, source: Path, target: Path) -> None:
        self._wait()
        super().replace(source, target)


class Nothing:
    def stale(self, record: object, entry: object) -> None:
        return None


def _node(root: str, index: int, mode: str, delay: float, go: Any, hold: Any, out: Any) -> None:
    fs = SlowFs(delay)
    pool = EndpointPool(Path(root), fs)
    me = Holder("bench", f"node{index:04d}", "boot")
    slot = 7919 + index if mode == "job" else None
    go.wait()
    start = time.monotonic()
    try:
        entry, _ = pool.lease("bench", me, Nothing(), slot=slot)
        name = entry.name
    except Exception as exc:
        out.put(("error", index, str(exc)))
        return
    out.put(("leased", index, name, time.monotonic() - start, fs.calls))
    hold.wait()  # every node holds its lease at once, then all release together
    fs.calls = 0
    start = time.monotonic()
    released = pool.release(name, me)
    out.put(("released", index, released, time.monotonic() - start, fs.calls))


def bench_leases(n: int, mode: str, delay: float) -> str:
    scratch = Path(tempfile.mkdtemp(prefix="globus-tmp-bench-leases-"))
    try:
        pool = EndpointPool(scratch / "user_dir")
        for i in range(n):
            lta = pool.endpoints_dir / f"ep{i:04d}" / "lta"
            lta.mkdir(parents=True)
            (lta / "client-id.txt").write_text(str(uuid.uuid4()))
        ctx = multiprocessing.get_context("fork")
        go, hold, out = ctx.Event(), ctx.Event(), ctx.Queue()
        procs = [
            ctx.Process(target=_node, args=(str(pool.root), i, mode, delay, go, hold, out))
            for i in range(n)
        ]
        for proc in procs:
            proc.start()
        time.sleep(0.5 + n / 500)  # every node is waiting at the gate
        go.set()
        leases = [_message(out, "leased") for _ in range(n)]
        hold.set()
        releases = [_message(out, "released") for _ in range(n)]
        for proc in procs:
            proc.join(60)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    names = [r[2] for r in leases]
    took = [r[3] for r in leases]
    freed = [r[3] for r in releases]
    dup = len(names) - len(set(names))
    lost = sum(1 for r in releases if not r[2])
    return (
        f"{n:>5} {mode:<4} lease s: median {statistics.median(took):.3f} "
        f"p99 {pct(took, 0.99):.3f} max {max(took):.3f}  duplicates {dup}  "
        f"calls/lease {statistics.mean(r[4] for r in leases):.1f}  |  release s: "
        f"median {statistics.median(freed):.3f} p99 {pct(freed, 0.99):.3f}  "
        f"calls/release {statistics.mean(r[4] for r in releases):.1f}  not released {lost}"
    )


def _message(out: Any, kind: str) -> tuple[Any, ...]:
    msg: tuple[Any, ...] = out.get(timeout=300)
    if msg[0] == "error":
        raise SystemExit(f"node {msg[1]}: {msg[2]}")
    assert msg[0] == kind, msg
    return msg


def _drain(cfg: Any, user_dir: str, endpoint: str, interval: float, rounds: int) -> None:
    from globus_tmp.transfers import active_tasks_on

    random.seed(os.getpid())
    start = time.time()
    for k in range(rounds):
        time.sleep(max(start + k * interval + random.uniform(0, interval) - time.time(), 0))
        active_tasks_on(cfg, Path(user_dir), endpoint, max_age=interval)


def bench_drains(drains: int, interval: float, rounds: int) -> str:
    import globus_api
    from globus_sdk.token_storage import SQLiteTokenStorage
    from globus_tmp.config import Config

    scratch = Path(tempfile.mkdtemp(prefix="globus-tmp-bench-drains-"))
    server = globus_api.EmulatorServer(port=0, state_file=str(scratch / "api.json")).start()
    try:
        client_id = "5b9a6f6e-8bb5-4c5a-9b9e-5d6a7f1e2c3d"
        admin = globus_api.AdminClient(server.url)
        tokens = admin.mint_tokens(
            "bench@example.org", scopes=globus_api.USER_APP_SCOPES, client_id=client_id
        )
        user_dir = scratch / "user_dir"
        user_dir.mkdir()
        globus_api.seed_token_storage(SQLiteTokenStorage(user_dir / "tokens.db"), tokens)
        url = server.url.rstrip("/") + "/"
        cfg = Config(
            globus_client_id=client_id,
            globus_service_urls=(("auth", url), ("transfer", url)),
        )
        for name, value in cfg.globus_service_urls:
            os.environ[f"GLOBUS_SDK_SERVICE_URL_{name.upper()}"] = value

        def hits() -> int:
            return int(admin._call("GET", "_emulator/state")["route_hits"].get("task_list", 0))

        before = hits()
        ctx = multiprocessing.get_context("fork")
        procs = [
            ctx.Process(
                target=_drain, args=(cfg, str(user_dir), str(uuid.uuid4()), interval, rounds)
            )
            for _ in range(drains)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(120)
        calls = hits() - before
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return (
        f"{drains} drains of one user, {rounds} poll intervals of {interval:g} s: "
        f"{calls} task_list calls = {calls / rounds:.2f} per interval (goal: 1)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", default="10,100,1000")
    parser.add_argument("--delay-ms", type=float, default=5.0)
    parser.add_argument("--drains", type=int, default=100)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    delay = args.delay_ms / 1000
    print(f"leases: every file-system call delayed {args.delay_ms:g} ms; N nodes, N entries")
    for n in (int(x) for x in args.nodes.split(",")):
        for mode in ("job", "hash"):
            print(bench_leases(n, mode, delay), flush=True)
    print(bench_drains(args.drains, args.interval, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
