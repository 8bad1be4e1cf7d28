"""Prometheus metrics for node_exporter's textfile collector (``metrics_file``).

Nothing here runs as a daemon: every hook is a short-lived process, so counters must
outlive the process that counted them. They live in node state, root-owned:

- ``<state_dir>/metrics.json``: the counters and the latency histogram so far,
  replaced by rename like every state file, but without an fsync: the default
  ``state_dir`` is in ``/run`` and dies with the node anyway, and a lost or stale file
  only looks like a counter reset to Prometheus, while an fsync (two: the file and its
  directory) would cost every render;
- ``<state_dir>/metrics.journal``: runs not yet folded into it, one line each.

The paths every job pays for, held by ``bench/hot_paths.py`` to 4x (the Prolog's
join) and 5x (the Epilog's non-last path) a bare interpreter start, cannot afford a
render (about 1 ms). A Prolog or an Epilog that succeeded and counted nothing but its
own run (the join; the removal of a job that is not the user's last) appends one short
line (:func:`journal_line`) with one ``O_APPEND`` write under a shared ``flock``, and
does not even import this module (:func:`globus_tmp.hookrunner.run_hook`); such an
Epilog still renders when the last render is older than
:data:`~globus_tmp.hookrunner.RENDER_EVERY`. Every other run (a GCP start or stop, a
drain started, a failure, the drain itself, the private ``/tmp`` helper,
``globus-tmp-admin reconcile``) takes the journal's ``flock`` exclusively, folds the
journal and its own counts into ``metrics.json``, empties the journal and renders the
textfile from those counters plus the node state as it is now (instances, jobs,
drains, held bytes). So the counters lose nothing, and the gauges are as of the last
render: with only joins on a node, until the next Epilog or reconcile.

The render happens under the same lock, so two renders never rename an older snapshot
over a newer one: a counter that went backwards would look like a reset to Prometheus.
The textfile is replaced by rename (mode 0644; its temporary name does not end in
``.prom``, which the collector ignores) without an fsync: it is derived data, rewritten
at the next render, and an fsync on the collector's disk would cost every hook. Root
writes it only into a directory nobody else may write to
(:func:`textfile_dir_problem`): there, another user could swap the temporary file or
the target between the write and the rename.

A fold is exact when its process is killed halfway: the journal begins with a
generation line, and ``metrics.json`` records the generation, size and inode of the
journal it folded before the journal is emptied, so a fold killed between the two is
not counted twice.

Counting (:func:`count`) is in memory and free; only :func:`record_run` touches files,
and only when ``metrics_file`` is set. It never raises: metrics must never fail a
hook (a refused textfile directory comes back as one line for the caller's log). The
user-side steps never write here: their calls are counted as root, around the steps,
from what they return.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import time
from pathlib import Path

from .process import process_age

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from typing import Any

    from .config import Config
    from .nodestate import NodeStateStore

PREFIX = "globus_tmp_"
HOOKS = ("prolog", "epilog", "drain", "watch", "privatetmp", "reconcile")
API_OPS = ("task_list", "submit", "settle", "cancel")
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
JOURNAL = "metrics.journal"
COUNTS = "metrics.json"
LOCK_WAIT = 2.0
"""At most this long for the journal's lock; past it the run's counts are dropped."""
_VERSION = 1
_MAX_STATE = 4 << 20
_MAX_JOURNAL = 64 << 20

COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "hook_runs_total": (
        "Runs of each globus-tmp hook by outcome: ok, or the class of the failure "
        "(an exception class name, or timeout for hook_timeout).",
        ("hook", "outcome"),
    ),
    "gcp_starts_total": (
        "Globus Connect Personal instances started (or taken over) for a user.",
        (),
    ),
    "gcp_stops_total": ("Globus Connect Personal instances that exited after -stop.", ()),
    "gcp_kills_total": (
        "Globus Connect Personal instances killed because they outlived stop_grace.",
        (),
    ),
    "gcp_connect_failures_total": (
        "Globus Connect Personal instances stopped by their connect watcher: they exited "
        "or did not say connected within start_timeout.",
        (),
    ),
    "drains_started_total": (
        "Drains started: GCPs kept up after the user's last job on the node while a "
        "transfer may still be running (or GCP's idle cannot be verified).",
        (),
    ),
    "transfer_api_calls_total": (
        "Steps as the user that asked the Globus Transfer API for the hooks "
        "(task_list: is a transfer active; submit: stage-outs; settle: their outcome).",
        ("op",),
    ),
    "transfer_api_errors_total": (
        "Of globus_tmp_transfer_api_calls_total, those that failed (Globus unreachable, "
        "429, expired or missing tokens, a step that did not finish).",
        ("op",),
    ),
}
_SEEDED: dict[str, tuple[dict[str, str], ...]] = {
    "hook_runs_total": tuple({"hook": h, "outcome": "ok"} for h in HOOKS),
    "transfer_api_calls_total": tuple({"op": op} for op in API_OPS),
    "transfer_api_errors_total": tuple({"op": op} for op in API_OPS),
}
"""Series shown at 0 before anything happened, so ``rate()`` has them from the start."""

_pending: dict[str, float] = {}
"""Counts of this process not yet written: ``name`` + ``\\0`` + labels as JSON."""


def count(name: str, by: float = 1.0, **labels: str) -> None:
    """Add ``by`` to counter ``name`` (without the prefix) in this process's pending
    counts; :func:`record_run` writes them out. Free, and safe in a forked child (its
    copy is never written)."""
    key = _key(name, labels)
    _pending[key] = _pending.get(key, 0.0) + by


def forget_pending() -> None:
    """A forked child that records a run of its own (the connect watcher) starts with
    none of its parent's counts: the parent writes those."""
    _pending.clear()


