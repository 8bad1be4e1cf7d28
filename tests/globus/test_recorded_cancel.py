"""The give-up's cancel as the user (taskcancel.cancel_and_record) against Globus's recorded
answers, and what ``stage-status`` then shows (issue 18)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import requests
import responses
from globus_sdk.testing import load_response
from globus_tmp.cli.stage import status_text
from globus_tmp.globusapi import GlobusSession
from globus_tmp.stageout import FAILED, SUBMITTED, StageOut, StageOutStore, refresh
from globus_tmp.taskcancel import CANCELED, ENDED, PENDING, GaveUp, cancel_and_record

from globus.globus_recorded import recorded, recorded_doc

TRANSFER = "https://transfer.api.globus.org/v0.10"
DEST = "5a8d3a0c-1f7e-4d0e-8c52-0b1b2f0f9a11"
GAVE_UP = GaveUp("n1", "ep1", 7200, time.time(), time.time() + 86400)


def _submitted(user_dir: Path, task_id: str, seq: int = 0) -> StageOutStore:
    store = StageOutStore(user_dir)
    marks = user_dir / "marks"  # the node's declared/<user> stands beside it here
    marks.mkdir(mode=0o700, exist_ok=True)
    record = store.declare(
        StageOut(
            cluster="c", job_id="5", node="n1", seq=seq, source=f"/tmp/out{seq}",
            source_path=f"/tmp/out{seq}", destination_endpoint=DEST, destination_path="/x/",
            label="globus-tmp job 5",
        ),
        marks,
    )  # fmt: skip
    record.state, record.task_id = SUBMITTED, task_id
    store.save(record)
    return store


def _cancel_answer(task_id: str, code: str, message: str) -> None:
    """The recorded ``result`` of a cancel, with another of Transfer's result codes (the
    recordings have ``Canceled`` only; the API emulator answers ``TaskComplete`` so)."""
    doc = recorded_doc("transfer.cancel_task")
    responses.add("POST", f"{TRANSFER}/task/{task_id}/cancel", json={
        **doc, "code": code, "message": message, "resource": f"/task/{task_id}/cancel",
    })  # fmt: skip


def test_cancelled_ended_and_unreachable_tasks_and_their_records(
    session: GlobusSession, user_dir: Path
) -> None:
    canceled = load_response("transfer.cancel_task").metadata["task_id"]
    ended, unknown, down = (str(uuid.uuid4()) for _ in range(3))
    store = _submitted(user_dir, canceled, 1)
    _submitted(user_dir, down, 2)
    _cancel_answer(ended, "TaskComplete", "The task completed before the cancel request")
    responses.add("POST", f"{TRANSFER}/task/{unknown}/cancel", status=404, json={
        "code": "TaskNotFound", "message": f"Task ID '{unknown}' not found",
        "request_id": "r", "resource": f"/v0.10/task/{unknown}/cancel",
    })  # fmt: skip
    rec = recorded("timer.get_job", "simple_500_error")
    responses.add("POST", f"{TRANSFER}/task/{down}/cancel", status=rec.status, json=rec.json)
    asked = [canceled, ended, unknown, down]
    answers = cancel_and_record(lambda: session, user_dir, "c", asked, GAVE_UP, False, 20)
    by_task = {a["task_id"]: a for a in answers}
    assert [a["task_id"] for a in answers] == asked
    assert by_task[canceled]["outcome"] == CANCELED
    assert by_task[ended]["outcome"] == ENDED and "TaskComplete" in by_task[ended]["detail"]
    assert by_task[unknown]["outcome"] == ENDED and "TaskNotFound" in by_task[unknown]["detail"]
    assert by_task[down]["outcome"] == PENDING
    assert by_task[down]["detail"].startswith("Globus is unavailable or failed (500")
    assert by_task[canceled]["stage_out"]["state"] == FAILED
    assert by_task[ended]["stage_out"] is None, "not one of this node's stage-outs"

    cancelled, waiting = store.records()
    assert cancelled.state == FAILED and cancelled.error is not None
    assert cancelled.error.startswith(
        "cancelled by globus-tmp: the drain on n1 gave up after linger_max=7200 s with the "
        "task still live; raise linger_max in globus-tmp.conf (ask your admin)"
    )
    assert f"https://app.globus.org/activity/{canceled}" in cancelled.error
    assert waiting.state == SUBMITTED and waiting.note is not None
    assert "could not cancel the task yet (Globus is unavailable or failed (500" in waiting.note
    assert "keeps endpoint ep1 from other nodes until then" in waiting.note

    task = recorded_doc("transfer.task_list")["DATA"][0]
    responses.add(
        "GET", f"{TRANSFER}/task/{down}", json={**task, "task_id": down, "status": "ACTIVE"}
    )
    refresh(lambda: session, store, store.records())  # what stage-status does first
    rows = [vars(r) for r in store.records()]
    text = status_text(rows, "job 5", str(store.root))
    assert "cancelled by globus-tmp: the drain on n1 gave up" in text
    assert "could not cancel the task yet" in text, "the note survives Globus's answer"
    assert store.records()[1].state == SUBMITTED


def test_the_retry_says_when_it_got_through(session: GlobusSession, user_dir: Path) -> None:
    canceled = load_response("transfer.cancel_task").metadata["task_id"]
    store = _submitted(user_dir, canceled)
    (answer,) = cancel_and_record(lambda: session, user_dir, "c", [canceled], GAVE_UP, True, 20)
    assert answer["outcome"] == CANCELED
    (record,) = store.records()
    assert record.note is None and record.error is not None
    assert "with the task still live (cancelled at " in record.error


def test_without_network_or_time_nothing_is_taken_as_cancelled(
    session: GlobusSession, user_dir: Path
) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    refused = requests.ConnectionError("Connection refused")
    responses.add("POST", f"{TRANSFER}/task/{first}/cancel", body=refused)
    answers = cancel_and_record(lambda: session, user_dir, "c", [first], GAVE_UP, False, 20)
    assert answers[0]["outcome"] == PENDING and "cannot reach Globus" in answers[0]["detail"]
    answers = cancel_and_record(lambda: session, user_dir, "c", [second], GAVE_UP, False, 1)
    assert answers[0] == {
        "task_id": second, "outcome": PENDING, "stage_out": None,
        "detail": "not asked: the cancel step ran out of time",
    }  # fmt: skip
    assert len(responses.calls) == 1
