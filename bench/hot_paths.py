"""Benchmark of the paths every job pays for, against a bare interpreter start.

Measures, as slurmd runs them (root, clean environment), the wall time of

- the Prolog's join path (a job joining a node where the user's GCP runs),
- the Epilog's non-last path (a job leaving while others of the user remain),
- ``globus-tmp-endpoint`` run as the user inside a job,
- the TaskProlog (once per task),

each next to ``python -c pass`` from the same interpreter, measured in the same run, as
a ratio. The first two run with the user's home hung (a mount whose server never
answers, see ``benchlab.HungHome``): they are the paths of every job on every node, and
a home file system that stalls must not stall job starts and ends. A run slower than
``--bound`` seconds ends that row (it hangs on the home). Goals: the Prolog's join path
at most 4x, the Epilog's non-last path at most 4x (it looks for the job's stage-out
mark: one forked step as the user in a node-local directory, never the home),
``globus-tmp-endpoint`` at most 3x (any job that wants its endpoint id; it reads config and node
state without importing dataclasses, pathlib or argparse), the rest under 8x. Also
prints each path's peak RSS. Node state goes under ``/run`` as with the default
``state_dir``.

Run as root from the test venv (``tests/run`` builds it):
``/opt/globus-tmp-test/venv/bin/python bench/hot_paths.py [--runs N] [--metrics]``
(``--metrics``: with ``metrics_file`` set, so the hooks also keep their metrics.)
It creates the user ``gtbench``, a one-entry pool, and a GCP emulator instance, and
stops everything it started (``benchlab.Lab``). ``bench/job_start.py`` prints the first
two rows as its second figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Iterator

import benchlab
from benchlab import Lab, Run

GOAL = 8.0
GOALS = {"prolog join path": 4.0, "epilog non-last path": 4.0, "globus-tmp-endpoint": 3.0}
Row = tuple[str, list[Run]]


def every_job_paths(world: Lab, runs: int, bound: float) -> tuple[list[Row], str]:
    """The join path and the non-last Epilog, measured with the home hung, after one
    cold start (GCP comes up once); the rows, and how the home was hung. The jobs stay
    in the job set (:meth:`Lab.close` ends their GCP)."""
    world.hook("prolog", "1").check("cold prolog")
    jobs = iter(range(1000, 10**6))
    joined: list[str] = []

    def join() -> Run:
        joined.append(str(next(jobs)))
        return world.hook("prolog", joined[-1]).check("prolog join")

    def leave() -> Run:
        return world.hook("epilog", joined.pop()).check("epilog non-last")

    with benchlab.HungHome(world.pw.pw_dir) as hung:
        rows = [
            ("prolog join path", benchlab.sample(join, runs, bound)),
            ("epilog non-last path", benchlab.sample(leave, min(runs, len(joined)), bound)),
        ]
    return rows, hung.how


def table(rows: list[Row], bare: float, bare_rss: int, bound: float) -> Iterator[str]:
    """The rows as lines: median, ratio to ``bare``, verdict, peak RSS; a row that a run
    slower than ``bound`` ended says so."""
    yield f"{'path':<22} {'median ms':>10} {'x bare':>7} {'goal':>6} {'peak RSS MiB':>13}"
    yield f"{'python -c pass':<22} {bare * 1000:10.1f} {1:7.2f} {'':>6} {bare_rss / 1024:13.1f}"
    for name, samples in rows:
        seconds = statistics.median(r.wall for r in samples)
        rss = max(r.rss for r in samples)
        ratio = seconds / bare
        goal = GOALS.get(name, GOAL)
        shown = f"<={goal:g}" if ratio <= goal else "OVER"
        slow = samples[-1].wall > bound
        note = f"  (ended after {len(samples)} run(s): over {bound:g} s)" if slow else ""
        yield f"{name:<22} {seconds * 1000:10.1f} {ratio:7.2f} {shown:>6} {rss / 1024:13.1f}{note}"


def over(rows: list[Row], bare: float) -> bool:
    return any(
        statistics.median(r.wall for r in samples) / bare > GOALS.get(name, GOAL)
        for name, samples in rows
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--metrics", action="store_true", help="with metrics_file set")
    parser.add_argument(
        "--bound", type=float, default=5.0, help="seconds: a slower run ends its row"
    )
    args = parser.parse_args()
    if not benchlab.need_root():
        return 2
    benchlab.private_mounts()
    metrics: dict[str, object] = (
        {"metrics_file": f"{benchlab.SCRATCH}/site/globus_tmp.prom"} if args.metrics else {}
    )
    with benchlab.lab(1, **metrics) as world:
        rows, how = every_job_paths(world, args.runs, args.bound)
        bare_runs = [benchlab.run([sys.executable, "-c", "pass"], {}) for _ in range(args.runs)]
        user_rows: list[tuple[str, Callable[[], Run]]] = [
            ("globus-tmp-endpoint", lambda: world.as_user("globus-tmp-endpoint")),
            ("taskprolog", lambda: world.as_user("globus-tmp-taskprolog")),
        ]
        rows += [(name, benchlab.sample(fn, args.runs)) for name, fn in user_rows]
    bare = statistics.median(r.wall for r in bare_runs)
    print(f"interpreter: {sys.executable}; median of {args.runs} runs each; home: hung ({how})")
    for line in table(rows, bare, max(r.rss for r in bare_runs), args.bound):
        print(line)
    hooks = ", ".join(f"{name} {goal:g}x" for name, goal in GOALS.items())
    print(f"goals (x a bare start): {hooks}, the rest {GOAL:g}x")
    return 1 if over(rows, bare) else 0


if __name__ == "__main__":
    sys.exit(main())
