"""Benchmark of what globus-tmp adds to a job's start, against a bare interpreter start.

Runs the real installed hooks (``globus-tmp-prolog``, ``globus-tmp-epilog`` beside the
interpreter), as root with slurmd's environment, against the GCP emulator, for the
user ``gtbench`` (``benchlab.Lab``), and prints five figures, each with its goal and
``ok``/``OVER`` (exit 1 if a goal is missed):

1. **cold Prolog** (no GCP of the user on the node): its wall time beyond
   ``python -c pass`` (measured in the same run), for each ``--connect-delays`` of the
   emulator (seconds until GCP says ``connected``). Goal: under 0.2 s for every delay, so
   independent of GCP's connect.
2. **every job's paths**, with the user's home hung (``bench/hot_paths.py``'s first two
   rows): the Prolog's join path and the Epilog's non-last path. Goal: 4x each.
3. **back-to-back jobs**: ``--jobs`` one-second jobs of one user on one node (Prolog,
   ``sleep 1``, Epilog, next), with the Transfer API configured (the Globus API emulator
   in this process) so that the Epilog sees a verified idle GCP. Printed: GCP starts
   (``-start`` calls in the emulator's call log; goal: 1, ``idle_linger`` keeps GCP up
   for the next job) and the Prolog's wall time p50 (goal: 4x, a join) and p99 (goal:
   under 0.2 s beyond a bare start, the cold goal).
4. **a wide job**: its Prolog on ``--nodes`` simulated nodes at once (one job id, its node
   list ``wn[0000-...]``, one pool entry per node), each in a mount namespace with its
   own ``/tmp`` (GCP's control socket, ``/tmp/globusconnect_<uid>.sock``, is per host),
   so each node's GCP lives in its node's namespace. Goal: every node leased an entry
   and none twice (each node's ``instance.endpoint_name`` in its state file). Printed
   besides: p99 and max of the Prolog's wall time, and the floor the machine sets
   (all Prologs' CPU over its cores). ``--nodes auto`` (the default) runs as many nodes
   as fit in half the available memory, at most 1000, from the peak RSS of one cold
   Prolog and of one emulator (both processes of its session) measured first; it says
   what it ran.
5. **CPU of a cold Prolog** with its steps as the user (``wait4``'s rusage: the Prolog
   and the children it waited for; GCP is detached and not counted), plus the connect
   watcher's own CPU when the Prolog's log says ``(watcher cpu N ms)``. Goal: under
   60 ms.

Run as root (it creates the user, pools, scratch under ``/run/globus-tmp-bench`` and
cgroups ``globus-tmp-bench``, and removes them, with every process it started, at the
end): ``/opt/globus-tmp-test/venv/bin/python bench/job_start.py [--figures 1,2,3,4,5]
[--nodes auto|N] [--connect-delays 1,5] [--jobs 100] [--runs 20]``. Figure 4 with 1000
nodes keeps both cores busy for minutes: run it rarely. Config keys the installed
version does not know (``start_wait``, ``idle_linger`` before they existed) are left
out of the file and named in the output.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import benchlab
import hot_paths
from benchlab import Lab, Run

COLD_GOAL = 0.2  # seconds beyond a bare start
JOIN_GOAL = hot_paths.GOALS["prolog join path"]
CPU_GOAL = 0.060
WATCHER_CPU = "watcher cpu "


class Verdicts:
    """Every goal's outcome, printed as it is judged."""

    def __init__(self) -> None:
        self.missed: list[str] = []

    def judge(self, what: str, ok: bool, line: str) -> None:
        print(f"  {line}  [{benchlab.verdict(ok)}]")
        if not ok:
            self.missed.append(what)


def show_skipped(world: Lab) -> str:
    return (
        f" (not known to this version, left out: {', '.join(world.skipped)})"
        if world.skipped
        else ""
    )


