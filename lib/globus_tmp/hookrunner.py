"""How every Slurm hook runs: bounded, logged, failing open.

A non-zero Prolog drains the node and requeues the job; a non-zero Epilog drains the
node. Losing an endpoint for one job is far cheaper, so a hook exits 0 whatever goes
wrong (logging one line that names the cause) unless the admin set
``on_failure = "fail"``, the hook honours it, and the cause is the site's: a failure
from the job user's side (their files, GCP or steps: :attr:`GlobusTmpError.user_side`)
is that job's problem, never a drained node, or any user could drain nodes at will by
breaking their own pool or stopping their own step. Each run is bounded by
``hook_timeout``: every wait takes its bound from the same deadline, and SIGALRM is
the backstop.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .alarm import alarm_backstop
from .config import Config, load_config
from .errors import (
    EXIT_FAILED,
    EXIT_OK,
    GlobusTmpError,
    HookTimeout,
    JobContextError,
    from_user_side,
)
from .hooklog import HookLog
from .job import JobContext, node_name
from .lifecycle import NodeLifecycle
from .nodestate import NodeStateStore

HookAction = Callable[[NodeLifecycle, JobContext], str]


def run_hook(name: str, action: HookAction, honours_on_failure: bool) -> int:
    """Run one hook; returns its exit code."""
    started = time.monotonic()
    log = HookLog(name)
    try:
        cfg = load_config()
    except GlobusTmpError as exc:
        log.error(f"{exc}; nothing done")
        return EXIT_OK
    node = node_name(os.environ)
    log.bind(job=os.environ.get("SLURM_JOB_ID", "?"), node=node)
    deadline = started + cfg.hook_timeout
    try:
        with alarm_backstop(cfg.hook_timeout + 5, _TIMEOUT):
            try:  # the user look-up (NSS, maybe LDAP) may hang: under the alarm
                job = JobContext.from_hook_env(os.environ)
            except JobContextError as exc:
                log.error(f"{exc}; nothing done")
                return EXIT_OK
            log.bind(job=job.job_id, node=job.node, user=job.user.name)
            store = NodeStateStore(cfg.state_dir_for(job.node))
            store.ensure()
            log.configure(cfg.log_file_for(job.node), cfg.syslog_facility)
            lifecycle = NodeLifecycle(cfg, job.node, store, log, deadline)
            log.info(action(lifecycle, job))
        outcome = "ok"
        code = EXIT_OK
    except Exception as exc:
        code, note = _failure_exit(cfg, honours_on_failure, exc)
        log_failure(log, exc, note)
        outcome = outcome_of(exc)
    if cfg.metrics_file:
        problem = _record_run(cfg, node, name, outcome)
        if problem:
            log.error(problem)
    return code


RENDER_EVERY = 30.0
"""An Epilog that only removed its job renders the metrics if the last render
(``metrics.json``'s mtime) is older than this, and otherwise only journals its run."""


def _record_run(cfg: Config, node: str, hook: str, outcome: str) -> str | None:
    """This run in the metrics (:mod:`globus_tmp.metrics`). Counting anything imports
    that module, so a Prolog that succeeded without it only joined, and such an Epilog
    only removed a job that was not the user's last: the paths of every job, held to
    4x and 5x a bare start (``bench/hot_paths.py``). They append one journal line
    without importing the module, their whole metrics cost; everything else (and such
    an Epilog every :data:`RENDER_EVERY`) folds and renders the textfile."""
    state_dir = cfg.state_dir_for(node)
    quiet = outcome == "ok" and "globus_tmp.metrics" not in sys.modules
    if quiet and (hook == "prolog" or (hook == "epilog" and _rendered_within(state_dir))):
        from .locks import append_shared
        from .process import process_age

        line = f"{hook} ok {process_age():.6f}\n".encode()  # metrics.journal_line
        with contextlib.suppress(OSError):  # metrics never fail a hook
            append_shared(state_dir / "metrics.journal", line, 2.0)
        return None
    from .metrics import record_run

    return record_run(cfg, node, hook, outcome)


def _rendered_within(state_dir: Path, seconds: float = RENDER_EVERY) -> bool:
    try:
        return time.time() - os.stat(state_dir / "metrics.json").st_mtime < seconds
    except OSError:
        return False


_TIMEOUT = "hit hook_timeout; gave up (raise hook_timeout or start_timeout?)"


def log_failure(log: HookLog, exc: BaseException, note: str = "") -> None:
    """One line for a failure: our own errors say what to do; others are internal."""
    if isinstance(exc, GlobusTmpError):
        log.error(f"{exc}{note}")
    else:
        log.error(f"internal error: {type(exc).__name__}: {exc}{note}")


def outcome_of(exc: BaseException) -> str:
    """A run's failure as a metrics label: ``timeout`` or the exception's class name."""
    return "timeout" if isinstance(exc, HookTimeout) else type(exc).__name__


_USER_SIDE = (
    ' [from the job user\'s side: this job runs without an endpoint; on_failure = "fail" '
    "fails the Prolog for site-side causes only]"
)


def _failure_exit(cfg: Config, honours_on_failure: bool, exc: BaseException) -> tuple[int, str]:
    """docs/ADMIN.md, "Exit codes": a hook fails open unless the site chose otherwise,
    and then only for a cause of the site's own (:func:`from_user_side`). Also what the
    failure's log line adds when ``on_failure = "fail"`` was not applied."""
    if not (honours_on_failure and cfg.on_failure == "fail"):
        return EXIT_OK, ""
    if from_user_side(exc):
        return EXIT_OK, _USER_SIDE
    return EXIT_FAILED, ""
