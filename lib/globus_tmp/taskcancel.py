"""Cancelling the tasks a drain gave up on, as the user: Globus's answer, the records.

A task is bound to the pool entry's endpoint, not to the node: once the drain stops GCP
at ``linger_max``, Globus resumes a live task through whichever node runs the entry
next, from that node's ``/tmp`` (other files, or none, under the same names). So before
GCP stops, the drain cancels the tasks it knows live (:mod:`globus_tmp.giveup` decides;
this module runs in the step as the user, with the user's tokens: only the owner can
cancel a task) and writes what happened into the user's stage-out records, which
``stage-status`` shows.

Globus's answers to ``POST /task/<id>/cancel`` (a ``result`` document, HTTP 200):
``Canceled`` (done), ``TaskComplete`` (it had ended before: fine), anything else (such
as ``CancelAccepted``, a cancel not finished yet) leaves the task possibly live; an
unknown task is 404 ``TaskNotFound`` (nothing of the user's runs under that id).
Facts: docs/GCP.md#transfer-api.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .stageout import SUBMITTED, StageOutStore, outcome_of

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from typing import Any

CANCELED, ENDED, PENDING = "canceled", "ended", "pending"
OUTCOMES = (CANCELED, ENDED, PENDING)
HOLD_MAX = 24 * 3600.0
"""How long a node keeps an entry for tasks it could not cancel: Globus's default task
deadline (24 h after submission), by which a task submitted before the drain gave up
has ended, cancelled or not. A task given a later deadline may outlive the hold."""
CANCEL_BUDGET = 20.0
"""The whole cancel step at a give-up or a retry (every task, and the records)."""
MARK_TIMEOUT = 10.0
"""The lease mark that keeps the entry from other nodes (a file in the user's dir)."""
GIVE_UP_BUDGET = CANCEL_BUDGET + MARK_TIMEOUT + 10.0
"""What a give-up adds to a drain past ``linger_max``, at most (the drain's backstop
and reconcile's "hung" allow for it): see :func:`give_up_budget`."""
_MIN_CALL = 2.0  # a cancel that cannot get this much time is left for the retry


@dataclass(frozen=True)
class GaveUp:
    """Why this node stops GCP under tasks it must cancel first, and what the records
    say: a drain that reached ``linger_max`` (``cause`` empty), or a GCP its watcher
    stops because it never connected (``cause`` says so: tasks submitted meanwhile wait
    in Globus for the entry, and would run from the next node that starts it)."""

    node: str
    entry: str
    linger_max: float
    since: float
    until: float
    """When the node stops keeping the entry for tasks it could not cancel."""
    cause: str = ""

    def what(self) -> str:
        """What gave up, for the log lines and the records."""
        if self.cause:
            return f"globus-tmp on {self.node} stopped a GCP that {self.cause}"
        return f"the drain on {self.node} gave up after linger_max={self.linger_max:g} s"

    def cancelled(self, task_id: str, retried: bool) -> str:
        """The error of a stage-out record whose task globus-tmp cancelled."""
        from .progress import activity_url

        late = f" (cancelled at {_clock(time.time())}, when Globus could be asked)"
        if self.cause:
            return (
                f"cancelled by globus-tmp: {self.what()}{late if retried else ''}; "
                "stage out again from a job whose endpoint connects (globus-tmp-endpoint "
                "--wait), or ask your admin to look at the GCP log"
            )
        return (
            f"cancelled by globus-tmp: {self.what()} with the task still live"
            f"{late if retried else ''}; "
            "raise linger_max in globus-tmp.conf (ask your admin) or find why it stalled "
            f"({activity_url(task_id)}) and stage out again while a job holds the node"
        )

    def pending(self, why: str) -> str:
        """The note of a stage-out record whose task could not be cancelled yet."""
        return (
            f"{self.what()} at {_clock(self.since)} and could not cancel the task yet "
            f"({why}); globus-tmp retries, and keeps endpoint {self.entry} from other nodes "
            f"until then (at most until {_clock(self.until)}: a task resumed elsewhere reads "
            "that node's /tmp)"
        )


def give_up_budget(cfg: Config) -> float:
    """:data:`GIVE_UP_BUDGET` where a drain can know live tasks (the site set
    ``globus_client_id``); 0 without the Transfer API, which shows no task."""
    return GIVE_UP_BUDGET if cfg.globus_client_id else 0.0


def cancel_and_record(
    session_for: Any,
    user_dir: Path,
    cluster: str,
    task_ids: list[str],
    gave_up: GaveUp,
    retried: bool,
    budget: float,
) -> list[dict[str, Any]]:
    """Cancel each task within ``budget`` seconds; one answer per task (``task_id``,
    ``outcome``, ``detail``, and ``stage_out`` when it is one of this node's stage-outs)
    after the records of this node's stage-outs among them say what happened."""
    deadline = time.monotonic() + budget
    answers = {t: (PENDING, "not asked: the cancel step ran out of time") for t in task_ids}
    try:
        tc = session_for().transfer(max_retries=0)  # the retry is the repair's, later
    except Exception as exc:
        from .globusapi import describe

        tc, unusable = None, describe(exc)
        answers = {t: (PENDING, unusable) for t in task_ids}
    for task_id in task_ids if tc is not None else ():
        left = deadline - time.monotonic()
        if left < _MIN_CALL:
            break
        with tc.transport.tune(http_timeout=min(left - 1.0, 10.0)):
            answers[task_id] = cancel_one(tc, task_id)
    records = {
        r.task_id: r
        for r in StageOutStore(user_dir).records(cluster, None, gave_up.node)
        if r.state == SUBMITTED and r.task_id in answers
    }
    out: list[dict[str, Any]] = []
    for task_id, (outcome, detail) in answers.items():
        record = records.get(task_id)
        if record is not None and outcome != ENDED:  # an ended task's outcome is settled
            if outcome == CANCELED:
                record.fail(gave_up.cancelled(task_id, retried))
                record.note = None
            else:
                record.note = gave_up.pending(detail)
            StageOutStore(user_dir).save(record)
        stage_out = outcome_of(record) if record is not None else None
        out.append(
            {"task_id": task_id, "outcome": outcome, "detail": detail, "stage_out": stage_out}
        )
    return out


def cancel_one(tc: Any, task_id: str) -> tuple[str, str]:
    """Globus's answer to cancelling ``task_id``: an outcome and one line about it."""
    import globus_sdk

    from .globusapi import describe, error_code

    try:
        code = tc.cancel_task(task_id).get("code")
    except globus_sdk.GlobusAPIError as exc:
        if exc.http_status == 404 and error_code(exc) == "TaskNotFound":
            return ENDED, "Globus knows no such task of yours (TaskNotFound)"
        return PENDING, describe(exc)
    except Exception as exc:
        return PENDING, describe(exc)
    if code == "Canceled":
        return CANCELED, "cancelled (Canceled)"
    if code == "TaskComplete":
        return ENDED, "it had ended before the cancel (TaskComplete)"
    return PENDING, f"Globus took the cancel but has not finished it ({code})"


def _clock(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))