def start_wait(world: Lab) -> str:
    """What a cold Prolog waits for in this version, for the figures' titles."""
    if not world.knows("start_wait"):
        return "until GCP is connected (no start_wait in this version)"
    return "start_wait default"


# -- figure 1 and 5: cold starts -------------------------------------------------------


def session_memory(pid: int) -> tuple[int, int, int]:
    """Bytes resident (RSS) and unique to them (USS: what each more of them costs) of
    the processes in ``pid``'s session, and how many they are."""
    import psutil

    try:
        sid = os.getsid(pid)
    except OSError:
        return 0, 0, 0
    rss = uss = count = 0
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) == sid:
                info = proc.memory_full_info()
                rss, uss, count = rss + info.rss, uss + info.uss, count + 1
        except (OSError, psutil.Error):
            continue
    return rss, uss, count


def watcher_cpu(world: Lab, node: str, wait: float) -> float | None:
    """The connect watcher's CPU seconds from the node's hook log, waiting up to ``wait``
    for its line; None if the version has no watcher line."""
    deadline = time.monotonic() + wait
    while True:
        log = world.hook_log(node)
        at = log.rfind(WATCHER_CPU)
        if at >= 0:
            digits = log[at + len(WATCHER_CPU) :].split(" ", 1)[0]
            try:
                return float(digits) / 1000
            except ValueError:
                return None
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


