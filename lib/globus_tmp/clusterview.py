"""``globus-tmp-admin status --nodes NODELIST``: many nodes' views in one table.

The fan-out is ClusterShell's ``clush`` (ssh, folded node sets, timeouts), the parallel
shell HPC sites already run, not a home-made one: each node runs its own
``globus-tmp-admin status --oneline`` (a JSON line) and this module only parses and
tabulates. ``--exec`` uses clush's exec worker instead of ssh, for sites (and the lab)
that reach nodes through a local command; ``%h`` there is the node name.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path

from .commands import run_bounded
from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CommandError
from .hooklog import escape_control

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from typing import Any

PROG = "globus-tmp-admin"
_TIMEOUT = 120.0
_OUTPUT_LIMIT = 64 << 20  # one JSON line per node, of thousands of nodes


def cluster_status(
    nodes: str, exec_prefix: str | None, config: str | None, user: str | None, as_json: bool
) -> int:
    """Exit 0 when every node answered, 1 otherwise (the table says which did not)."""
    clush = shutil.which("clush") or str(Path(sys.executable).with_name("clush"))
    if not os.access(clush, os.X_OK):
        print(
            f"{PROG}: status --nodes needs ClusterShell's clush (pip install ClusterShell, "
            "or the clustershell package)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    remote = [str(Path(sys.argv[0]).resolve()) if sys.argv[0] else PROG]
    if config:
        remote += ["--config", config]
    argv = [clush, "-w", nodes, "--nostdin", "-u", str(int(_TIMEOUT))]
    if exec_prefix:
        argv += ["-R", "exec", *shlex.split(exec_prefix)]
        remote += ["--node", "%h"]
    remote += ["status", "--oneline", *(["--user", user] if user else [])]
    try:
        done = run_bounded(argv + remote, _TIMEOUT + 30, output_limit=_OUTPUT_LIMIT)
    except CommandError as exc:
        print(escape_control(f"{PROG}: clush failed: {exc}"), file=sys.stderr)
        return EXIT_USAGE
    views, problems = parse_clush(done.output)
    if as_json:
        print(json.dumps({"nodes": views, "unanswered": problems}, indent=2))
    else:
        print("\n".join(table(views, problems)))
    return EXIT_OK if views and not problems else EXIT_FAILED


def parse_clush(output: str) -> tuple[dict[str, Any], dict[str, str]]:
    """``node: line`` output into node -> view, and node -> what went wrong instead."""
    views: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for line in output.splitlines():
        node, sep, rest = line.partition(": ")
        if not sep or " " in node:
            if line.strip().startswith("clush:"):
                node, _, rest = line.strip()[len("clush:") :].strip().partition(": ")
                problems.setdefault(node, rest or line)
            continue
        try:
            doc = json.loads(rest)
        except ValueError:
            problems[node] = (problems.get(node, "") + " " + rest).strip()[:300]
            continue
        if isinstance(doc, dict) and "users" in doc:
            views[node] = doc
    for node in views:
        problems.pop(node, None)
    return views, problems


def table(views: dict[str, Any], problems: dict[str, str]) -> list[str]:
    """The lines to print, control characters escaped: every field came from another
    node (a user's pool entry name, an error text), and must not rewrite the terminal."""
    head = f"{'NODE':<10} {'USER':<12} {'PHASE':<9} {'JOBS':>4} {'GCP':<7} {'ENDPOINT':<10}"
    out = [f"{head} {'DRAIN':<6} {'HELD':>10}  LAST ERROR"]
    totals = {"gcp_running": 0, "jobs": 0, "drains": 0, "held_bytes": 0}
    for node in sorted(views, key=_natural):
        view = views[node]
        for key in totals:
            totals[key] += int(view.get("totals", {}).get(key, 0))
        users = view.get("users") or []
        if not users:
            out.append(f"{node:<10} {'-':<12} {'idle':<9}")
        for u in users:
            gcp = "alive" if u.get("gcp_alive") else ("DEAD" if u.get("gcp_pid") else "-")
            drain = "yes" if u.get("drain_alive") else ("cancel" if u.get("cancel_holds") else "-")
            error = (u.get("error") or "")[:60] if u.get("phase") == "failed" else ""
            out.append(
                f"{node:<10} {u.get('user', '?'):<12} {u.get('phase', '?'):<9} "
                f"{len(u.get('jobs') or []):>4} {gcp:<7} {u.get('endpoint_name') or '-':<10} "
                f"{drain:<6} {int(u.get('held_bytes') or 0):>10}  {error}"
            )
    for node in sorted(problems, key=_natural):
        out.append(f"{node:<10} NO ANSWER: {problems[node]}")
    out.append(
        f"{len(views)} node(s) answered, {len(problems)} did not; "
        + ", ".join(f"{k} {v}" for k, v in totals.items())
    )
    return [escape_control(line) for line in out]


def _natural(name: str) -> tuple[str, int]:
    stem = name.rstrip("0123456789")
    return stem, int(name[len(stem) :] or 0)