def count_api(op: str, failed: bool = False) -> None:
    """One step as the user that asked the Transfer API (``op``: see :data:`API_OPS`)."""
    count("transfer_api_calls_total", op=op)
    if failed:
        count("transfer_api_errors_total", op=op)


def _key(name: str, labels: dict[str, str]) -> str:
    return name + "\0" + json.dumps(sorted(labels.items()), separators=(",", ":"))


def _split(key: str) -> tuple[str, dict[str, str]]:
    name, _, labels = key.partition("\0")
    return name, {str(k): str(v) for k, v in json.loads(labels)}


def record_run(
    cfg: Config, node: str, hook: str, outcome: str, seconds: float | None = None
) -> str | None:
    """Count one run of ``hook`` (its ``outcome`` and wall time, by default the age of
    this process: what slurmd waits for) with this process's pending counts, fold the
    journal and refresh the textfile. (A hook run that counted nothing but itself only
    appends :func:`journal_line`: :func:`globus_tmp.hookrunner.run_hook`.)

    Does nothing when ``metrics_file`` is empty; never raises. Returns one line for the
    caller's log when the textfile's directory was refused (counters are kept)."""
    if not cfg.metrics_file:
        return None
    try:
        elapsed = process_age() if seconds is None else seconds
        count("hook_runs_total", hook=hook, outcome=outcome)
        entry = {"c": dict(_pending), "h": [[hook, round(elapsed, 6)]]}
        _pending.clear()
        return fold_and_render(cfg, node, entry)
    except Exception:  # metrics never fail a hook, and log nothing noisy
        return None


def journal_line(hook: str, seconds: float) -> bytes:
    """The journal line of a successful run that counted nothing but itself (a Prolog
    join): short, no JSON. :func:`globus_tmp.hookrunner.run_hook` writes the same
    without importing this module."""
    return f"{hook} ok {seconds:.6f}\n".encode()


