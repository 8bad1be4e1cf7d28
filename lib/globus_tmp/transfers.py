"""Transfer tasks through the user's Globus session: find, submit, follow.

Runs as the user (the CLI, or a child of the epilog dropped to the user), with the
user's own tokens: tasks are visible to their owner only. Facts: docs/GCP.md#transfer-api.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .config import Config
from .globusapi import GlobusApiError, GlobusSession
from .progress import human_size as human_size  # the CLI's stage-status uses it

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
        import globus_sdk

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
        except globus_sdk.GlobusAPIError as exc:
            if exc.http_status == 429:
                raise RateLimited(time.time() + retry_after(exc)) from None
            raise GlobusApiError.wrap("task_list", exc) from None
        except Exception as exc:
            raise GlobusApiError.wrap("task_list", exc) from None

    try:
        shared = TaskListCache(user_dir, max_age) if max_age > 0 else None
        tasks = shared.live_tasks(fetch, wait) if shared else fetch()
    except RateLimited as exc:
        raise GlobusApiError(
            "task_list: Globus is rate-limiting your requests (429); not asked again "
            f"before {time.strftime('%H:%M:%S', time.localtime(exc.until))}",
            http_status=429,
        ) from None
    return [t[0] for t in tasks if endpoint_id in (t[1], t[2])]


def retry_after(exc: globus_sdk.GlobusAPIError, default: float = 30.0) -> float:
    """Seconds a 429 answer asks to wait (``Retry-After``), else ``default``."""
    value = str(exc.headers.get("Retry-After", "")).strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        return default


def endpoint_connected(cfg: Config, user_dir: Path, endpoint_id: str) -> bool | None:
    """Whether Globus sees the endpoint's GCP connected (``gcp_connected``); None if it
    cannot be asked (not logged in, unreachable, no such field)."""
    try:
        tc = GlobusSession(cfg, user_dir, interactive=False).transfer(max_retries=1)
        return endpoint_seen(tc, endpoint_id)
    except Exception:
        return None


def endpoint_seen(tc: globus_sdk.TransferClient, endpoint_id: str) -> bool | None:
    """``gcp_connected`` of one endpoint (None when Globus does not say); an endpoint
    that Globus does not know (deleted, wrong id) raises :class:`GlobusApiError` with
    ``code == "EndpointNotFound"``, so ``list`` can tell it from "not connected"."""
    try:
        value = tc.get_endpoint(endpoint_id).get("gcp_connected")
    except Exception as exc:
        raise GlobusApiError.wrap(f"endpoint {endpoint_id}", exc) from None
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
        raise session.refused("transfer submission failed", exc) from None


def follow(
    session: GlobusSession,
    task_id: str,
    out: TextIO = sys.stderr,
    poll: float = 2.0,
    every: float = 30.0,
) -> str:
    """Show progress until the task ends; its final status (``SUCCEEDED``; ``FAILED``
    raises). On a terminal a live bar; in a file (a batch job's output) a plain line per
    state change and at most one per ``every`` seconds besides."""
    from .progress import activity_url, display_for

    tc = session.transfer()
    display = display_for(out, task_id, every)
    try:
        while True:
            try:
                task = tc.get_task(task_id).data
            except Exception as exc:
                raise session.refused(
                    f"task {task_id} (it goes on in Globus: {activity_url(task_id)})", exc
                ) from None
            display.update(task)
            if task["status"] in ("SUCCEEDED", "FAILED"):
                break
            time.sleep(poll)
    finally:
        display.close()
    if task["status"] == "FAILED":
        raise GlobusApiError(
            f"task {task_id} FAILED: {failure_reason(tc, task)} (details: {activity_url(task_id)})"
        )
    return str(task["status"])


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
