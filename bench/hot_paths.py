"""Benchmark of the paths every job pays for, against a bare interpreter start.

Measures, as slurmd runs them (root, clean environment), the wall time of

- the Prolog's join path (a job joining a node where the user's GCP runs),
- the Epilog's non-last path (a job leaving while others of the user remain),
- ``globus-tmp-endpoint`` run as the user inside a job,
- the TaskProlog (once per task),

each next to ``python -c pass`` from the same interpreter, measured in the same run,
as a ratio. Goals: the Prolog's join path at most 4x (every job on every node, and the
only path that must not touch the user's home), the Epilog's non-last path at most 5x
(also every job, and it looks for the job's declared stage-outs: one forked step as the
user listing a directory in the home, ~3 ms plus its imports), ``globus-tmp-endpoint``
at most 3x (any job that wants its endpoint id; it reads config and node state without
importing dataclasses, pathlib or argparse), the rest under 8x. Also
prints each path's peak RSS. Node state goes under ``/run`` as with the default ``state_dir``.

Run as root from the test venv (``tests/run`` builds it):
``/opt/globus-tmp-test/venv/bin/python bench/hot_paths.py [--runs N] [--metrics]``
(``--metrics``: with ``metrics_file`` set, so the hooks also keep their metrics.)
It creates the user ``gtbench``, a one-entry pool, and a GCP emulator instance, and
stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
USER = "gtbench"
GOAL = 8.0
GOALS = {"prolog join path": 4.0, "epilog non-last path": 5.0, "globus-tmp-endpoint": 3.0}
STATE_DIR = Path("/run/globus-tmp-bench")


def _user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", USER], check=True)
        return pwd.getpwnam(USER)


def _run(argv: list[str], **kwargs: Any) -> int:
    """Run ``argv`` to completion; its own peak RSS in KiB (from wait4, not the group's)."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} exited {proc.returncode}")
    return int(usage.ru_maxrss)


def _wait_user_gone(uid: int, timeout: float) -> None:
    """Wait for every process of ``uid`` to end; kill what is left at the bound."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in psutil.process_iter(["uids"]) if p.info["uids"].real == uid]
        if not left:
            return
        time.sleep(0.2)
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            pass


def _timed(run: Callable[[], int], runs: int) -> tuple[float, int]:
    """Median wall seconds over ``runs``, and the largest peak RSS (KiB) seen."""
    samples, rss = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        rss = max(rss, run())
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--metrics", action="store_true", help="with metrics_file set")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (the hooks run as root under slurmd)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT / "tests" / "emulators"))
    from gcp_config_dir import create_config_dir

    pw = _user()
    site = Path(tempfile.mkdtemp(prefix="globus-tmp-bench-", dir="/tmp"))
    site.chmod(0o755)
    shutil.copytree(ROOT / "tests" / "emulators", site / "emulators")
    gcp = site / "gcp"
    gcp.write_text(
        "#!/bin/sh\nGCP_EMULATOR_STATUS_INTERVAL=0.3 GCP_EMULATOR_CONNECT_DELAY=0.3 "
        f'exec {site}/emulators/globusconnectpersonal "$@"\n'
    )
    gcp.chmod(0o755)
    conf = site / "globus-tmp.conf"
    conf.write_text(
        f'gcp_path = "{gcp}"\nstate_dir = "{STATE_DIR}/%n"\nuser_dir = "~/.globus-tmp-bench"\n'
        "linger_unverified = 1\nlinger_poll_seconds = 0.5\n"
        + (f'metrics_file = "{site}/globus_tmp.prom"\n' if args.metrics else "")
    )
    user_dir = Path(pw.pw_dir) / ".globus-tmp-bench"
    shutil.rmtree(user_dir, ignore_errors=True)
    create_config_dir(user_dir / "endpoints" / "ep1", pw.pw_uid, pw.pw_gid)
    os.chown(user_dir, pw.pw_uid, pw.pw_gid)
    os.chown(user_dir / "endpoints", pw.pw_uid, pw.pw_gid)

    def hook_env(job: int) -> dict[str, str]:
        return {
            "SLURM_JOB_ID": str(job),
            "SLURM_JOB_USER": USER,
            "SLURM_JOB_UID": str(pw.pw_uid),
            "SLURM_JOB_GID": str(pw.pw_gid),
            "SLURMD_NODENAME": "bench1",
            "GLOBUS_TMP_CONFIG": str(conf),
        }

    def hook(name: str, job: int) -> int:
        return _run([str(BIN / f"globus-tmp-{name}")], env=hook_env(job))

    user_env = {
        "GLOBUS_TMP_CONFIG": str(conf),
        "SLURMD_NODENAME": "bench1",
        "HOME": pw.pw_dir,
        "PATH": "/usr/bin:/bin",
    }

    def as_user(program: str) -> int:
        return _run(
            [str(BIN / program)], env=user_env, user=pw.pw_uid, group=pw.pw_gid, extra_groups=[]
        )

    counter = iter(range(1000, 10**6))
    joins: list[int] = []
    try:
        hook("prolog", 1)  # cold start: GCP comes up once
        bare, bare_rss = _timed(lambda: _run([sys.executable, "-c", "pass"]), args.runs)

        def join() -> int:
            job = next(counter)
            joins.append(job)
            return hook("prolog", job)

        rows = [
            ("prolog join path", *_timed(join, args.runs)),
            ("epilog non-last path", *_timed(lambda: hook("epilog", joins.pop()), args.runs)),
            ("globus-tmp-endpoint", *_timed(lambda: as_user("globus-tmp-endpoint"), args.runs)),
            ("taskprolog", *_timed(lambda: as_user("globus-tmp-taskprolog"), args.runs)),
        ]
    finally:
        hook("epilog", 1)
        for job in joins:
            hook("epilog", job)
        _wait_user_gone(pw.pw_uid, 30)  # the last epilog's drain stops GCP after linger
        shutil.rmtree(site, ignore_errors=True)
        shutil.rmtree(user_dir, ignore_errors=True)
        shutil.rmtree(STATE_DIR, ignore_errors=True)

    print(f"interpreter: {sys.executable}; median of {args.runs} runs each")
    print(f"{'path':<22} {'median ms':>10} {'x bare':>7} {'goal':>6} {'peak RSS MiB':>13}")
    print(f"{'python -c pass':<22} {bare * 1000:10.1f} {1:7.2f} {'':>6} {bare_rss / 1024:13.1f}")
    over = False
    for name, seconds, rss in rows:
        ratio = seconds / bare
        goal = GOALS.get(name, GOAL)
        over = over or ratio > goal
        verdict = f"<={goal:g}" if ratio <= goal else "OVER"
        print(f"{name:<22} {seconds * 1000:10.1f} {ratio:7.2f} {verdict:>6} {rss / 1024:13.1f}")
    hooks = ", ".join(f"{name} {goal:g}x" for name, goal in GOALS.items())
    print(f"goals (x a bare start): {hooks}, the rest {GOAL:g}x")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
