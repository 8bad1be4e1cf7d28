"""Transfer tasks through the user's Globus session: find, submit, follow.

Runs as the user (the CLI, or a child of the epilog dropped to the user), with the
user's own tokens: tasks are visible to their owner only.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .config import Config
from .globusapi import GlobusApiError, GlobusSession, describe

if TYPE_CHECKING:
    import globus_sdk

LIVE_STATUSES = ("ACTIVE", "INACTIVE")


def active_tasks_on(
    cfg: Config, user_dir: Path, endpoint_id: str, max_age: float = 0.0, wait: float = 10.0
) -> list[str]:
    """The user's ACTIVE/INACTIVE task ids whose source or destination is ``endpoint_id``.

    ``task_list`` cannot filter by endpoint, so every live task is listed (paginated)
    and matched here. With ``max_age`` (drains), an answer up to that old, shared by all
    of the user's drains (:mod:`globus_tmp.taskcache`), is used instead of a new call.
    """
    from .taskcache import RateLimited, TaskListCache

    def fetch() -> list[tuple[str, str, str]]:
        try:
            tc = GlobusSession(cfg, user_dir, interactive=False).transfer(max_retries=1)
            return [
                (str(t["task_id"]), str(t["source_endpoint_id"]), str(t["destination_endpoint_id"]))
                for t in tc.paginated.task_list(
                    filter={"status": list(LIVE_STATUSES)}, limit=1000
                ).items()
            ]
        except GlobusApiError:
            raise
        except Exception as exc:
            status = getattr(exc, "http_status", None)
            if status == 429:
                headers = getattr(exc, "headers", None) or {}
                retry = headers.get("Retry-After", "") if hasattr(headers, "get") else ""
                wait_s = float(retry) if str(retry).replace(".", "", 1).isdigit() else 30.0
                raise RateLimited(time.time() + wait_s) from None
            raise GlobusApiError(f"task_list: {describe(exc)}") from None

    try:
        shared = TaskListCache(user_dir, max_age) if max_age > 0 else None
        tasks = shared.live_tasks(fetch, wait) if shared else fetch()
    except RateLimited as exc:
        raise GlobusApiError(f"task_list: {exc}") from None
    return [t[0] for t in tasks if endpoint_id in (t[1], t[2])]


def endpoint_connected(cfg: Config, user_dir: Path, endpoint_id: str) -> bool | None:
    """Whether Globus sees the endpoint's GCP connected (``gcp_connected``); None if it
    cannot be asked (not logged in, unreachable, no such field)."""
    try:
        tc = GlobusSession(cfg, user_dir, interactive=False).transfer(max_retries=1)
        value = tc.get_endpoint(endpoint_id).get("gcp_connected")
    except Exception:
        return None
    return value if isinstance(value, bool) else None


@dataclass(frozen=True)
class Place:
    """``ENDPOINT_ID:PATH`` on a command line."""

    endpoint_id: str
    path: str

    @classmethod
    def parse(cls, text: str) -> Place:
        endpoint_id, sep, path = text.partition(":")
        if not sep or not endpoint_id or not path:
            raise GlobusApiError(f"'{text}' is not ENDPOINT_ID:PATH")
        return cls(endpoint_id, path)


def submit(
    session: GlobusSession,
    source: Place,
    destination: Place,
    recursive: bool,
    label: str,
    sync_level: str | None = None,
    verify_checksum: bool = True,
) -> str:
    """Submit one transfer (checksums verified unless told otherwise); the task id.

    The submission id makes the POST idempotent, so the SDK's retries cannot create the
    task twice.
    """
    import globus_sdk
    from globus_sdk import MISSING

    try:
        tc = session.transfer()
        data = globus_sdk.TransferData(
            source.endpoint_id,
            destination.endpoint_id,
            label=label,
            verify_checksum=verify_checksum,
            sync_level=sync_level or MISSING,  # type: ignore[arg-type]
            submission_id=tc.get_submission_id()["value"],
        )
        data.add_item(source.path, destination.path, recursive=recursive)
        return str(tc.submit_transfer(data)["task_id"])
    except Exception as exc:
        raise GlobusApiError(f"transfer submission failed: {describe(exc)}") from None


def follow(
    session: GlobusSession, task_id: str, out: TextIO = sys.stderr, poll: float = 2.0
) -> str:
    """Show progress until the task ends; its final status (``SUCCEEDED`` or ``FAILED``)."""
    tc = session.transfer()
    start = time.monotonic()
    while True:
        try:
            task = tc.get_task(task_id)
        except Exception as exc:
            raise GlobusApiError(f"task {task_id}: {describe(exc)}") from None
        out.write("\r" + progress_line(task.data, time.monotonic() - start))
        out.flush()
        if task["status"] in ("SUCCEEDED", "FAILED"):
            out.write("\n")
            if task["status"] == "FAILED":
                raise GlobusApiError(f"task {task_id} FAILED: {failure_reason(tc, task.data)}")
            return str(task["status"])
        time.sleep(poll)


def progress_line(task: dict[str, Any], elapsed: float, width: int = 24) -> str:
    files, done = int(task.get("files") or 0), int(task.get("files_transferred") or 0)
    moved = int(task.get("bytes_transferred") or 0)
    rate = moved / elapsed if elapsed > 0 else 0.0
    filled = int(width * done / files) if files else 0
    bar = "#" * filled + "-" * (width - filled)
    status = task.get("nice_status") or task.get("status")
    return (
        f"[{bar}] {done}/{files} files  {human_size(moved)}  {human_size(rate)}/s  {status}".ljust(
            78
        )
    )


def failure_reason(tc: globus_sdk.TransferClient, task: dict[str, Any]) -> str:
    fatal = task.get("fatal_error") or {}
    if fatal:
        return f"{fatal.get('code')}: {fatal.get('description')}"
    try:
        for event in tc.task_event_list(task["task_id"], limit=10):
            if event.get("is_error"):
                return f"{event.get('code')}: {event.get('description')}"
    except Exception:
        pass
    return str(task.get("nice_status_short_description") or task.get("nice_status") or "?")


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