def _open_journal(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def _flock(fd: int, kind: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def fold_and_render(cfg: Config, node: str, entry: dict[str, Any] | None = None) -> str | None:
    """Fold the journal (and ``entry``) into ``metrics.json`` and rewrite the textfile,
    all under the journal's exclusive lock; why the textfile was not written, if it was
    refused (:func:`textfile_dir_problem`). Raises OSError (callers swallow it)."""
    from .nodestate import NodeStateStore

    store = NodeStateStore(cfg.state_dir_for(node))
    store.ensure()  # never write as root into a state_dir that cannot be trusted
    fd = _open_journal(store.root / JOURNAL)
    try:
        if not _flock(fd, fcntl.LOCK_EX, LOCK_WAIT):
            return None
        counts = _load(store.root / COUNTS)
        raw = _read_fd(fd)
        gen, body = _generation(raw)
        ino = os.fstat(fd).st_ino
        done = counts.get("journal")  # [generation, size, inode] of the last fold's journal
        if isinstance(done, list) and len(done) == 3 and done[0] == gen and done[2] == ino:
            body = raw[int(done[1]) :] if int(done[1]) <= len(raw) else b""  # crash: not twice
        entries = [e for e in (_parse(line) for line in body.split(b"\n")) if e is not None]
        if entry is not None:
            entries.append(entry)
        for e in entries:
            _apply(counts, e)
        counts["journal"] = [gen, len(raw), ino]
        _replace(store.root / COUNTS, json.dumps(counts, separators=(",", ":")))
        os.ftruncate(fd, 0)
        os.write(fd, f"#gen {(gen or 0) + 1}\n".encode())
        target = metrics_path(cfg, node)
        problem = textfile_dir_problem(target)
        if problem is None:
            _replace(target, render(cfg, node, counts, store))
        return problem
    finally:
        os.close(fd)


def _read_fd(fd: int) -> bytes:
    chunks, size = [], 0
    while size < _MAX_JOURNAL:
        chunk = os.pread(fd, 1 << 16, size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _generation(raw: bytes) -> tuple[int | None, bytes]:
    if raw.startswith(b"#gen "):
        head, _, body = raw.partition(b"\n")
        with contextlib.suppress(ValueError):
            return int(head[5:]), body
        return None, body
    return None, raw


def _parse(line: bytes) -> dict[str, Any] | None:
    """A journal line (JSON, or ``HOOK ok SECONDS``: :func:`journal_line`); None for an
    empty or damaged one (a writer killed mid-line)."""
    if not line.strip():
        return None
    if not line.startswith(b"{"):
        try:
            hook, outcome, seconds = line.decode().split()
            key = _key("hook_runs_total", {"hook": hook, "outcome": outcome})
            return {"c": {key: 1}, "h": [[hook, float(seconds)]]}
        except (UnicodeDecodeError, ValueError):
            return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _load(path: Path) -> dict[str, Any]:
    """The counters so far; a missing or damaged file starts them afresh (Prometheus
    takes that as a counter reset, which it handles)."""
    from .boundedio import read_bounded

    try:
        data = json.loads(read_bounded(path, _MAX_STATE))
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("version") != _VERSION:
        return {"version": _VERSION, "counters": {}, "histograms": {}}
    if not isinstance(data.get("counters"), dict) or not isinstance(data.get("histograms"), dict):
        return {"version": _VERSION, "counters": {}, "histograms": {}}
    return data


def _apply(counts: dict[str, Any], entry: dict[str, Any]) -> None:
    """Add one run's counts and latency observations (anything malformed is skipped)."""
    counters: dict[str, float] = counts["counters"]
    for key, value in dict(entry.get("c") or {}).items():
        if isinstance(key, str) and "\0" in key and isinstance(value, (int, float)):
            counters[key] = float(counters.get(key, 0.0)) + float(value)
    histograms: dict[str, Any] = counts["histograms"]
    for item in list(entry.get("h") or []):
        try:
            hook, seconds = str(item[0]), float(item[1])
        except (TypeError, ValueError, IndexError):
            continue
        h = histograms.get(hook)
        if not isinstance(h, dict) or len(h.get("b", ())) != len(BUCKETS) + 1:
            h = histograms[hook] = {"b": [0] * (len(BUCKETS) + 1), "sum": 0.0, "count": 0}
        slot = next((i for i, le in enumerate(BUCKETS) if seconds <= le), len(BUCKETS))
        h["b"][slot] += 1
        h["sum"] += seconds
        h["count"] += 1


def metrics_path(cfg: Config, node: str) -> Path:
    """``metrics_file`` with ``%n`` expanded (several slurmd on one host: one file each)."""
    from .configkeys import expand_percent

    return Path(expand_percent(cfg.metrics_file, {"n": node}))


def textfile_dir_problem(path: Path) -> str | None:
    """Why root must not write the textfile ``path`` (None: it may): its directory must
    be a directory that only root (or this process's owner) can write to. Elsewhere
    another user could replace the temporary file between its write and the rename,
    or the target with a name of theirs."""
    where = path.parent
    try:
        st = os.stat(where)
    except OSError as exc:
        return (f"metrics_file {path}: directory {where}: {exc.strerror}; create it "
                "(node_exporter's textfile collector directory)")  # fmt: skip
    if not stat.S_ISDIR(st.st_mode):
        return f"metrics_file {path}: {where} is not a directory; fix metrics_file"
    if st.st_uid not in (0, os.geteuid()) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (f"metrics_file {path}: directory {where} (uid {st.st_uid}, mode "
                f"{oct(st.st_mode & 0o7777)}) is writable by others, who could swap the "
                f"file between write and rename; not written: chown root {where} && "
                f"chmod go-w {where}")  # fmt: skip
    return None


def _replace(path: Path, text: str) -> None:
    """Replace ``path`` by rename (readers see the old or the new file, never half), 0644."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600)
    except FileExistsError:  # left by a killed run with this pid (or planted): never reuse
        os.unlink(tmp)
        fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            os.fchmod(fh.fileno(), 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- rendering -------------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def node_gauges(store: NodeStateStore) -> dict[str, Any]:
    """What the node runs now: the node view ``globus-tmp-admin status`` prints
    (:mod:`globus_tmp.nodeview`: node state read without locks, pids checked in /proc)."""
    from .nodeview import node_view
    from .phases import Phase

    view = node_view(store, "")
    phases = dict.fromkeys((p.value for p in Phase), 0)
    for user in view.users:
        phases[user.phase] = phases.get(user.phase, 0) + 1
    totals = view.totals
    return {
        "instances": totals["gcp_running"],
        "jobs": totals["jobs"],
        "drains": totals["drains"],
        "holds": sum(len(u.holds) for u in view.users),
        "held_bytes": totals["held_bytes"],
        "phases": phases,
    }


def render(
    cfg: Config, node: str, counts: dict[str, Any], store: NodeStateStore | None = None
) -> str:
    """The textfile: gauges from node state now, counters and histogram from ``counts``."""
    from .nodestate import NodeStateStore

    store = store or NodeStateStore(cfg.state_dir_for(node))
    g = node_gauges(store)
    at = f'node="{_escape(node)}"'
    out: list[str] = []

    def family(name: str, kind: str, text: str) -> None:
        out.append(f"# HELP {PREFIX}{name} {text}")
        out.append(f"# TYPE {PREFIX}{name} {kind}")

    def sample(name: str, labels: dict[str, str], value: float) -> None:
        more = "".join(f',{k}="{_escape(v)}"' for k, v in labels.items())
        out.append(f"{PREFIX}{name}{{{at}{more}}} {_number(value)}")

    gauges = (
        ("instances", "Globus Connect Personal instances running on this node (one per user)."),
        ("jobs", "Jobs in the job sets of all users on this node."),
        ("drains", "Drains running: GCPs kept up after the user's last job for a transfer."),
        ("holds", "Ended jobs' private /tmp kept on this node for their stage-outs."),
        (
            "held_bytes",
            "Bytes of ended jobs' private /tmp held on this node (hold_max_bytes caps it).",
        ),
    )
    for name, text in gauges:
        family(name, "gauge", text)
        sample(name, {}, g[name])
    family("hold_max_bytes", "gauge", "The configured cap on held_bytes (hold_max_bytes).")
    sample("hold_max_bytes", {}, cfg.hold_max_bytes)
    family("users", "gauge", "Users with node state on this node, by the phase of their GCP.")
    for phase, n in sorted(g["phases"].items()):
        sample("users", {"phase": phase}, n)

    series: dict[str, dict[str, float]] = {}
    for name, seeds in _SEEDED.items():
        for labels in seeds:
            series.setdefault(name, {}).setdefault(_key(name, labels), 0.0)
    for key, value in dict(counts.get("counters") or {}).items():
        name = key.partition("\0")[0]
        if name in COUNTERS:
            series.setdefault(name, {})[key] = float(value)
    for name, (text, _) in COUNTERS.items():
        family(name, "counter", text)
        keys = series.get(name) or {_key(name, {}): 0.0}
        for key, value in sorted(keys.items()):
            sample(name, _split(key)[1], value)

    name = "hook_duration_seconds"
    family(name, "histogram", "Wall time of each hook run, from its process's start.")
    hist = dict(counts.get("histograms") or {})
    for hook in sorted(set(HOOKS) | set(hist)):
        h = hist.get(hook) or {"b": [0] * (len(BUCKETS) + 1), "sum": 0.0, "count": 0}
        running = 0
        for le, n in zip((*(repr(b) for b in BUCKETS), "+Inf"), h["b"]):
            running += int(n)
            sample(f"{name}_bucket", {"hook": hook, "le": le}, running)
        sample(f"{name}_sum", {"hook": hook}, float(h["sum"]))
        sample(f"{name}_count", {"hook": hook}, int(h["count"]))

    family("metrics_rendered_timestamp_seconds", "gauge", "When this file was written (Unix time).")
    sample("metrics_rendered_timestamp_seconds", {}, round(time.time(), 3))
    return "\n".join(out) + "\n"