class Cold:
    """Cold Prologs at one connect delay: wall and CPU of each, the watcher's CPU."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.runs: list[Run] = []
        self.watcher: list[float] = []
        self.failed: list[str] = []
        self.gcp_rss = self.gcp_uss = self.gcp_procs = 0


def cold_starts(delay: float, runs: int, interval: float) -> Cold:
    """``runs`` cold Prologs, each on a node of its own (a /tmp of its own)."""
    out = Cold(delay)
    with benchlab.lab(pool=runs) as world:
        world.configure(
            gcp_path=world.gcp_wrapper(
                "cold", CONNECT_DELAY=delay, STATUS_INTERVAL=interval, STOP_DELAY=0.3
            )
        )
        watched = world.knows("start_wait")
        for i in range(runs):
            node = f"cold{i:02d}"
            run = world.hook("prolog", str(100 + i), node, benchlab.node_tmp)
            out.runs.append(run.check("cold prolog"))
            state = world.state(node)
            if not (state.get("instance") or state.get("starting")):
                out.failed.append(f"{node}: {world.hook_log(node).strip().splitlines()[-1:]}")
                continue
            if watched:
                cpu = watcher_cpu(world, node, delay + 15)
                if cpu is not None:
                    out.watcher.append(cpu)
            pid = world.gcp_pid(node) or (state.get("starting") or {}).get("pid")
            if i == 0 and isinstance(pid, int):
                if not watched:  # the old Prolog returned once GCP was connected
                    time.sleep(0.2)
                out.gcp_rss, out.gcp_uss, out.gcp_procs = session_memory(pid)
        print(
            f"  connect delay {delay:g} s: a cold Prolog waits {start_wait(world)}"
            + show_skipped(world)
        )
    return out


def figure_cold(colds: list[Cold], bare: float, v: Verdicts) -> None:
    print(f"1. cold Prolog: time added to a job's start beyond a bare start ({bare * 1000:.1f} ms)")
    for c in colds:
        wall = statistics.median(r.wall for r in c.runs)
        extra = wall - bare
        v.judge(
            f"cold prolog at {c.delay:g} s",
            extra < COLD_GOAL and not c.failed,
            f"connect delay {c.delay:g} s: median {wall * 1000:.0f} ms = bare + {extra:.3f} s "
            f"({wall / bare:.1f}x; max {max(r.wall for r in c.runs) * 1000:.0f} ms, "
            f"{len(c.runs)} runs); goal: under bare + {COLD_GOAL:g} s",
        )
        for failure in c.failed:
            print(f"    no GCP started: {failure}")


def figure_cpu(colds: list[Cold], v: Verdicts) -> None:
    print("5. CPU of one cold Prolog with its user steps (not GCP itself)")
    for c in colds:
        own = statistics.median(r.cpu for r in c.runs)
        watcher = statistics.median(c.watcher) if c.watcher else 0.0
        note = f" + watcher {watcher * 1000:.0f} ms" if c.watcher else " (no watcher line)"
        total = own + watcher
        v.judge(
            f"cold prolog cpu at {c.delay:g} s",
            total < CPU_GOAL,
            f"connect delay {c.delay:g} s: {own * 1000:.0f} ms{note} = {total * 1000:.0f} ms; "
            f"goal: under {CPU_GOAL * 1000:.0f} ms",
        )


# -- figure 2: every job's paths --------------------------------------------------------


def figure_every_job(runs: int, bound: float, bare: float, v: Verdicts) -> None:
    with benchlab.lab() as world:
        rows, how = hot_paths.every_job_paths(world, runs, bound)
    print(f"2. every job's paths, home: hung ({how})")
    for name, samples in rows:
        wall = statistics.median(r.wall for r in samples)
        goal = hot_paths.GOALS[name]
        slow = f"; ended after {len(samples)} run(s) over {bound:g} s" if wall > bound else ""
        v.judge(
            name,
            wall / bare <= goal,
            f"{name}: median {wall * 1000:.1f} ms = {wall / bare:.2f}x bare{slow}; goal: {goal:g}x",
        )


# -- figure 3: back-to-back jobs --------------------------------------------------------

CLIENT_ID = "5b9a6f6e-8bb5-4c5a-9b9e-5d6a7f1e2c3d"


def seed_tokens(world: Lab, api_url: str) -> None:
    """The user logged in, as ``globus-tmp-endpoint login`` would leave tokens."""
    import globus_api
    from globus_sdk.token_storage import SQLiteTokenStorage

    tokens = globus_api.AdminClient(api_url).mint_tokens(
        f"{benchlab.USER}@example.org", scopes=globus_api.USER_APP_SCOPES, client_id=CLIENT_ID
    )
    path = world.user_dir / "tokens.db"
    globus_api.seed_token_storage(SQLiteTokenStorage(path), tokens)
    os.chown(path, world.pw.pw_uid, world.pw.pw_gid)
    path.chmod(0o600)


def gcp_starts(call_log: Path) -> int:
    try:
        lines = call_log.read_text().splitlines()
    except OSError:
        return 0
    return sum(1 for line in lines if "-start" in json.loads(line).get("argv", []))


def figure_back_to_back(jobs: int, delay: float, bare: float, v: Verdicts) -> None:
    import globus_api

    api_state = benchlab.SCRATCH.parent / "globus-tmp-bench-api.json"
    server = globus_api.EmulatorServer(port=0, state_file=str(api_state)).start()
    prologs: list[Run] = []
    try:
        with benchlab.lab() as world:
            calls = world.site.root / "gcp-calls.jsonl"
            calls.touch(0o666)
            calls.chmod(0o666)
            url = server.url.rstrip("/") + "/"
            world.configure(
                gcp_path=world.gcp_wrapper(
                    "b2b", CONNECT_DELAY=delay, STATUS_INTERVAL=0.5, STOP_DELAY=0.3, CALL_LOG=calls
                ),
                globus_client_id=CLIENT_ID,
                globus_service_urls={"auth": url, "transfer": url},
            )
            seed_tokens(world, server.url)
            for job in range(1, jobs + 1):
                prologs.append(world.hook("prolog", str(job)).check(f"prolog of job {job}"))
                time.sleep(1)
                world.hook("epilog", str(job)).check(f"epilog of job {job}")
            starts = gcp_starts(calls)
            linger = "idle_linger default" if world.knows("idle_linger") else "no idle_linger"
            skipped = show_skipped(world)
    finally:
        server.stop()
        api_state.unlink(missing_ok=True)
    walls = [r.wall for r in prologs]
    p50, p99 = benchlab.pct(walls, 0.5), benchlab.pct(walls, 0.99)
    print(
        f"3. {jobs} back-to-back 1 s jobs of one user on one node (connect delay {delay:g} s, "
        f"Transfer API on: the Epilog sees a verified idle; {linger}){skipped}"
    )
    v.judge("gcp starts", starts == 1, f"GCP starts: {starts}; goal: 1")
    v.judge(
        "back-to-back p50",
        p50 / bare <= JOIN_GOAL,
        f"Prolog p50 {p50 * 1000:.0f} ms = {p50 / bare:.1f}x bare; goal: {JOIN_GOAL:g}x",
    )
    v.judge(
        "back-to-back p99",
        p99 - bare < COLD_GOAL,
        f"Prolog p99 {p99 * 1000:.0f} ms = bare + {p99 - bare:.3f} s "
        f"(max {max(walls) * 1000:.0f} ms); "
        f"goal: under bare + {COLD_GOAL:g} s",
    )


# -- figure 4: a wide job -----------------------------------------------------------------


def meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in bytes."""
    with open("/proc/meminfo") as f:
        return {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}


def fitting_nodes(per_node: int) -> int:
    """Nodes whose Prolog and GCP fit in half the available memory, at most 1000."""
    return max(1, min(1000, meminfo()["MemAvailable"] // 2 // max(per_node, 1)))


class MemoryGuard:
    """Watches the machine's available memory while the nodes run: the lowest seen,
    and, below a tenth of the total, ends every process of the bench (others share
    this machine) and says so."""

    def __init__(self, world: Lab) -> None:
        self.world = world
        info = meminfo()
        self.before = self.low = info["MemAvailable"]
        self.floor = info["MemTotal"] // 10
        self.tripped = False
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self.done.wait(0.5):
            self.low = min(self.low, meminfo()["MemAvailable"])
            if self.low < self.floor and not self.tripped:
                self.tripped = True
                self.world.stop_everything(reap=False)

    def __enter__(self) -> MemoryGuard:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()

    def __str__(self) -> str:
        used = f"memory used at the peak: {(self.before - self.low) / 2**30:.1f} GiB"
        return used + ("; STOPPED: available memory fell below a tenth" if self.tripped else "")


def figure_wide(nodes: int, delay: float, sized: str, v: Verdicts) -> None:
    print(
        f"4. a {nodes}-node job's Prologs at once on this machine "
        f"({sized}; connect delay {delay:g} s)"
    )
    with benchlab.lab(pool=nodes, hook_timeout=1800, start_timeout=1500) as world:
        world.configure(
            gcp_path=world.gcp_wrapper(
                "wide", CONNECT_DELAY=delay, STATUS_INTERVAL=5, STOP_DELAY=0.3
            )
        )
        names = [f"wn{i:04d}" for i in range(nodes)]
        nodelist = f"wn[0000-{nodes - 1:04d}]"
        argv = world.argv("prolog")
        with MemoryGuard(world) as memory:
            began = time.perf_counter()
            pids = {
                benchlab.start(argv, world.env("777", node, nodelist), benchlab.node_tmp).pid: node
                for node in names
            }
            runs: dict[str, Run] = {}
            while len(runs) < nodes:
                pid, run = benchlab.reap()
                if pid in pids:
                    runs[pids[pid]] = run
            spread = time.perf_counter() - began
            leased = wait_leases(world, names, 0 if memory.tripped else 120 + delay)
        if world.skipped:
            print(f"  {show_skipped(world).strip()}")
    walls = [r.wall for r in runs.values()]
    cpu = sum(r.cpu for r in runs.values())
    cores = os.cpu_count() or 1
    entries = [e for e in leased.values() if e]
    dup = len(entries) - len(set(entries))
    missing = [n for n in names if not leased.get(n)]
    failed = [n for n, r in runs.items() if r.code != 0]
    print(
        f"  Prolog wall: p50 {benchlab.pct(walls, 0.5):.1f} s, "
        f"p99 {benchlab.pct(walls, 0.99):.1f} s, "
        f"max {max(walls):.1f} s; all done {spread:.1f} s after the first began; "
        f"CPU floor {cpu / cores:.1f} s (their {cpu:.0f} s of CPU on {cores} cores); {memory}"
    )
    v.judge(
        "wide job leases",
        not dup and not missing and not failed and not memory.tripped,
        f"nodes with a lease: {len(entries)} of {nodes}, entries leased twice: {dup}, "
        f"Prologs failed: {len(failed)}; goal: every node a distinct entry",
    )
    if missing:
        print(
            f"    without a lease: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}"
        )


def wait_leases(world: Lab, names: list[str], wait: float) -> dict[str, str]:
    """Each node's leased entry (``instance.endpoint_name`` in its state), waiting up to
    ``wait`` for nodes whose GCP is not recorded yet."""
    deadline = time.monotonic() + wait
    found: dict[str, str] = {}
    while True:
        for node in names:
            if node not in found:
                name = (world.state(node).get("instance") or {}).get("endpoint_name")
                if isinstance(name, str) and name:
                    found[node] = name
        if len(found) == len(names) or time.monotonic() >= deadline:
            return found
        time.sleep(1)


# -- main -------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--figures", default="1,2,3,4,5")
    parser.add_argument("--connect-delays", default="1,5", help="seconds, for figures 1 and 5")
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--status-interval", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=20, help="runs of each path in figure 2")
    parser.add_argument(
        "--bound", type=float, default=5.0, help="figure 2: a slower run ends its row"
    )
    parser.add_argument("--jobs", type=int, default=100, help="figure 3")
    parser.add_argument("--job-connect-delay", type=float, default=1.0, help="figure 3")
    parser.add_argument("--nodes", default="auto", help="figure 4: auto or a number")
    parser.add_argument("--node-connect-delay", type=float, default=1.0, help="figure 4")
    args = parser.parse_args()
    figures = {int(f) for f in args.figures.split(",")}
    if not benchlab.need_root():
        return 2
    benchlab.private_mounts()
    v = Verdicts()
    bare = benchlab.bare_start(args.runs)
    print(f"interpreter: {sys.executable}; python -c pass: median {bare * 1000:.1f} ms")
    colds: list[Cold] = []
    if figures & {1, 4, 5}:
        delays = [float(d) for d in args.connect_delays.split(",")]
        colds = [cold_starts(d, args.cold_runs, args.status_interval) for d in delays]
    if 1 in figures:
        figure_cold(colds, bare, v)
    if 2 in figures:
        figure_every_job(args.runs, args.bound, bare, v)
    if 3 in figures:
        figure_back_to_back(args.jobs, args.job_connect_delay, bare, v)
    if 4 in figures:
        one = colds[0]
        prolog = max(r.rss for r in one.runs) * 1024
        per_node = one.gcp_uss + prolog  # a Prolog's RSS: its private part is less
        sized = (
            f"one node: GCP emulator {one.gcp_rss / 2**20:.0f} MiB RSS, {one.gcp_uss / 2**20:.0f} "
            f"MiB USS in {one.gcp_procs} process(es), cold Prolog peak RSS {prolog / 2**20:.0f} MiB"
        )
        if args.nodes == "auto":
            nodes = fitting_nodes(per_node)
            sized += f"; --nodes auto: {nodes} fit in half the available memory"
        else:
            nodes = int(args.nodes)
        figure_wide(nodes, args.node_connect_delay, sized, v)
    if 5 in figures:
        figure_cpu(colds, v)
    print(f"goals missed: {', '.join(v.missed)}" if v.missed else "every goal met")
    return 1 if v.missed else 0


if __name__ == "__main__":
    sys.exit(main())
